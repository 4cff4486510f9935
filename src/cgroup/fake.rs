//! A fake cgroup v2 filesystem in a temporary directory, for the tests: directories made here get the
//! interface files the kernel would give them, and the kernel's rules that nsbox meets are kept (controllers
//! given by the parent, no processes in a cgroup that gives controllers to its children, no removal of a
//! cgroup with processes or children). Processes are PIDs written to `cgroup.procs` files.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use libc::pid_t;

use super::host::Host;

#[derive(Debug)]
pub struct FakeHost {
    /// The cgroup2 mount point.
    pub root: PathBuf,
    pub me: pid_t,
    /// Other processes that exist.
    pub alive: HashSet<pid_t>,
    /// Directories (and files) this process may not write.
    pub denied: HashSet<PathBuf>,
    /// A file name whose writes fail with EINVAL.
    pub broken: Option<&'static str>,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

impl FakeHost {
    /// A tree whose root offers `controllers`, with this process (`me`) in the root cgroup.
    pub fn new(me: pid_t, controllers: &str) -> FakeHost {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("nsbox-fake-cgroupfs-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir(&root).unwrap();
        for (file, text) in [
            ("cgroup.controllers", controllers.to_owned()),
            ("cgroup.subtree_control", String::new()),
            ("cgroup.procs", format!("{me}\n")),
            ("cpu.stat", "usage_usec 0\n".to_owned()),
        ] {
            std::fs::write(root.join(file), text).unwrap();
        }
        FakeHost { root, me, alive: HashSet::new(), denied: HashSet::new(), broken: None }
    }

    pub fn at(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    pub fn text(&self, relative: &str) -> String {
        std::fs::read_to_string(self.at(relative)).unwrap_or_else(|e| panic!("{relative}: {e}")).trim().to_owned()
    }

    /// Makes the cgroup `relative` as the kernel would, enabling `controllers` in each parent on the way.
    pub fn cgroup(&self, relative: &str, controllers: &str) {
        let mut dir = self.root.clone();
        for part in Path::new(relative) {
            let control = dir.join("cgroup.subtree_control");
            let plus: Vec<String> = controllers.split_whitespace().map(|c| format!("+{c}")).collect();
            self.write(&control, &plus.join(" ")).unwrap();
            dir = dir.join(part);
            if !dir.exists() {
                self.mkdir(&dir).unwrap();
            }
        }
    }

    /// The PIDs in the cgroup `dir`.
    fn procs(dir: &Path) -> Vec<String> {
        words(&std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default())
    }

    fn set_procs(dir: &Path, pids: &[String]) {
        let text: String = pids.iter().flat_map(|p| [p.as_str(), "\n"]).collect();
        std::fs::write(dir.join("cgroup.procs"), text).unwrap();
    }

    /// Every cgroup directory of the tree.
    fn all_dirs(&self) -> Vec<PathBuf> {
        let mut out = vec![self.root.clone()];
        let mut i = 0;
        while let Some(dir) = out.get(i).cloned() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                if entry.path().is_dir() {
                    out.push(entry.path());
                }
            }
            i += 1;
        }
        out
    }

    fn denies(&self, path: &Path) -> bool {
        self.denied.contains(path) || path.parent().is_some_and(|p| self.denied.contains(p))
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Host for FakeHost {
    fn self_cgroup(&self) -> io::Result<String> {
        let me = self.me.to_string();
        let dir = self.all_dirs().into_iter().find(|d| Self::procs(d).contains(&me)).ok_or(errno(libc::ENOENT))?;
        let relative = dir.strip_prefix(&self.root).unwrap();
        Ok(format!("0::/{}\n", relative.display()))
    }

    fn mountinfo(&self) -> io::Result<String> {
        Ok(format!(
            "25 1 0:22 / / rw - ext4 /dev/sda1 rw\n30 25 0:26 / {} rw - cgroup2 cgroup2 rw\n",
            self.root.display()
        ))
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, text: &str) -> io::Result<()> {
        if self.denies(path) {
            return Err(errno(libc::EACCES));
        }
        if !path.is_file() {
            return Err(errno(libc::ENOENT));
        }
        let dir = path.parent().unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        if self.broken == Some(&*name) {
            return Err(errno(libc::EINVAL));
        }
        let is_root = dir == self.root;
        match &*name {
            "cgroup.subtree_control" => {
                let available = words(&std::fs::read_to_string(dir.join("cgroup.controllers"))?);
                let mut enabled = words(&std::fs::read_to_string(path)?);
                for word in text.split_whitespace() {
                    let (sign, controller) = word.split_at(1);
                    if !available.iter().any(|c| c == controller) {
                        return Err(errno(libc::ENOENT));
                    }
                    if sign == "+" && !is_root && !Self::procs(dir).is_empty() {
                        return Err(errno(libc::EBUSY)); // no internal processes
                    }
                    enabled.retain(|c| c != controller);
                    if sign == "+" {
                        enabled.push(controller.to_owned());
                    }
                }
                std::fs::write(path, enabled.join(" "))
            }
            "cgroup.procs" => {
                let pid = if text.trim() == "0" { self.me.to_string() } else { text.trim().to_owned() };
                if !is_root && !std::fs::read_to_string(dir.join("cgroup.subtree_control"))?.trim().is_empty() {
                    return Err(errno(libc::EBUSY));
                }
                for other in self.all_dirs() {
                    let mut pids = Self::procs(&other);
                    pids.retain(|p| *p != pid);
                    Self::set_procs(&other, &pids);
                }
                let mut pids = Self::procs(dir);
                pids.push(pid);
                Self::set_procs(dir, &pids);
                Ok(())
            }
            "cgroup.kill" => {
                for other in self.all_dirs().into_iter().filter(|d| d.starts_with(dir)) {
                    Self::set_procs(&other, &[]);
                }
                Ok(())
            }
            _ => std::fs::write(path, format!("{text}\n")),
        }
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        let parent = path.parent().unwrap();
        if self.denies(parent) {
            return Err(errno(libc::EACCES));
        }
        std::fs::create_dir(path)?;
        let controllers = std::fs::read_to_string(parent.join("cgroup.subtree_control"))?;
        let mut files = vec![
            ("cgroup.controllers", controllers.clone()),
            ("cgroup.subtree_control", String::new()),
            ("cgroup.procs", String::new()),
            ("cgroup.kill", String::new()),
            ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n".to_owned()),
        ];
        for controller in controllers.split_whitespace() {
            match controller {
                "memory" => files.extend([
                    ("memory.max", "max\n".to_owned()),
                    ("memory.swap.max", "max\n".to_owned()),
                    ("memory.peak", "0\n".to_owned()),
                    ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n".to_owned()),
                ]),
                "pids" => files.extend([
                    ("pids.max", "max\n".to_owned()),
                    ("pids.current", "0\n".to_owned()),
                    ("pids.peak", "0\n".to_owned()),
                ]),
                "cpu" => files.push(("cpu.max", "max 100000\n".to_owned())),
                _ => {}
            }
        }
        for (file, text) in files {
            std::fs::write(path.join(file), text)?;
        }
        Ok(())
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        if !path.is_dir() {
            return Err(errno(libc::ENOENT));
        }
        if !self.subdirs(path)?.is_empty() || !Self::procs(path).is_empty() {
            return Err(errno(libc::EBUSY));
        }
        std::fs::remove_dir_all(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn may_write(&self, path: &Path) -> io::Result<()> {
        if self.denied.contains(path) {
            Err(errno(libc::EACCES))
        } else {
            Ok(())
        }
    }

    fn subdirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.path().is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn open_procs(&self, dir: &Path) -> io::Result<std::os::fd::OwnedFd> {
        Ok(std::fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs"))?.into())
    }

    fn open_dir(&self, dir: &Path) -> io::Result<std::os::fd::OwnedFd> {
        Ok(std::fs::File::open(dir)?.into())
    }

    fn pid(&self) -> pid_t {
        self.me
    }

    fn alive(&self, pid: pid_t) -> bool {
        pid == self.me || self.alive.contains(&pid)
    }

    fn kill_member(&self, pid: pid_t, dir: &Path) {
        let mut pids = Self::procs(dir);
        pids.retain(|p| p.parse() != Ok(pid));
        Self::set_procs(dir, &pids);
    }
}

impl<T: Host> Host for &T {
    fn self_cgroup(&self) -> io::Result<String> {
        (**self).self_cgroup()
    }
    fn mountinfo(&self) -> io::Result<String> {
        (**self).mountinfo()
    }
    fn read(&self, path: &Path) -> io::Result<String> {
        (**self).read(path)
    }
    fn write(&self, path: &Path, text: &str) -> io::Result<()> {
        (**self).write(path, text)
    }
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        (**self).mkdir(path)
    }
    fn rmdir(&self, path: &Path) -> io::Result<()> {
        (**self).rmdir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        (**self).exists(path)
    }
    fn may_write(&self, path: &Path) -> io::Result<()> {
        (**self).may_write(path)
    }
    fn subdirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        (**self).subdirs(dir)
    }
    fn open_procs(&self, dir: &Path) -> io::Result<std::os::fd::OwnedFd> {
        (**self).open_procs(dir)
    }
    fn open_dir(&self, dir: &Path) -> io::Result<std::os::fd::OwnedFd> {
        (**self).open_dir(dir)
    }
    fn pid(&self) -> pid_t {
        (**self).pid()
    }
    fn alive(&self, pid: pid_t) -> bool {
        (**self).alive(pid)
    }
    fn kill_member(&self, pid: pid_t, dir: &Path) {
        (**self).kill_member(pid, dir);
    }
}
