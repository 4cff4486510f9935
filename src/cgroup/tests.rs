//! The cgroup v2 paths, against a fake cgroupfs tree ([`super::fake`]): this machine mounts the controllers
//! as v1, which the Python tests use for real.

use std::path::Path;

use super::fake::FakeHost;
use super::*;
use crate::errors::OsFailure;

const ME: pid_t = 4000;
const ALL: &str = "cpu memory pids";

fn all_limits() -> Limits {
    Limits { memory: Some(64 << 20), pids: Some(64), cpu_quota_us: Some(25_000) }
}

fn pids_only() -> Limits {
    Limits { pids: Some(16), ..Limits::default() }
}

/// The subdirectories of `relative` in the fake tree, sorted.
fn subdirs(host: &FakeHost, relative: &str) -> Vec<String> {
    let mut names = host.subdirs(&host.at(relative)).unwrap();
    names.sort();
    names
}

fn os_failure(err: Error) -> OsFailure {
    match err {
        Error::Os(failure) => failure,
        other => panic!("expected an OS failure, got {other:?}"),
    }
}

#[test]
fn limits_beneath_the_root_cgroup() {
    let host = FakeHost::new(ME, ALL);
    let (mut cgroup, entry) = create_on(&host, &all_limits()).unwrap();
    assert_eq!(entry.fds().len(), 1);
    let paths = cgroup.paths();
    assert_eq!(paths.len(), 1);
    let name = paths[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("nsbox-{ME}-")), "{name}");
    // Only the controllers the limits need are given to the root's children.
    assert_eq!(host.text("cgroup.subtree_control"), "memory pids cpu");
    assert_eq!(host.text(&format!("{name}/memory.max")), "67108864");
    assert_eq!(host.text(&format!("{name}/memory.swap.max")), "0");
    assert_eq!(host.text(&format!("{name}/pids.max")), "64");
    assert_eq!(host.text(&format!("{name}/cpu.max")), "25000 100000");

    // The box ran (its processes are PIDs in the fake) and used this much.
    host.write(&paths[0].join("cgroup.procs"), "4242").unwrap();
    std::fs::write(paths[0].join("memory.peak"), "1234\n").unwrap();
    std::fs::write(paths[0].join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
    std::fs::write(paths[0].join("pids.peak"), "7\n").unwrap();
    std::fs::write(paths[0].join("cpu.stat"), "usage_usec 2500000\nuser_usec 2000000\n").unwrap();
    let expected = Usage { memory_peak: Some(1234), cpu_time: Some(2.5), processes: Some(7), oom_kills: Some(1) };
    assert_eq!(cgroup.usage(), expected);

    // What was left is killed (cgroup.kill), the figures kept, the directory removed.
    cgroup.finish();
    assert!(!paths[0].exists());
    assert_eq!(cgroup.usage(), expected);
    assert_eq!(host.text("cgroup.procs"), ME.to_string());
}

#[test]
fn a_delegated_cgroup_where_the_caller_is_alone() {
    // As under `systemd-run --user --scope -p Delegate=yes python ...`: the scope is the caller's alone.
    let host = FakeHost::new(ME, ALL);
    host.cgroup("user.slice/app.scope", ALL);
    host.write(&host.at("user.slice/app.scope/cgroup.procs"), &ME.to_string()).unwrap();

    let (first, _) = create_on(&host, &pids_only()).unwrap();
    // The caller moved to a leaf of its own so that the scope may give controllers to its children.
    let leaf = format!("nsbox-{ME}-caller");
    assert_eq!(host.self_cgroup().unwrap(), format!("0::/user.slice/app.scope/{leaf}\n"));
    assert_eq!(host.text("user.slice/app.scope/cgroup.subtree_control"), "pids");
    assert_eq!(first.paths()[0].parent(), Some(host.at("user.slice/app.scope").as_path()));

    // The next box goes beside it: beneath the caller's cgroup still, not beneath the leaf.
    let (second, _) = create_on(&host, &Limits { memory: Some(1 << 30), ..Limits::default() }).unwrap();
    assert_eq!(second.paths()[0].parent(), first.paths()[0].parent());
    assert_eq!(host.text("user.slice/app.scope/cgroup.subtree_control"), "pids memory");
    drop((first, second));
    assert_eq!(subdirs(&host, "user.slice/app.scope"), [leaf]);
}

#[test]
fn other_processes_in_the_callers_cgroup_are_an_error_that_says_what_to_do() {
    let host = FakeHost::new(ME, ALL);
    host.cgroup("user.slice/session-1.scope", ALL);
    for pid in [ME, 777] {
        host.write(&host.at("user.slice/session-1.scope/cgroup.procs"), &pid.to_string()).unwrap();
    }
    let failure = os_failure(create_on(&host, &pids_only()).unwrap_err());
    let got = (failure.step, failure.errno, failure.hint);
    assert_eq!(got, (Step::Cgroup, libc::EBUSY, Some(Hint::CgroupHasProcesses)));
    let message = Error::Os(failure).to_string();
    assert!(message.contains("1 other processes are in that cgroup") && message.contains("Delegate=yes"), "{message}");
    // Nothing was made, and the caller stayed where it was.
    assert!(subdirs(&host, "user.slice/session-1.scope").is_empty());
    assert_eq!(host.self_cgroup().unwrap(), "0::/user.slice/session-1.scope\n");
}

#[test]
fn a_controller_the_parent_does_not_give_is_named() {
    let host = FakeHost::new(ME, ALL);
    host.cgroup("user.slice/app.scope", "memory pids");
    host.write(&host.at("user.slice/app.scope/cgroup.procs"), &ME.to_string()).unwrap();
    let failure = os_failure(create_on(&host, &all_limits()).unwrap_err());
    assert_eq!((failure.errno, failure.hint), (libc::EOPNOTSUPP, Some(Hint::ControllerNotDelegated)));
    assert!(failure.what.starts_with("set cpu_limit: the cpu controller is not available in"), "{}", failure.what);
    assert!(subdirs(&host, "user.slice/app.scope").is_empty());
}

#[test]
fn a_cgroup_not_delegated_to_the_caller_is_a_permission_error() {
    let mut host = FakeHost::new(ME, ALL);
    host.cgroup("user.slice/app.scope", ALL);
    host.write(&host.at("user.slice/app.scope/cgroup.procs"), &ME.to_string()).unwrap();
    let scope = host.at("user.slice/app.scope");
    host.denied.insert(scope);
    let failure = os_failure(create_on(&host, &pids_only()).unwrap_err());
    assert_eq!((failure.errno, failure.hint), (libc::EACCES, Some(Hint::CgroupNeedsDelegation)));
    let message = Error::Os(failure).to_string();
    assert!(message.contains("systemd-run --user --scope -p Delegate=yes"), "{message}");
    assert!(subdirs(&host, "user.slice/app.scope").is_empty());
}

#[test]
fn a_failed_setting_removes_what_was_made() {
    let mut host = FakeHost::new(ME, ALL);
    host.broken = Some("pids.max");
    let failure = os_failure(create_on(&host, &all_limits()).unwrap_err());
    assert_eq!(failure.errno, libc::EINVAL);
    assert!(failure.what.starts_with("write 64 to '") && failure.what.ends_with("/pids.max'"), "{}", failure.what);
    assert!(subdirs(&host, "").is_empty());
}

#[test]
fn the_empty_cgroups_of_dead_callers_are_swept() {
    let mut host = FakeHost::new(ME, ALL);
    host.alive.insert(777);
    host.cgroup("user.slice", ALL);
    for name in ["nsbox-999991-3", "nsbox-999992-1", "nsbox-999993-caller", "nsbox-777-1", "nsbox-x-1", "other"] {
        host.mkdir(&host.at(&format!("user.slice/{name}"))).unwrap();
    }
    // A dead caller's cgroup with a process left in it is not empty: it stays.
    host.write(&host.at("user.slice/nsbox-999992-1/cgroup.procs"), "555").unwrap();
    host.write(&host.at("user.slice/cgroup.procs"), &ME.to_string()).unwrap();

    let (cgroup, _) = create_on(&host, &pids_only()).unwrap();
    let mine = cgroup.paths()[0].file_name().unwrap().to_string_lossy().into_owned();
    let leaf = format!("nsbox-{ME}-caller");
    let mut expected = vec!["nsbox-777-1", "nsbox-999992-1", "nsbox-x-1", "other", &mine, &leaf];
    expected.sort_unstable();
    assert_eq!(subdirs(&host, "user.slice"), expected);
}

#[test]
fn removal_kills_what_is_left_and_removes_nested_cgroups() {
    let host = FakeHost::new(ME, ALL);
    let (mut cgroup, _) = create_on(&host, &pids_only()).unwrap();
    let dir = cgroup.paths()[0].clone();
    // A box that made cgroups of its own (nested nsbox), with processes left in them.
    host.write(&dir.join("cgroup.subtree_control"), "+pids").unwrap();
    host.mkdir(&dir.join("nsbox-5-1")).unwrap();
    host.write(&dir.join("nsbox-5-1/cgroup.procs"), "600").unwrap();
    host.mkdir(&dir.join("leaf")).unwrap();
    host.write(&dir.join("leaf/cgroup.procs"), "601").unwrap();
    cgroup.finish();
    assert!(!dir.exists());
    assert!(subdirs(&host, "").is_empty());
}

#[test]
fn names_of_nsbox_cgroups() {
    assert_eq!(owner("nsbox-12-3"), Some((12, false)));
    assert_eq!(owner("nsbox-12-caller"), Some((12, true)));
    for name in ["nsbox-12", "nsbox-12-", "nsbox--3", "nsbox-0-1", "nsbox-a-1", "nsbox-12-3x", "box-12-3"] {
        assert_eq!(owner(name), None, "{name}");
    }
    assert_eq!(v2_base(Path::new("/cg/app.scope/nsbox-12-caller")), Path::new("/cg/app.scope"));
    assert_eq!(v2_base(Path::new("/cg/app.scope/nsbox-12-1")), Path::new("/cg/app.scope/nsbox-12-1"));
}

/// cgroup v2 for real, where this machine has a cgroup2 mount (here `/sys/fs/cgroup/unified`, with no controllers):
/// a child whose clone made a user namespace enters through the parent's fd (the kernel checks the opener), the
/// kernel counts its CPU time, and removal kills what the box left behind with `cgroup.kill`.
#[test]
fn v2_for_real_entered_from_a_new_user_namespace_and_emptied_with_cgroup_kill() {
    v2_for_real(false);
}

/// The same, the child started in its cgroup by `clone3` with `CLONE_INTO_CGROUP` (its `cgroup.procs` to fall
/// back on is a bad fd here: were the clone to fall back, the spawn would fail).
#[test]
#[cfg(target_arch = "x86_64")]
fn v2_for_real_started_in_its_cgroup_by_clone_into_cgroup() {
    v2_for_real(true);
}

/// `clone3` with `CLONE_INTO_CGROUP` makes the first process of every shape of box: a PID namespace made by
/// the clone, or by a second clone after `unshare` (a root with supplementary groups), an init.
#[test]
#[cfg(target_arch = "x86_64")]
fn clone_into_cgroup_makes_every_shape_of_box() {
    use std::ffi::CString;

    use crate::spawn::{threads, Command};
    use crate::spec::{Caller, Options};

    let host = RealHost;
    let found = layout::hierarchies(&host.self_cgroup().unwrap(), &host.mountinfo().unwrap());
    let Some(v2) = found.iter().find(|h| h.version == Version::V2) else { return };
    if crate::sys::effective_ids().0 != 0 {
        return;
    }
    let root = Caller::current();
    let shapes = [
        (Options { user: Some(true), pid: true, ..Options::default() }, root),
        (Options { user: Some(true), pid: true, ..Options::default() }, Caller { may_drop_groups: true, ..root }),
        (Options { init: true, mount_proc: true, ..Options::default() }, root),
    ];
    for (options, caller) in shapes {
        let place = Place { version: Version::V2, base: v2_base(&v2.dir), controllers: Vec::new() };
        let mut cgroup = BoxCgroup::new(RealHost);
        let _procs = cgroup.make(&place, &Limits::default(), COUNTER.fetch_add(1, Ordering::Relaxed) + 1).unwrap();
        let dir_fd = RealHost.open_dir(&cgroup.paths()[0]).unwrap();
        let config = options.resolve(caller).unwrap();
        let command = Command {
            exec_paths: vec![CString::new("/bin/true").unwrap()],
            argv: vec![CString::new("true").unwrap()],
            cgroup_into: Some((dir_fd.as_raw_fd(), -1)),
            ..Command::default()
        };
        let pid = threads::run(move || crate::spawn::spawn(&config, &command, None, None, None)).unwrap().unwrap();
        let mut status = -1;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
        assert_eq!(status, 0);
        assert!(cgroup.usage().cpu_time.is_some_and(|t| t > 0.0));
        cgroup.finish();
    }
}

fn v2_for_real(clone_into: bool) {
    use std::ffi::CString;

    use crate::spawn::{threads, Command};
    use crate::spec::{Caller, Options};

    let host = RealHost;
    let found = layout::hierarchies(&host.self_cgroup().unwrap(), &host.mountinfo().unwrap());
    let Some(v2) = found.iter().find(|h| h.version == Version::V2) else { return }; // no cgroup2 on this machine
    if crate::sys::effective_ids().0 != 0 {
        return; // as root only: the cgroup2 root is root's
    }
    let place = Place { version: Version::V2, base: v2_base(&v2.dir), controllers: Vec::new() };
    let mut cgroup = BoxCgroup::new(host);
    let procs = cgroup.make(&place, &Limits::default(), COUNTER.fetch_add(1, Ordering::Relaxed) + 1).unwrap();
    let dir = cgroup.paths()[0].clone();
    let dir_fd = RealHost.open_dir(&dir).unwrap();

    // A box in a new user namespace whose shell leaves a sleep behind (no PID namespace to end it).
    let config = Options { user: Some(true), ..Options::default() }.resolve(Caller::current()).unwrap();
    let cs = |s: &str| CString::new(s).unwrap();
    let command = Command {
        exec_paths: vec![cs("/bin/sh")],
        argv: vec![
            cs("sh"),
            cs("-c"),
            cs("sleep 1000 </dev/null >/dev/null 2>&1 & x=0; while [ $x -lt 20000 ]; do x=$((x+1)); done"),
        ],
        cgroup_procs: if clone_into { Vec::new() } else { vec![procs.as_raw_fd()] },
        cgroup_into: clone_into.then_some((dir_fd.as_raw_fd(), -1)),
        ..Command::default()
    };
    let pid = threads::run(move || crate::spawn::spawn(&config, &command, None, None, None)).unwrap().unwrap();
    drop((procs, dir_fd));
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
    assert_eq!(status, 0);

    // The shell's orphan is in the box's cgroup, as the kernel shows it from here.
    let left: Vec<pid_t> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(left.len(), 1);
    let relative = dir.strip_prefix(&v2.dir).unwrap();
    let seen = std::fs::read_to_string(format!("/proc/{}/cgroup", left[0])).unwrap();
    assert!(seen.lines().any(|l| l.strip_prefix("0::").is_some_and(|p| Path::new(p).ends_with(relative))), "{seen}");
    assert!(cgroup.usage().cpu_time.is_some_and(|t| t > 0.0));

    cgroup.finish();
    assert!(!dir.exists());
    let state = std::fs::read_to_string(format!("/proc/{}/stat", left[0])).unwrap_or_default();
    assert!(state.is_empty() || state.contains(") Z "), "{state}");
}
