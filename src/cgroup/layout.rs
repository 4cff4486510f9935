//! Where the caller's cgroups are on disk: `/proc/self/cgroup` names them per hierarchy (relative to the
//! hierarchy's root, as the caller's cgroup namespace sees it), `/proc/self/mountinfo` says where each
//! hierarchy is mounted and which of its directories the mount shows.

use std::path::{Path, PathBuf};

/// cgroup v1 (one hierarchy per controller or group of controllers) or v2 (the one unified hierarchy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A hierarchy the caller is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: Version,
    /// v1: the controllers bound to it. v2: empty (its `cgroup.controllers` files say).
    pub controllers: Vec<String>,
    /// The caller's cgroup there, as a directory.
    pub dir: PathBuf,
}

/// One mount of a cgroup filesystem.
struct Mount {
    version: Version,
    /// The hierarchy's directory the mount shows (`/` for the whole of it).
    root: String,
    point: PathBuf,
    /// v1: the mount's options, its controllers among them.
    options: Vec<String>,
}

/// `\040` and the like, as mountinfo escapes spaces, tabs, newlines and backslashes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let Some(digits) = octal {
            out.push(digits.iter().fold(0u8, |n, d| n.wrapping_mul(8).wrapping_add(d - b'0')));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mut after = after.split(' ');
            let version = match after.next()? {
                "cgroup" => Version::V1,
                "cgroup2" => Version::V2,
                _ => return None,
            };
            let options = after.nth(1).unwrap_or_default().split(',').map(str::to_owned).collect();
            Some(Mount {
                version,
                root: unescape(fields.get(3)?),
                point: PathBuf::from(unescape(fields.get(4)?)),
                options,
            })
        })
        .collect()
}

/// `path` (a cgroup's path in its hierarchy) as a directory under a mount of the hierarchy that shows it.
fn dir_of(path: &str, version: Version, controllers: &[String], mounts: &[Mount]) -> Option<PathBuf> {
    mounts
        .iter()
        .filter(|m| m.version == version && controllers.iter().all(|c| m.options.contains(c)))
        .find_map(|m| Some(m.point.join(Path::new(path).strip_prefix(&m.root).ok()?)))
}

/// The hierarchies the caller is in that are mounted where it can see them, from the texts of
/// `/proc/self/cgroup` and `/proc/self/mountinfo`. Named v1 hierarchies (`name=systemd`) have no
/// controllers and are left out.
#[must_use]
pub fn hierarchies(self_cgroup: &str, mountinfo: &str) -> Vec<Hierarchy> {
    let mounts = mounts(mountinfo);
    self_cgroup
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, list, path) = (parts.next()?, parts.next()?, parts.next()?);
            let version = if id == "0" && list.is_empty() { Version::V2 } else { Version::V1 };
            let controllers: Vec<String> =
                list.split(',').filter(|c| !c.is_empty() && !c.starts_with("name=")).map(str::to_owned).collect();
            if version == Version::V1 && controllers.is_empty() {
                return None;
            }
            let dir = dir_of(path, version, &controllers, &mounts)?;
            Some(Hierarchy { version, controllers, dir })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's layout: v1 controllers, an empty cgroup2 at `unified`, memory in a nested group.
    const HYBRID_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/ef8b\n2:cpuacct:/\n1:cpu:/\n0::/\n";
    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn a_hybrid_layout() {
        let found = hierarchies(HYBRID_CGROUP, HYBRID_MOUNTINFO);
        let dirs: Vec<(&Path, Version)> = found.iter().map(|h| (h.dir.as_path(), h.version)).collect();
        assert_eq!(
            dirs,
            [
                (Path::new("/sys/fs/cgroup/pids"), Version::V1),
                (Path::new("/sys/fs/cgroup/memory/process_api/ef8b"), Version::V1),
                (Path::new("/sys/fs/cgroup/cpuacct"), Version::V1),
                (Path::new("/sys/fs/cgroup/cpu"), Version::V1),
                (Path::new("/sys/fs/cgroup/unified"), Version::V2),
            ]
        );
        assert_eq!(found[1].controllers, ["memory"]);
    }

    #[test]
    fn v2_only_with_comounted_and_escaped_paths() {
        let mountinfo = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let found = hierarchies("0::/user.slice/user-1000.slice/app.scope\n", mountinfo);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].dir, Path::new("/sys/fs/cgroup/user.slice/user-1000.slice/app.scope"));

        let v1 = "50 23 0:40 / /cg/cpu\\040acct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let found = hierarchies("3:cpu,cpuacct:/a\n", v1);
        assert_eq!(found[0].dir, Path::new("/cg/cpu acct/a"));
        assert_eq!(found[0].controllers, ["cpu", "cpuacct"]);
    }

    #[test]
    fn a_mount_of_part_of_the_hierarchy() {
        // A container's view: the hierarchy's /docker/abc is mounted on /sys/fs/cgroup.
        let mountinfo = "29 23 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        let found = hierarchies("0::/docker/abc/sub\n", mountinfo);
        assert_eq!(found[0].dir, Path::new("/sys/fs/cgroup/sub"));
        // A cgroup outside what the mount shows is not reachable.
        assert!(hierarchies("0::/other\n", mountinfo).is_empty());
    }
}
