//! Seccomp filters by system call name (`seccomp=`): compiled here, in the parent, into classic BPF that the
//! child installs as its last step before `execve` ([`crate::child::install_seccomp`]), with one system call
//! on memory prepared here.
//!
//! The compiler is rust-vmm's `seccompiler` (Firecracker's), not libseccomp. It is pure Rust: the wheel needs
//! no C library at build or run time, where libseccomp would need its headers to build and its shared library
//! on every machine that imports nsbox. It compiles for a named architecture whatever the host, so `cargo test`
//! checks the `x86_64` and `aarch64` filters on either. Its system call tables are reached only through its JSON
//! front end, so each filter is written as JSON and compiled from it: 55 to 60 µs for the default profile
//! (161 instructions on `x86_64`, 1288 bytes), saved by keeping the last few filters ([`COMPILED`]): a spawn
//! with the default profile then costs about 0.1 ms more than without, most of it the kernel's (installing the
//! filter, and the exec'd program's calls through it). Two things libseccomp does and it does not are added
//! here:
//!
//! - One action per filter: the default profile answers `EPERM` (or the caller's errno) to most of what it
//!   denies and `ENOSYS` to `clone3`. It is compiled as one program per action, and [`chain`] joins them: where
//!   one would allow the call, the next one decides.
//! - The x32 ABI: on `x86_64` its system calls carry the architecture `AUDIT_ARCH_X86_64` too, with bit
//!   `0x40000000` set in their numbers, so they pass seccompiler's architecture check and a deny list does not
//!   know their numbers. A first check ([`X32_GUARD`]) kills a process that makes one, as seccompiler's own
//!   check kills one that calls through another architecture (i386's `int 0x80` on `x86_64`, arm32 on `aarch64`):
//!   a box runs programs of the native ABI only.

use std::collections::BTreeMap;
use std::sync::Mutex;

use seccompiler::{sock_filter, BpfProgram, TargetArch};
use serde_json::{json, Value};

use crate::errors::{quoted, Error};

/// What the caller asked for, as the Python layer gives it (`nsbox.Seccomp`, or `"default"`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "python", derive(pyo3::FromPyObject))]
#[cfg_attr(feature = "python", pyo3(from_item_all))]
pub struct SeccompOptions {
    /// `Some("default")` for nsbox's default profile ([`default_profile`]); `None` for the caller's names only.
    pub profile: Option<String>,
    /// With the default profile: let the box make user namespaces of its own.
    pub user_namespaces: bool,
    /// Calls that fail with `errno`, on top of the profile's.
    pub deny: Vec<String>,
    /// An allow list: every other call fails with `errno` (no profile, no `deny`).
    pub allow: Option<Vec<String>>,
    /// What a denied call returns.
    pub errno: i64,
}

impl Default for SeccompOptions {
    /// The default profile, as `seccomp="default"` asks.
    fn default() -> Self {
        SeccompOptions { profile: Some("default".into()), user_namespaces: false, deny: vec![], allow: None, errno: 1 }
    }
}

/// A compiled filter: the program for `seccomp(SECCOMP_SET_MODE_FILTER)`, at most `BPF_MAXINSNS` long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    program: BpfProgram,
}

impl Filter {
    #[must_use]
    pub fn instructions(&self) -> &[sock_filter] {
        &self.program
    }
}

/// Calls a box has no business making: loading kernel code (modules, kexec, eBPF), the kernel's keyring
/// (which user namespaces do not separate), perf events and `userfaultfd` (the usual tools of kernel
/// exploits), and `open_by_handle_at`, which opens any file of a mounted filesystem by its handle, outside the
/// box's root ("shocker"). Docker's default profile denies them all unless the container holds the capability
/// that also governs them. And `io_uring`: its operations run in the kernel's workers, where a filter never sees
/// them (an `openat` or `connect` through a ring bypasses any deny list), and it has been a steady source of
/// kernel bugs; Docker's profile has denied it since 2023.
const DENIED: &[&str] = &[
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "add_key",
    "request_key",
    "keyctl",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "open_by_handle_at",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

/// `io_uring`'s calls (in [`DENIED`] too): every deny list denies them, or it could be bypassed.
const IO_URING: [&str; 3] = ["io_uring_setup", "io_uring_enter", "io_uring_register"];

/// Calls that read, write or compare another process named by its PID. A filter sees the PID, never the
/// process: it cannot tell one in the box from one outside. In a PID namespace of its own the box can only
/// name its own processes (PIDs resolve in the caller's namespace), so they are allowed there, and `gdb` or
/// `strace` work; without one the box shares the host's PIDs, and they are denied.
const OTHER_PROCESSES: &[&str] = &["ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"];

/// The terminal `ioctl`s that push input to a terminal (`TIOCSTI`: type a command into the caller's shell,
/// CVE-2017-5226) or reach the Linux console (`TIOCLINUX`). The kernel reads the request as 32 bits, so only
/// the low 32 bits are compared.
const TERMINAL_IOCTLS: [u64; 2] = [0x5412, 0x541c];

/// The `personality` values allowed, as in Docker's profile: `PER_LINUX`, `PER_LINUX32`, `UNAME26`, both of
/// the last two, and the query (`0xffffffff`). Others (`ADDR_NO_RANDOMIZE`, `READ_IMPLIES_EXEC`...) weaken
/// the box's own protections.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// `clone`/`unshare` flag of a new user namespace (the same on every architecture).
const CLONE_NEWUSER: u64 = 0x1000_0000;

/// The calls nsbox itself makes once the filter is installed (the exec, a failed exec's report and exit): an
/// allow list always has them.
const STARTUP: &[&str] = &["execve", "execveat", "write", "exit_group"];

/// On `x86_64`, before anything else: a system call with x32's bit in its number ends the process.
const X32_GUARD: [sock_filter; 3] = [
    sock_filter { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: 0 }, // seccomp_data.nr
    sock_filter { code: BPF_JGE_K, jt: 0, jf: 1, k: 0x4000_0000 },
    sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k: libc::SECCOMP_RET_KILL_PROCESS },
];

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JA: u16 = 0x05;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
/// The kernel's limit on a program's length.
const BPF_MAXINSNS: usize = 4096;

/// System calls by name, each matched always (`None`) or by any of its rules (JSON rules of seccompiler, each
/// a list of conditions on the arguments that must all hold).
type Rules = BTreeMap<String, Option<Vec<Value>>>;

fn always(rules: &mut Rules, name: &str) {
    rules.insert(name.to_owned(), None);
}

fn when(rules: &mut Rules, name: &str, conditions: &[Value]) {
    let entry = rules.entry(name.to_owned()).or_insert_with(|| Some(Vec::new()));
    // A call matched always stays so (seccompiler would drop an unconditional rule beside conditional ones).
    if let Some(list) = entry {
        list.push(json!({ "syscall": name, "args": conditions }));
    }
}

/// A condition on the low 32 bits of argument `index`: what the kernel reads of an `int` or `unsigned int`,
/// so that set high bits cannot slip past a comparison.
fn low32(index: u8, op: &Value, value: u64) -> Value {
    json!({ "index": index, "type": "dword", "op": op, "val": value })
}

/// The default profile, in the spirit of Docker's for a box: `(denied with errno, answered ENOSYS)`.
///
/// Denied: [`DENIED`]; [`OTHER_PROCESSES`] unless the box has its own PID namespace; `ioctl` with
/// [`TERMINAL_IOCTLS`]; `personality` to other values than [`PERSONALITIES`]; and, unless `user_namespaces`,
/// `clone` and `unshare` with `CLONE_NEWUSER` (a new user namespace makes its maker root again, with every
/// capability in it: the first step of most kernel exploits from unprivileged code). `clone3` passes its flags
/// in memory, which a filter cannot read, so it answers `ENOSYS` instead: the C library then falls back to
/// `clone` (as under Docker).
///
/// Left to capabilities (a box without root in its user namespace cannot use them): `mount`, `reboot`,
/// `swapon`, `acct`, setting clocks, raw I/O.
fn default_profile(pid_namespace: bool, user_namespaces: bool) -> (Rules, Rules) {
    let mut denied = Rules::new();
    for name in DENIED {
        always(&mut denied, name);
    }
    if !pid_namespace {
        for name in OTHER_PROCESSES {
            always(&mut denied, name);
        }
    }
    for request in TERMINAL_IOCTLS {
        when(&mut denied, "ioctl", &[low32(1, &json!("eq"), request)]);
    }
    let not_allowed: Vec<Value> = PERSONALITIES.iter().map(|&value| low32(0, &json!("ne"), value)).collect();
    when(&mut denied, "personality", &not_allowed);
    let mut nosys = Rules::new();
    if !user_namespaces {
        for name in ["clone", "unshare"] {
            when(&mut denied, name, &[low32(0, &json!({ "masked_eq": CLONE_NEWUSER }), CLONE_NEWUSER)]);
        }
        always(&mut nosys, "clone3");
    }
    (denied, nosys)
}

/// The architecture nsbox runs on, if filters are supported there.
fn native_arch() -> Option<TargetArch> {
    match std::env::consts::ARCH {
        "x86_64" => Some(TargetArch::x86_64),
        "aarch64" => Some(TargetArch::aarch64),
        _ => None,
    }
}

fn arch_name(arch: TargetArch) -> &'static str {
    match arch {
        TargetArch::x86_64 => "x86_64",
        TargetArch::aarch64 => "aarch64",
        TargetArch::riscv64 => "riscv64",
    }
}

/// A seccompiler action as its JSON says it.
fn errno_action(errno: i64) -> Value {
    json!({ "errno": errno })
}

/// One program: `matched` for the calls of `rules`, `otherwise` for the rest.
fn program(arch: TargetArch, rules: &Rules, matched: &Value, otherwise: &Value) -> Result<BpfProgram, String> {
    let filter: Vec<Value> = rules
        .iter()
        .flat_map(|(name, rules)| rules.clone().unwrap_or_else(|| vec![json!({ "syscall": name })]))
        .collect();
    let json = json!({ "box": { "match_action": matched, "mismatch_action": otherwise, "filter": filter } });
    let mut compiled = seccompiler::compile_from_json(json.to_string().as_bytes(), arch).map_err(|e| e.to_string())?;
    compiled.remove("box").ok_or_else(|| "the filter is missing from seccompiler's output".to_owned())
}

/// Whether `name` is a system call of `arch` (seccompiler's table).
fn is_syscall(arch: TargetArch, name: &str) -> bool {
    let mut rules = Rules::new();
    always(&mut rules, name);
    program(arch, &rules, &json!("allow"), &errno_action(1)).is_ok()
}

/// Programs run one after the other: each `ret ALLOW` of one but the last becomes a jump to the start of the
/// next (each starts by loading what it compares), so a call is allowed only when all of them allow it, and
/// the first that does not decides. On `x86_64` [`X32_GUARD`] comes first.
fn chain(arch: TargetArch, programs: Vec<BpfProgram>) -> BpfProgram {
    let mut out: BpfProgram = if arch == TargetArch::x86_64 { X32_GUARD.to_vec() } else { Vec::new() };
    let last = programs.len().saturating_sub(1);
    for (i, program) in programs.into_iter().enumerate() {
        let len = program.len();
        for (at, instruction) in program.into_iter().enumerate() {
            let allows = instruction.code == BPF_RET_K && instruction.k == libc::SECCOMP_RET_ALLOW;
            if allows && i < last {
                out.push(sock_filter { code: BPF_JA, jt: 0, jf: 0, k: (len - at - 1) as u32 });
            } else {
                out.push(instruction);
            }
        }
    }
    out
}

/// The filters compiled last, with what they were compiled from: a program starts its boxes with a few filters,
/// and a hit saves the compilation (most of a spawn's cost of a filter in the parent).
static COMPILED: Mutex<Vec<(SeccompOptions, bool, Filter)>> = Mutex::new(Vec::new());
const COMPILED_KEPT: usize = 8;

impl SeccompOptions {
    /// The filter for a box on this machine; `pid_namespace`: the box has a PID namespace of its own.
    pub fn compile(&self, pid_namespace: bool) -> Result<Filter, Error> {
        let Some(arch) = native_arch() else {
            let arch = std::env::consts::ARCH;
            return Err(Error::rule("seccomp", format!("seccomp filters are made for x86_64 and aarch64, not {arch}")));
        };
        // `try_lock` only: in a child forked while another thread held the lock, it stays held for ever.
        let same = |(options, pid, _): &&(SeccompOptions, bool, Filter)| options == self && *pid == pid_namespace;
        if let Some((_, _, filter)) = COMPILED.try_lock().ok().as_deref().and_then(|kept| kept.iter().find(same)) {
            return Ok(filter.clone());
        }
        let filter = self.compile_for(arch, pid_namespace)?;
        if let Ok(mut kept) = COMPILED.try_lock() {
            if kept.len() == COMPILED_KEPT {
                kept.remove(0);
            }
            kept.push((self.clone(), pid_namespace, filter.clone()));
        }
        Ok(filter)
    }

    fn compile_for(&self, arch: TargetArch, pid_namespace: bool) -> Result<Filter, Error> {
        if !(1..=4095).contains(&self.errno) {
            return Err(Error::bad_option("seccomp", format_args!("errno must be 1 to 4095, not {}", self.errno)));
        }
        let deny_errno = errno_action(self.errno);
        let allow = json!("allow");
        let mut programs = Vec::new();
        let user_names: &[String] = if let Some(names) = &self.allow {
            if self.profile.is_some() || !self.deny.is_empty() || self.user_namespaces {
                let message = "seccomp: an allow list denies everything else: it takes no profile and no deny list";
                return Err(Error::rule("seccomp", message));
            }
            let mut rules = Rules::new();
            for name in names.iter().map(String::as_str).chain(STARTUP.iter().copied()) {
                always(&mut rules, name);
            }
            programs.push(program(arch, &rules, &allow, &deny_errno));
            names
        } else {
            let (mut denied, nosys) = match self.profile.as_deref() {
                Some("default") => default_profile(pid_namespace, self.user_namespaces),
                None if self.user_namespaces => {
                    let message = "seccomp: user_namespaces applies to the default profile";
                    return Err(Error::rule("seccomp", message));
                }
                None => (Rules::new(), Rules::new()),
                Some(other) => {
                    return Err(Error::bad_option("seccomp", format_args!("has no profile {}", quoted(other))));
                }
            };
            for name in &self.deny {
                always(&mut denied, name);
            }
            if !self.deny.is_empty() {
                // A ring would run the denied calls where no filter sees them.
                for name in IO_URING {
                    always(&mut denied, name);
                }
            }
            programs.push(program(arch, &denied, &deny_errno, &allow));
            if !nosys.is_empty() {
                programs.push(program(arch, &nosys, &errno_action(libc::ENOSYS.into()), &allow));
            }
            &self.deny
        };
        let programs: Result<Vec<BpfProgram>, String> = programs.into_iter().collect();
        let programs = programs.map_err(|reason| {
            // The profile's names are checked by the tests: a name of the caller's is at fault.
            match user_names.iter().find(|name| !is_syscall(arch, name)) {
                Some(name) => {
                    let arch = arch_name(arch);
                    Error::rule("seccomp", format!("seccomp: {} is not a system call on {arch}", quoted(name)))
                }
                None => Error::Internal(format!("cannot compile the seccomp filter: {reason}")),
            }
        })?;
        let program = chain(arch, programs);
        if program.len() > BPF_MAXINSNS {
            let message =
                format!("seccomp: the filter is {} instructions long; the limit is {BPF_MAXINSNS}", program.len());
            return Err(Error::rule("seccomp", message));
        }
        Ok(Filter { program })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // AUDIT_ARCH_*: the ELF machine (EM_X86_64 = 62, EM_AARCH64 = 183, EM_386 = 3), 64-bit, little-endian.
    const X86_64: u32 = 0x3e | 0x8000_0000 | 0x4000_0000;
    const AARCH64: u32 = 0xb7 | 0x8000_0000 | 0x4000_0000;
    const I386: u32 = 0x3 | 0x4000_0000;

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    /// A few system call numbers of each architecture (from the kernel's tables).
    struct Numbers {
        audit: u32,
        keyctl: u32,
        bpf: u32,
        perf_event_open: u32,
        ioctl: u32,
        personality: u32,
        clone: u32,
        clone3: u32,
        unshare: u32,
        ptrace: u32,
        getpid: u32,
        uname: u32,
        write: u32,
        execve: u32,
    }

    const X86_64_NR: Numbers = Numbers {
        audit: X86_64,
        keyctl: 250,
        bpf: 321,
        perf_event_open: 298,
        ioctl: 16,
        personality: 135,
        clone: 56,
        clone3: 435,
        unshare: 272,
        ptrace: 101,
        getpid: 39,
        uname: 63,
        write: 1,
        execve: 59,
    };

    const AARCH64_NR: Numbers = Numbers {
        audit: AARCH64,
        keyctl: 219,
        bpf: 280,
        perf_event_open: 241,
        ioctl: 29,
        personality: 92,
        clone: 220,
        clone3: 435,
        unshare: 97,
        ptrace: 117,
        getpid: 172,
        uname: 160,
        write: 64,
        execve: 221,
    };

    fn arches() -> [(TargetArch, Numbers); 2] {
        [(TargetArch::x86_64, X86_64_NR), (TargetArch::aarch64, AARCH64_NR)]
    }

    /// Runs a program as the kernel would on a system call: the action it returns. Knows the instructions
    /// seccompiler and [`chain`] emit, and panics on any other, or on a jump out of the program.
    fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64]; // struct seccomp_data: nr, arch, instruction_pointer, args[6]
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
        }
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let ins = &program[pc];
            let k = ins.k;
            let jump = |taken: bool| usize::from(if taken { ins.jt } else { ins.jf });
            pc += 1 + match ins.code {
                0x20 => {
                    let at = k as usize;
                    a = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                    0
                }
                0x54 => {
                    a &= k;
                    0
                }
                0x05 => k as usize,
                0x15 => jump(a == k),
                0x25 => jump(a > k),
                0x35 => jump(a >= k),
                0x45 => jump(a & k != 0),
                0x06 => return k,
                code => panic!("unexpected BPF instruction {code:#x}"),
            };
        }
    }

    fn call(program: &[sock_filter], n: &Numbers, nr: u32, args: [u64; 6]) -> u32 {
        run(program, n.audit, nr, args)
    }

    #[test]
    fn the_default_profile_denies_what_it_says_on_both_architectures() {
        for (arch, n) in arches() {
            let filter = SeccompOptions::default().compile_for(arch, false).unwrap();
            let p = filter.instructions();
            let none = [0; 6];
            for nr in [n.keyctl, n.bpf, n.perf_event_open, n.ptrace] {
                assert_eq!(call(p, &n, nr, none), EPERM, "{arch:?} {nr}");
            }
            for nr in [n.getpid, n.uname, n.write, n.execve] {
                assert_eq!(call(p, &n, nr, none), ALLOW, "{arch:?} {nr}");
            }
            // TIOCSTI is refused whatever the high bits of the request say; TCGETS is allowed.
            assert_eq!(call(p, &n, n.ioctl, [0, 0x5412, 0, 0, 0, 0]), EPERM);
            assert_eq!(call(p, &n, n.ioctl, [0, 0x1_0000_5412, 0, 0, 0, 0]), EPERM);
            assert_eq!(call(p, &n, n.ioctl, [0, 0x541c, 0, 0, 0, 0]), EPERM);
            assert_eq!(call(p, &n, n.ioctl, [0, 0x5401, 0, 0, 0, 0]), ALLOW);
            for value in PERSONALITIES {
                assert_eq!(call(p, &n, n.personality, [value, 0, 0, 0, 0, 0]), ALLOW, "{value:#x}");
            }
            assert_eq!(call(p, &n, n.personality, [0x0040_0000, 0, 0, 0, 0, 0]), EPERM); // READ_IMPLIES_EXEC
            let sigchld = libc::SIGCHLD as u64;
            assert_eq!(call(p, &n, n.clone, [sigchld, 0, 0, 0, 0, 0]), ALLOW);
            assert_eq!(call(p, &n, n.clone, [CLONE_NEWUSER | sigchld, 0, 0, 0, 0, 0]), EPERM);
            assert_eq!(call(p, &n, n.unshare, [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]), ALLOW);
            assert_eq!(call(p, &n, n.unshare, [CLONE_NEWUSER | libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]), EPERM);
            assert_eq!(call(p, &n, n.clone3, none), ENOSYS);
            // Another architecture's calls end the process.
            let other = if arch == TargetArch::x86_64 { I386 } else { X86_64 };
            assert_eq!(run(p, other, n.getpid, none), KILL);
            // 161 instructions on `x86_64`, 158 on `aarch64`: a linear check per call, far below `BPF_MAXINSNS`.
            assert!(p.len() < 180, "{arch:?}: {} instructions", p.len());
        }
    }

    #[test]
    fn x32_calls_end_the_process_on_x86_64() {
        for options in [SeccompOptions::default(), SeccompOptions { allow: Some(vec![]), ..custom(&[]) }] {
            let filter = options.compile_for(TargetArch::x86_64, false).unwrap();
            assert_eq!(run(filter.instructions(), X86_64, 0x4000_0000 | X86_64_NR.getpid, [0; 6]), KILL);
        }
    }

    #[test]
    fn a_pid_namespace_allows_ptrace_and_user_namespaces_can_be_allowed() {
        for (arch, n) in arches() {
            let options = SeccompOptions { user_namespaces: true, ..SeccompOptions::default() };
            let filter = options.compile_for(arch, true).unwrap();
            let p = filter.instructions();
            assert_eq!(call(p, &n, n.ptrace, [0; 6]), ALLOW);
            assert_eq!(call(p, &n, n.clone3, [0; 6]), ALLOW);
            assert_eq!(call(p, &n, n.unshare, [CLONE_NEWUSER, 0, 0, 0, 0, 0]), ALLOW);
            assert_eq!(call(p, &n, n.keyctl, [0; 6]), EPERM);
        }
    }

    fn custom(deny: &[&str]) -> SeccompOptions {
        SeccompOptions {
            profile: None,
            user_namespaces: false,
            deny: deny.iter().map(|&s| s.to_owned()).collect(),
            allow: None,
            errno: libc::EPERM.into(),
        }
    }

    #[test]
    fn a_deny_list_answers_its_errno() {
        for (arch, n) in arches() {
            let filter = SeccompOptions { errno: libc::EACCES.into(), ..custom(&["uname"]) }.compile_for(arch, false);
            let p = filter.unwrap();
            assert_eq!(call(p.instructions(), &n, n.uname, [0; 6]), libc::SECCOMP_RET_ERRNO | libc::EACCES as u32);
            assert_eq!(call(p.instructions(), &n, n.getpid, [0; 6]), ALLOW);
            assert_eq!(call(p.instructions(), &n, n.ioctl, [0, 0x5412, 0, 0, 0, 0]), ALLOW);
        }
    }

    #[test]
    fn a_name_denied_outright_wins_over_the_profiles_conditions() {
        for (arch, n) in arches() {
            let options = SeccompOptions { deny: vec!["ioctl".into(), "clone3".into()], ..SeccompOptions::default() };
            let p = options.compile_for(arch, false).unwrap();
            assert_eq!(call(p.instructions(), &n, n.ioctl, [0, 0x5401, 0, 0, 0, 0]), EPERM);
            assert_eq!(call(p.instructions(), &n, n.clone3, [0; 6]), EPERM);
        }
    }

    #[test]
    fn an_allow_list_denies_everything_else_but_nsboxs_own_start() {
        for (arch, n) in arches() {
            let options = SeccompOptions { allow: Some(vec!["getpid".into()]), ..custom(&[]) };
            let p = options.compile_for(arch, false).unwrap();
            assert_eq!(call(p.instructions(), &n, n.getpid, [0; 6]), ALLOW);
            assert_eq!(call(p.instructions(), &n, n.execve, [0; 6]), ALLOW);
            assert_eq!(call(p.instructions(), &n, n.uname, [0; 6]), EPERM);
            assert_eq!(call(p.instructions(), &n, n.clone3, [0; 6]), EPERM);
        }
    }

    #[test]
    fn bad_input_is_named() {
        let cases = [
            (custom(&["getpid", "no_such_call"]), "'no_such_call' is not a system call on x86_64"),
            (SeccompOptions { allow: Some(vec!["fork".into(), "nope".into()]), ..custom(&[]) }, "'nope'"),
            (SeccompOptions { errno: 0, ..custom(&[]) }, "errno must be 1 to 4095, not 0"),
            (SeccompOptions { errno: 4096, ..custom(&[]) }, "not 4096"),
            (SeccompOptions { allow: Some(vec![]), ..SeccompOptions::default() }, "no profile"),
            (SeccompOptions { user_namespaces: true, ..custom(&[]) }, "default profile"),
            (SeccompOptions { profile: Some("strict".into()), ..custom(&[]) }, "no profile 'strict'"),
        ];
        for (options, needle) in cases {
            let err = options.compile_for(TargetArch::x86_64, false).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
        // A name of one architecture only.
        let err = custom(&["fork"]).compile_for(TargetArch::aarch64, false).unwrap_err().to_string();
        assert_eq!(err, "seccomp: 'fork' is not a system call on aarch64");
        assert!(custom(&["fork"]).compile_for(TargetArch::x86_64, false).is_ok());
    }

    #[test]
    fn the_native_architecture_compiles_and_keeps_what_it_compiled() {
        let filter = SeccompOptions::default().compile(false).unwrap();
        assert_eq!(SeccompOptions::default().compile(false).unwrap(), filter);
        assert_ne!(SeccompOptions::default().compile(true).unwrap(), filter);
        let mut options = custom(&["uname"]);
        for errno in 1..=20 {
            options.errno = errno;
            assert_eq!(options.compile(false).unwrap(), options.compile_for(native_arch().unwrap(), false).unwrap());
        }
        assert!(COMPILED.lock().unwrap().len() <= COMPILED_KEPT);
        assert!(!filter.instructions().is_empty());
        #[cfg(target_arch = "x86_64")]
        assert_eq!(run(filter.instructions(), X86_64, libc::SYS_keyctl as u32, [0; 6]), EPERM);
    }
}
