//! The janitor of a host network: nsbox's helper program, outliving a killed caller to delete its bridge.

use std::ffi::CString;
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};

use libc::pid_t;

use super::network::os_err;
use crate::errors::{Error, Step};
use crate::spawn::Command;
use crate::spec::Spec;

/// Starts the helper as a janitor that deletes the interface when our end of `line` closes without a
/// "done"; returns once it is armed (its parent-death signal cleared, in a session of its own).
pub(crate) fn start_janitor(delete: &[u8]) -> Result<(pid_t, OwnedFd), Error> {
    // At 3 or above: the janitor gets its end through pass_fds, and ours is kept for the network's life.
    let (ours, theirs) = crate::sys::socketpair(libc::SOCK_STREAM)?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| os_err(Step::Stdio, "open /dev/null", &e))?;
    // Kept open until the janitor has exec'd it.
    let helper_file = crate::helper::fd()?;
    let helper = helper_file.as_raw_fd();
    let hex = delete.iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    let cs = |s: String| CString::new(s).expect("no NUL");
    let command = Command {
        exec_paths: vec![cs(format!("/proc/self/fd/{helper}"))],
        argv: vec![cs("nsbox-janitor".into()), cs("janitor".into()), cs(theirs.as_raw_fd().to_string()), cs(hex)],
        env: Some(Vec::new()),
        cwd: Some(cs("/".into())),
        stdio: [null.as_raw_fd(); 3],
        pass_fds: vec![theirs.as_raw_fd(), helper],
        ..Command::default()
    };
    let pid = crate::spawn::threads::run(move || crate::spawn::spawn(&Spec::default(), &command, None, None, None))
        .and_then(|r| r)?;
    drop(theirs);
    let mut armed = [0u8; 1];
    // SAFETY: reading one byte into a stack buffer.
    let n = unsafe { libc::read(ours.as_raw_fd(), armed.as_mut_ptr().cast(), 1) };
    if n != 1 || armed[0] != b'a' {
        crate::spawn::kill_and_reap(pid);
        return Err(Error::Internal("the network's janitor did not start".into()));
    }
    Ok((pid, ours))
}
