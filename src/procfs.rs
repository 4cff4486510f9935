//! Reading namespaces and PIDs from `/proc`: both views of a process, the host's and the box's.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;

use crate::namespace::Namespace;

/// Every name the kernel shows under `/proc/PID/ns`, sorted: the kinds and their `*_for_children` links.
fn proc_ns_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = Namespace::ALL.iter().map(|ns| ns.proc_name()).collect();
    names.extend(Namespace::ALL.iter().filter_map(|ns| ns.for_children_name()));
    names.sort_unstable();
    names
}

/// `/proc/PID` or `/proc/self`.
fn proc_dir(pid: Option<i32>) -> String {
    pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"))
}

/// Namespace kind → inode for the kinds this kernel has, sorted by kind. `stat` (not `readlink`) gives
/// the inode even for kinds whose link text differs from their name (`pid_for_children` → `pid:[...]`).
pub fn namespaces(pid: Option<i32>) -> io::Result<Vec<(&'static str, u64)>> {
    let dir = proc_dir(pid);
    // Fail as the process does (ESRCH-like ENOENT, EACCES) rather than returning an empty map.
    fs::metadata(&dir)?;
    let mut out = Vec::new();
    for kind in proc_ns_names() {
        match fs::metadata(format!("{dir}/ns/{kind}")) {
            Ok(meta) => out.push((kind, meta.ino())),
            // A kind the kernel lacks, or a `*_for_children` link of a zombie.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if out.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(out)
}

/// The fields of `/proc/PID/status` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    /// The one-letter state (`Z` for a zombie).
    pub state: char,
    pub ppid: i32,
    /// PIDs from the outermost namespace (ours, if procfs is ours) to the process's own.
    pub nspid: Vec<i32>,
}

pub fn parse_status(text: &str) -> Option<Status> {
    let mut name = None;
    let mut state = None;
    let mut ppid = None;
    let mut nspid = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Name" => name = Some(value.to_owned()),
            "State" => state = value.chars().next(),
            "PPid" => ppid = value.parse().ok(),
            "NSpid" => {
                nspid = value.split_whitespace().map(str::parse).collect::<Result<Vec<i32>, _>>().ok();
            }
            _ => {}
        }
    }
    Some(Status { name: name?, state: state?, ppid: ppid?, nspid: nspid? })
}

pub fn status(pid: i32) -> io::Result<Status> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/status"))
}

/// The command line as `ps -ef` shows it: arguments joined by spaces, `[name]` when empty (kernel
/// threads, zombies).
#[must_use]
pub fn command(pid: i32, name: &str) -> String {
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(raw) if !raw.is_empty() => {
            // Trailing NULs: a process that shortened its title in place (nsbox-init does).
            let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            String::from_utf8_lossy(&raw[..end]).replace('\0', " ")
        }
        _ => format!("[{name}]"),
    }
}

/// [`command`], waiting (briefly, up to `deadline`) for a process in the middle of `execve` to have one:
/// the kernel shows its new image's arguments only once the program is loaded, a little after a spawn
/// has returned. Zombies (and kernel threads) have none for good.
fn settled_command(pid: i32, st: &Status, deadline: std::time::Instant) -> String {
    loop {
        let cmd = command(pid, &st.name);
        if !cmd.starts_with('[') || st.state == 'Z' || std::time::Instant::now() >= deadline {
            return cmd;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// One process of a box, seen from both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub host_pid: i32,
    pub host_ppid: i32,
    /// As seen inside the box's PID namespace.
    pub pid: i32,
    /// As seen inside; 0 when the parent is outside the box (as for PID 1).
    pub ppid: i32,
    pub command: String,
}

/// Every process whose PID namespace is that of `pid` (the box's first process), sorted by inside PID.
/// A box without a PID namespace of its own has `pid` and its descendants instead.
pub fn processes(pid: i32) -> io::Result<Vec<ProcessInfo>> {
    let ns = fs::metadata(format!("/proc/{pid}/ns/pid"))?.ino();
    let shared = fs::metadata("/proc/self/ns/pid")?.ino() == ns;
    // The box's namespace is this deep in the NSpid chain of every process in it.
    let level = status(pid)?.nspid.len() - 1;
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Some(host_pid) = entry?.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        // Processes come and go while we look: skip those that vanish.
        let Ok(meta) = fs::metadata(format!("/proc/{host_pid}/ns/pid")) else {
            continue;
        };
        if meta.ino() == ns {
            pids.push(host_pid);
        }
    }
    if shared {
        pids = descendants(pid, &pids);
    }
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(100);
    for host_pid in pids {
        let Ok(st) = status(host_pid) else { continue };
        let Some(&inner) = st.nspid.get(level) else { continue };
        let inner_ppid = if st.ppid == 0 {
            0
        } else {
            match status(st.ppid) {
                Ok(parent) if fs::metadata(format!("/proc/{}/ns/pid", st.ppid)).is_ok_and(|m| m.ino() == ns) => {
                    parent.nspid.get(level).copied().unwrap_or(0)
                }
                _ => 0,
            }
        };
        out.push(ProcessInfo {
            host_pid,
            host_ppid: st.ppid,
            pid: inner,
            ppid: inner_ppid,
            command: settled_command(host_pid, &st, deadline),
        });
    }
    out.sort_by_key(|p| p.pid);
    Ok(out)
}

/// `root` and every process below it among `candidates`.
fn descendants(root: i32, candidates: &[i32]) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = candidates.iter().filter_map(|&p| status(p).ok().map(|s| (p, s.ppid))).collect();
    let mut found = vec![root];
    let mut i = 0;
    while let Some(&parent) = found.get(i) {
        found.extend(parents.iter().filter(|&&(_, pp)| pp == parent).map(|&(p, _)| p));
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_what_the_kernel_shows() {
        let mut shown: Vec<String> =
            fs::read_dir("/proc/self/ns").unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        shown.sort_unstable();
        // This machine's kernel has every kind (KERNEL-FACTS.md); an older one shows a subset.
        assert_eq!(shown, proc_ns_names());
    }

    #[test]
    fn parses_the_fields_of_status() {
        let text = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nPPid:\t15805\nNSpid:\t17301\t2\n";
        let st = parse_status(text).unwrap();
        assert_eq!(st, Status { name: "sleep".into(), state: 'S', ppid: 15805, nspid: vec![17301, 2] });
        assert!(parse_status("Name:\tx\n").is_none());
    }

    #[test]
    fn this_process_has_every_kind_and_an_nspid() {
        let ns = namespaces(None).unwrap();
        assert!(ns.iter().any(|(k, _)| *k == "pid"));
        let me = std::process::id() as i32;
        assert_eq!(status(me).unwrap().nspid.first(), Some(&me));
    }
}
