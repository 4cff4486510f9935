//! The error pipe's wire format: what a child (or nsbox's helper program) tells its parent.
//!
//! Every message is one fixed 8-byte record, `(code, value)` in native byte order, written with one
//! `write(2)`, which a pipe delivers whole (tailhook/unshare's `ErrorCode` plays this part there). A failure
//! sends its [`Step`]'s code and, as the value, the errno in the low 12 bits (errnos are below 4096) and
//! above them which of the box's mounts failed (0: none; see [`crate::mounts::MountStep::at`], plus one).
//! The other messages have codes of their own, above every step's.
//! The helper program's numbers are generated from this file and `errors.rs` at build time (`build.rs`).

use libc::pid_t;

use crate::errors::{Error, Step};

/// The codes of the messages that are not failures.
pub mod code {
    /// The child waits for the parent to write its id maps or make its network.
    pub const READY: u32 = 100;
    /// `nsbox.call` with a PID namespace: the value is the PID (in the caller's namespace) of the process
    /// that runs the function.
    pub const FORKED: u32 = 101;
    /// The namespaces are ready and the function is about to run (`nsbox.call`), or the init's command
    /// has exec'd (`init=True`).
    pub const RUNNING: u32 = 102;
    /// The helper program hands over (`SCM_RIGHTS`) the pipe that tells whether the command's exec worked.
    pub const HANDOFF: u32 = 103;
    /// The parent's own marker after the child's records; never sent by a child.
    pub const END: u32 = 104;
}

/// One record from a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// A step failed with an errno; for a mount step, which mount (`MountStep::at` plus one), else 0.
    Failed(Step, i32, u16),
    Ready,
    Forked(pid_t),
    Running,
    Handoff,
    End,
}

/// Bytes per record.
pub const SIZE: usize = 8;
/// The bits of a failure's value that hold the errno.
const ERRNO_BITS: u32 = 12;
const ERRNO_MASK: i32 = (1 << ERRNO_BITS) - 1;

impl Message {
    /// The record, as the child writes it.
    #[must_use]
    pub fn encode(self) -> [u8; SIZE] {
        let (code, value) = match self {
            Message::Failed(step, errno, at) => (step.code(), errno | (i32::from(at) << ERRNO_BITS)),
            Message::Ready => (code::READY, 0),
            Message::Forked(pid) => (code::FORKED, pid),
            Message::Running => (code::RUNNING, 0),
            Message::Handoff => (code::HANDOFF, 0),
            Message::End => (code::END, 0),
        };
        let mut out = [0u8; SIZE];
        let (a, b) = out.split_at_mut(4);
        a.copy_from_slice(&code.to_ne_bytes());
        b.copy_from_slice(&value.to_ne_bytes());
        out
    }

    /// Decodes a record; anything but exactly [`SIZE`] bytes with a known code (and, for a failure, an
    /// errno) is corrupt: waiting for the rest of a short record could wait for ever.
    pub fn decode(bytes: &[u8]) -> Result<Message, Error> {
        let corrupt = || Error::Internal(format!("corrupt record from the child ({} bytes)", bytes.len()));
        let raw: [u8; SIZE] = bytes.try_into().map_err(|_| corrupt())?;
        let code = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let value = i32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
        Ok(match code {
            code::READY => Message::Ready,
            code::FORKED => Message::Forked(value),
            code::RUNNING => Message::Running,
            code::HANDOFF => Message::Handoff,
            code::END => Message::End,
            _ => match Step::from_code(code) {
                Some(step) if value & ERRNO_MASK > 0 => {
                    let at = u16::try_from(value >> ERRNO_BITS).map_err(|_| corrupt())?;
                    Message::Failed(step, value & ERRNO_MASK, at)
                }
                _ => return Err(corrupt()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let messages = Step::ALL.iter().map(|&step| Message::Failed(step, libc::EPERM, 0)).chain([
            Message::Failed(Step::Mount, libc::EROFS, 7),
            Message::Failed(Step::MountPoint, 4095, u16::MAX),
            Message::Ready,
            Message::Forked(4242),
            Message::Running,
            Message::Handoff,
            Message::End,
        ]);
        for message in messages {
            assert_eq!(Message::decode(&message.encode()), Ok(message));
        }
    }

    #[test]
    fn short_unknown_or_errno_less_records_are_internal_errors() {
        assert!(matches!(Message::decode(&[1, 2, 3]), Err(Error::Internal(_))));
        let unknown = [999u32.to_ne_bytes(), 1i32.to_ne_bytes()].concat();
        assert!(matches!(Message::decode(&unknown), Err(Error::Internal(_))));
        let no_errno = Message::Failed(Step::Exec, 0, 3).encode();
        assert!(matches!(Message::decode(&no_errno), Err(Error::Internal(_))));
    }

    #[test]
    fn protocol_codes_are_apart_from_every_step_code() {
        for step in Step::ALL {
            assert!(step.code() < code::READY, "{step:?}");
        }
    }
}
