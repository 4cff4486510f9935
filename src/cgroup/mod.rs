//! A cgroup per box, for `memory_limit`, `pids_limit` and `cpu_limit`: made beneath the caller's own cgroup
//! before the clone, entered by the child as its first step, emptied and removed when the box is reaped.
//!
//! - **Where.** In each hierarchy that has a controller the limits need (cgroup v1: one per controller, or
//!   per co-mounted group; v2: the unified one), beneath the caller's cgroup there, as `/proc/self/cgroup`
//!   and `/proc/self/mountinfo` name it: never elsewhere in the host's tree. A v1 `cpuacct` hierarchy is
//!   joined too for the CPU time of [`Usage`] (v2 counts it in every cgroup).
//! - **Names.** `nsbox-<caller's PID>-<n>`. A caller killed with SIGKILL cannot remove its cgroups: each
//!   new box first sweeps away the empty `nsbox-<PID>-*` directories of callers that are gone.
//! - **Entering.** The parent opens each box directory's `cgroup.procs`; the child's first step writes
//!   `0` (itself) to each, before any second clone or exec, so every process of the box is inside. The
//!   kernel checks the opener's credentials (and, on v2, its cgroup namespace), so this holds even after
//!   the clone made a user namespace. Such a move takes the kernel's cgroup-wide lock for writing, which
//!   waits for an RCU grace period unless another move just did (about 10 ms on the 2-CPU test machine, for
//!   boxes started a while apart). So on cgroup v2 the exec path's clone is `clone3` with
//!   `CLONE_INTO_CGROUP` (`x86_64`; [`crate::child::sys::clone_into_cgroup`]), which places the child at fork
//!   without that wait, falling back to the write where the kernel lacks it. `nsbox.call` forks with the C
//!   library's `fork()` (its locks and handlers need it), and writes.
//! - **cgroup v2's rule of no internal processes.** A cgroup gives controllers to its children only while
//!   no process is in it. When enabling them in the caller's cgroup fails so, and the caller is alone in
//!   it (as under `systemd-run --scope -p Delegate=yes`), the caller moves itself to a leaf of its own,
//!   `nsbox-<PID>-caller`, as systemd's delegation rules ask of a delegated manager (and nsjail does); the
//!   boxes stay beneath the caller's original cgroup. Otherwise the error says what to do.
//! - **Removal.** Whatever is left in the cgroup is killed (`cgroup.kill` on v2; on v1 each PID in
//!   `cgroup.procs`, checked through a pidfd, until none is left): a box without a PID namespace may leave
//!   orphans. The final [`Usage`] is read, then the directories go.

mod host;
mod layout;
mod limits;
pub(crate) mod size;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libc::pid_t;

pub use host::{Host, RealHost};
use layout::Version;
pub use limits::{Limits, SizeArg};

use crate::errors::{quoted, Error, Hint, Step};

/// Names of nsbox's cgroups start so.
const PREFIX: &str = "nsbox-";
/// The leaf a caller moves itself to on cgroup v2 (`nsbox-<PID>-caller`).
const CALLER_LEAF: &str = "caller";
/// How long removal waits for the processes left in a cgroup to die.
const REMOVAL_DEADLINE: Duration = Duration::from_secs(10);

/// The last number of this process's box cgroups.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The controllers each limit needs, with the option it serves (for messages).
fn controllers(limits: &Limits) -> Vec<(&'static str, &'static str)> {
    [
        ("memory", "memory_limit", limits.memory.is_some()),
        ("pids", "pids_limit", limits.pids.is_some()),
        ("cpu", "cpu_limit", limits.cpu_quota_us.is_some()),
    ]
    .into_iter()
    .filter_map(|(controller, option, given)| given.then_some((controller, option)))
    .collect()
}

/// What a box used, read from its cgroup's counters; `None` where no counter was kept.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// The most memory the box used at once, in bytes (with `memory_limit`).
    pub memory_peak: Option<u64>,
    /// CPU time, user and system, in seconds.
    pub cpu_time: Option<f64>,
    /// The most processes (and threads) in the box at once, or the current count where the kernel keeps
    /// no peak (with `pids_limit`).
    pub processes: Option<u64>,
    /// How many processes the memory limit's OOM killer killed (with `memory_limit`).
    pub oom_kills: Option<u64>,
}

/// A directory of the box: its cgroup in one hierarchy.
#[derive(Clone, Debug)]
struct BoxDir {
    version: Version,
    path: PathBuf,
    controllers: Vec<String>,
}

/// Where the box gets a directory: beneath `base`, the caller's cgroup in a hierarchy.
#[derive(Debug)]
struct Place {
    version: Version,
    base: PathBuf,
    /// `(controller, option)`; the option is empty for a controller joined for its counters.
    controllers: Vec<(&'static str, &'static str)>,
}

/// A box's cgroup: removed (its processes killed first) by [`BoxCgroup::finish`], or when dropped.
#[derive(Debug)]
pub struct BoxCgroup<H: Host = RealHost> {
    host: H,
    dirs: Vec<BoxDir>,
    /// The figures read just before removal; `Some` once finished.
    last: Option<Usage>,
    /// The process that made it ([`crate::fork_id`]): a `fork()`ed copy of it must never kill the box.
    generation: u64,
}

/// The ways into the box's cgroup, open: its `cgroup.procs` files, for the child to write `0` to first thing
/// (see [`crate::child`]), and its cgroup v2 directory, for a clone that starts the child there.
#[derive(Debug)]
pub struct Entry {
    procs: Vec<(Version, OwnedFd)>,
    v2_dir: Option<OwnedFd>,
}

impl Entry {
    /// Every `cgroup.procs` (`nsbox.call`'s fork enters them all).
    #[must_use]
    pub fn fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(|(_, fd)| fd.as_raw_fd()).collect()
    }

    /// For a clone that may start the child in the cgroup v2 directory: the `cgroup.procs` of the other
    /// hierarchies, and (the v2 directory, its `cgroup.procs` should the clone not be able to).
    #[must_use]
    pub fn split(&self) -> (Vec<RawFd>, Option<(RawFd, RawFd)>) {
        let v1 = self.procs.iter().filter(|(v, _)| *v == Version::V1).map(|(_, fd)| fd.as_raw_fd()).collect();
        let v2_procs = self.procs.iter().find(|(v, _)| *v == Version::V2).map(|(_, fd)| fd.as_raw_fd());
        let into = self.v2_dir.as_ref().map(AsRawFd::as_raw_fd).zip(v2_procs);
        (v1, into)
    }
}

fn errno_of(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(libc::EIO)
}

fn failure(errno: i32, what: String) -> Error {
    // (EROFS, a read-only cgroupfs as containers often mount it, is the mount's doing, not the caller's.)
    let hint = matches!(errno, libc::EACCES | libc::EPERM).then_some(Hint::CgroupNeedsDelegation);
    Error::os(Step::Cgroup, errno).with_what(what).with_hint(hint)
}

/// The owner of one of nsbox's cgroups, by its name (`nsbox-<PID>-<n>` or `nsbox-<PID>-caller`), and
/// whether it is a caller's leaf.
fn owner(name: &str) -> Option<(pid_t, bool)> {
    let (pid, rest) = name.strip_prefix(PREFIX)?.split_once('-')?;
    let caller = rest == CALLER_LEAF;
    if !caller && (rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some((pid.parse().ok().filter(|&p| p > 0)?, caller))
}

/// The caller's cgroup v2 directory, or its parent when the caller is in the leaf nsbox moved it (or the
/// process it was forked from) to.
fn v2_base(dir: &Path) -> PathBuf {
    let in_leaf = dir.file_name().and_then(|n| owner(&n.to_string_lossy())).is_some_and(|(_, leaf)| leaf);
    match dir.parent() {
        Some(parent) if in_leaf => parent.to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

fn add(places: &mut Vec<Place>, version: Version, base: PathBuf, controller: (&'static str, &'static str)) {
    match places.iter_mut().find(|p| p.base == base) {
        Some(place) => place.controllers.push(controller),
        None => places.push(Place { version, base, controllers: vec![controller] }),
    }
}

/// Where the box needs directories, for `limits`, from the caller's cgroups.
fn places(host: &impl Host, limits: &Limits) -> Result<Vec<Place>, Error> {
    let read = |what: &str, text: io::Result<String>| {
        text.map_err(|e| Error::os(Step::Cgroup, errno_of(&e)).with_what(format!("read {what}")))
    };
    let found = layout::hierarchies(
        &read("/proc/self/cgroup", host.self_cgroup())?,
        &read("/proc/self/mountinfo", host.mountinfo())?,
    );
    let v1_with = |controller: &str| {
        found.iter().find(|h| h.version == Version::V1 && h.controllers.iter().any(|c| c == controller))
    };
    let v2 = found.iter().find(|h| h.version == Version::V2);
    let mut places = Vec::new();
    for (controller, option) in controllers(limits) {
        if let Some(h) = v1_with(controller) {
            add(&mut places, Version::V1, h.dir.clone(), (controller, option));
            continue;
        }
        let Some(h) = v2 else {
            let what =
                format!("set {option}: no cgroup hierarchy that this process is in has the {controller} controller");
            return Err(Error::os(Step::Cgroup, libc::EOPNOTSUPP).with_what(what));
        };
        let base = v2_base(&h.dir);
        let available = host.read(&base.join("cgroup.controllers")).unwrap_or_default();
        if !available.split_whitespace().any(|c| c == controller) {
            let what = format!(
                "set {option}: the {controller} controller is not available in {}",
                quoted(base.to_string_lossy())
            );
            return Err(Error::os(Step::Cgroup, libc::EOPNOTSUPP)
                .with_what(what)
                .with_hint(Some(Hint::ControllerNotDelegated)));
        }
        add(&mut places, Version::V2, base, (controller, option));
    }
    // The CPU time of `Usage`: v2 keeps it in every cgroup, v1 in the cpuacct hierarchy.
    if let Some(h) = v1_with("cpuacct") {
        add(&mut places, Version::V1, h.dir.clone(), ("cpuacct", ""));
    }
    Ok(places)
}

/// Makes a cgroup for a box with `limits` beneath the caller's own (see the module's documentation).
pub fn create(limits: &Limits) -> Result<(BoxCgroup, Entry), Error> {
    create_on(RealHost, limits)
}

/// [`create`] on `host`.
pub fn create_on<H: Host>(host: H, limits: &Limits) -> Result<(BoxCgroup<H>, Entry), Error> {
    let places = places(&host, limits)?;
    // Dropped on an error: what was made so far is removed.
    let mut cgroup = BoxCgroup::new(host);
    // One name in every hierarchy.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
    let mut entry = Entry { procs: Vec::with_capacity(places.len()), v2_dir: None };
    for place in &places {
        entry.procs.push((place.version, cgroup.make(place, limits, n)?));
        if place.version == Version::V2 {
            let dir = cgroup.dirs.last().map(|d| d.path.clone()).unwrap_or_default();
            let opened = cgroup.host.open_dir(&dir);
            entry.v2_dir =
                Some(opened.map_err(|e| failure(errno_of(&e), format!("open {}", quoted(dir.to_string_lossy()))))?);
        }
    }
    Ok((cgroup, entry))
}

impl<H: Host> BoxCgroup<H> {
    fn new(host: H) -> BoxCgroup<H> {
        BoxCgroup { host, dirs: Vec::new(), last: None, generation: crate::fork_id::process_generation() }
    }

    /// The box's directory beneath `place`, with its limits set; its `cgroup.procs`, open.
    fn make(&mut self, place: &Place, limits: &Limits, n: u64) -> Result<OwnedFd, Error> {
        let base = &place.base;
        let shown = || quoted(base.to_string_lossy());
        // A cgroup's processes may move to a child only for who may write its cgroup.procs (v2: the common
        // ancestor's; v1: root or the owner of the processes): check it here rather than in the child.
        let allowed = self.host.may_write(base).and_then(|()| self.host.may_write(&base.join("cgroup.procs")));
        if let Err(e) = allowed {
            return Err(failure(errno_of(&e), format!("create the box's cgroup in {}", shown())));
        }
        self.sweep(base);
        if place.version == Version::V2 {
            self.enable(base, &place.controllers)?;
        }
        let me = self.host.pid();
        let mut n = n;
        let path = loop {
            let path = base.join(format!("{PREFIX}{me}-{n}"));
            match self.host.mkdir(&path) {
                Ok(()) => break path,
                // Another process with our PID (in another PID namespace) made it.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1,
                Err(e) => return Err(failure(errno_of(&e), format!("create the box's cgroup in {}", shown()))),
            }
        };
        let controllers = place.controllers.iter().map(|(c, _)| (*c).to_owned()).collect();
        self.dirs.push(BoxDir { version: place.version, path: path.clone(), controllers });
        for (file, value) in settings(place, limits) {
            let file = path.join(file);
            if let Err(e) = self.host.write(&file, &value) {
                return Err(failure(errno_of(&e), format!("write {value} to {}", quoted(file.to_string_lossy()))));
            }
        }
        // The memory limit holds for swap too: the OOM killer acts at the limit rather than the box swapping.
        if limits.memory.is_some() && place.controllers.iter().any(|(c, _)| *c == "memory") {
            match place.version {
                // Where the kernel accounts swap (a v2 file of its own).
                Version::V2 if self.host.exists(&path.join("memory.swap.max")) => {
                    let file = path.join("memory.swap.max");
                    if let Err(e) = self.host.write(&file, "0") {
                        return Err(failure(errno_of(&e), format!("write 0 to {}", quoted(file.to_string_lossy()))));
                    }
                }
                // v1: swappiness 0 keeps the group's pages off swap (best effort: it changes nothing without swap).
                Version::V1 => drop(self.host.write(&path.join("memory.swappiness"), "0")),
                Version::V2 => {}
            }
        }
        self.host
            .open_procs(&path)
            .map_err(|e| failure(errno_of(&e), format!("open {}", quoted(path.join("cgroup.procs").to_string_lossy()))))
    }

    /// Removes the empty cgroups of callers that are gone (killed before they could remove them).
    fn sweep(&self, base: &Path) {
        let me = self.host.pid();
        for name in self.host.subdirs(base).unwrap_or_default() {
            if let Some((pid, _)) = owner(&name) {
                if pid != me && !self.host.alive(pid) {
                    // EBUSY: something is still in it; it stays.
                    let _ = self.host.rmdir(&base.join(&name));
                }
            }
        }
    }

    /// cgroup v2: makes the controllers available to `base`'s children (`cgroup.subtree_control`).
    fn enable(&self, base: &Path, wanted: &[(&'static str, &'static str)]) -> Result<(), Error> {
        let control = base.join("cgroup.subtree_control");
        let enabled = self.host.read(&control).unwrap_or_default();
        let missing: Vec<&str> =
            wanted.iter().map(|(c, _)| *c).filter(|c| !enabled.split_whitespace().any(|e| e == *c)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let text = missing.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(" ");
        let what = || format!("enable the {} controllers in {}", missing.join(", "), quoted(control.to_string_lossy()));
        match self.host.write(&control, &text) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                self.leave_for_leaf(base).map_err(|others| {
                    let what = format!("{} ({others} other processes are in that cgroup)", what());
                    Error::os(Step::Cgroup, libc::EBUSY).with_what(what).with_hint(Some(Hint::CgroupHasProcesses))
                })?;
                self.host.write(&control, &text).map_err(|e| failure(errno_of(&e), what()))
            }
            Err(e) => Err(failure(errno_of(&e), what())),
        }
    }

    /// Moves this process from `base` to a leaf of its own, when it is alone there; else the number of
    /// other processes.
    fn leave_for_leaf(&self, base: &Path) -> Result<(), usize> {
        let me = self.host.pid();
        let procs = self.host.read(&base.join("cgroup.procs")).unwrap_or_default();
        let others = procs.split_whitespace().filter(|p| p.parse() != Ok(me)).count();
        if others > 0 {
            return Err(others);
        }
        let leaf = base.join(format!("{PREFIX}{me}-{CALLER_LEAF}"));
        match self.host.mkdir(&leaf) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(0),
            _ => {}
        }
        self.host.write(&leaf.join("cgroup.procs"), &me.to_string()).map_err(|_| 0)
    }

    /// The figures now, or those read before the cgroup was removed.
    #[must_use]
    pub fn usage(&self) -> Usage {
        self.last.unwrap_or_else(|| self.read_usage())
    }

    /// The `cgroup.procs` of each of the box's directories, open, for another process to enter (an exec into
    /// the box: it is limited and counted with the box).
    pub fn open_procs(&self) -> Result<Vec<OwnedFd>, Error> {
        let open = |d: &BoxDir| {
            let failed = |e: io::Error| {
                let what = format!("open {}", quoted(d.path.join("cgroup.procs").to_string_lossy()));
                failure(errno_of(&e), what)
            };
            self.host.open_procs(&d.path).map_err(failed)
        };
        self.dirs.iter().map(open).collect()
    }

    /// The box's directories (one per hierarchy).
    #[must_use]
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    // Nanoseconds of CPU time are exact in an f64 for 104 days, and are shown in seconds anyway.
    #[allow(clippy::cast_precision_loss)]
    fn read_usage(&self) -> Usage {
        let number = |path: PathBuf| self.host.read(&path).ok()?.trim().parse::<u64>().ok();
        let keyed = |path: PathBuf, key: &str| -> Option<u64> {
            let text = self.host.read(&path).ok()?;
            text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        };
        let mut usage = Usage::default();
        for dir in &self.dirs {
            let at = |file: &str| dir.path.join(file);
            for controller in &dir.controllers {
                match (dir.version, controller.as_str()) {
                    (Version::V1, "memory") => {
                        usage.memory_peak = number(at("memory.max_usage_in_bytes"));
                        usage.oom_kills = keyed(at("memory.oom_control"), "oom_kill");
                    }
                    (Version::V2, "memory") => {
                        usage.memory_peak = number(at("memory.peak"));
                        usage.oom_kills = keyed(at("memory.events"), "oom_kill");
                    }
                    (_, "pids") => usage.processes = number(at("pids.peak")).or_else(|| number(at("pids.current"))),
                    (Version::V1, "cpuacct") => usage.cpu_time = number(at("cpuacct.usage")).map(|ns| ns as f64 / 1e9),
                    _ => {}
                }
            }
            if dir.version == Version::V2 && usage.cpu_time.is_none() {
                usage.cpu_time = keyed(at("cpu.stat"), "usage_usec").map(|us| us as f64 / 1e6);
            }
        }
        usage
    }

    /// Kills what is left in the box's cgroup, keeps its final figures, and removes it. Once; later calls do
    /// nothing, and so does a `fork()`ed copy of the process that made it. Directories that cannot be removed
    /// in time are left to the next sweep.
    pub fn finish(&mut self) {
        // In a fork()ed copy of the caller (os.fork, multiprocessing) the box is the original's.
        if self.last.is_some() || self.generation != crate::fork_id::process_generation() {
            return;
        }
        let deadline = Instant::now() + REMOVAL_DEADLINE;
        for dir in &self.dirs {
            self.empty(dir.version, &dir.path, deadline);
        }
        self.last = Some(self.read_usage());
        for dir in &self.dirs {
            self.remove(&dir.path, deadline);
        }
    }

    /// Kills every process in `path` and beneath, and waits until none is left.
    fn empty(&self, version: Version, path: &Path, deadline: Instant) {
        for sub in self.host.subdirs(path).unwrap_or_default() {
            self.empty(version, &path.join(sub), deadline);
        }
        let kill = path.join("cgroup.kill");
        let killed_all = version == Version::V2 && self.host.exists(&kill) && self.host.write(&kill, "1").is_ok();
        let mut pause = Duration::from_micros(200);
        loop {
            let Ok(procs) = self.host.read(&path.join("cgroup.procs")) else { return };
            let pids: Vec<pid_t> = procs.split_whitespace().filter_map(|p| p.parse().ok()).collect();
            if pids.is_empty() || Instant::now() >= deadline {
                return;
            }
            if !killed_all {
                for pid in pids {
                    self.host.kill_member(pid, path);
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Removes `path` and the cgroups beneath it (made by nested boxes), waiting out dying processes.
    fn remove(&self, path: &Path, deadline: Instant) {
        for sub in self.host.subdirs(path).unwrap_or_default() {
            self.remove(&path.join(sub), deadline);
        }
        let mut pause = Duration::from_micros(200);
        while let Err(e) = self.host.rmdir(path) {
            if e.raw_os_error() != Some(libc::EBUSY) || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

impl<H: Host> Drop for BoxCgroup<H> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The files of a box's directory beneath `place` and what they are set to.
fn settings(place: &Place, limits: &Limits) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (controller, _) in &place.controllers {
        match (place.version, *controller, limits) {
            (Version::V1, "memory", Limits { memory: Some(bytes), .. }) => {
                out.push(("memory.limit_in_bytes", bytes.to_string()));
            }
            (Version::V2, "memory", Limits { memory: Some(bytes), .. }) => {
                out.push(("memory.max", bytes.to_string()));
            }
            (_, "pids", Limits { pids: Some(n), .. }) => out.push(("pids.max", n.to_string())),
            (Version::V1, "cpu", Limits { cpu_quota_us: Some(quota), .. }) => {
                out.push(("cpu.cfs_period_us", limits::CPU_PERIOD_US.to_string()));
                out.push(("cpu.cfs_quota_us", quota.to_string()));
            }
            (Version::V2, "cpu", Limits { cpu_quota_us: Some(quota), .. }) => {
                out.push(("cpu.max", format!("{quota} {}", limits::CPU_PERIOD_US)));
            }
            _ => {}
        }
    }
    out
}
