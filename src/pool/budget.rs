//! How many fds a pool may keep. Its sets are open namespace fds (up to five a set), which count against the
//! caller's `RLIMIT_NOFILE` as its own files do: at a 1,024-fd limit an unbounded pool took every fd, and the
//! caller's own `open()` failed with `EMFILE`.
//!
//! One rule for both checks: a pool never takes the process past half of its soft limit. `Pool(size)` whose sets
//! would, with the fds open now, is refused as it is made ([`check_size`]); and the filler makes a set only while
//! the open fds, the set's included, stay within that half ([`room_for`]), counted anew each time (the caller may
//! have opened files or lowered the limit since). So the caller keeps at least half of its limit for its own files.

use crate::errors::{Error, Step};

/// What the pools leave the caller: the open fds stay within half of the soft limit.
fn share(limit: u64) -> u64 {
    limit / 2
}

/// The soft limit, the fds open now, and how many more sets of `per_set` fds fit within the share.
fn room(per_set: usize) -> (u64, usize, usize) {
    let limit = soft_limit();
    // No /proc to count them: the pool's own fds only.
    let open = open_fds().unwrap_or(0);
    let free = share(limit).saturating_sub(open as u64);
    (limit, open, usize::try_from(free / per_set.max(1) as u64).unwrap_or(usize::MAX))
}

fn why(per_set: usize, open: usize, limit: u64) -> String {
    format!(
        "a set holds {per_set} namespace fds, this process has {open} open, and a pool keeps the process within \
         half of its soft RLIMIT_NOFILE ({limit}), leaving the rest to its own files"
    )
}

/// Refuses a `size` whose sets of `per_set` fds do not fit (a `ValueError` naming the limit and the largest size).
pub(crate) fn check_size(size: usize, per_set: usize) -> Result<(), Error> {
    let (limit, open, most) = room(per_set);
    if size <= most {
        return Ok(());
    }
    let why = why(per_set, open, limit);
    let message = if most == 0 {
        format!("size: no Pool fits here: {why}; raise the limit (resource.setrlimit)")
    } else {
        format!(
            "size must be at most {most} here, not {size}: {why}; ask for fewer sets or raise the limit \
             (resource.setrlimit)"
        )
    };
    Err(Error::rule("size", message))
}

/// Whether one more set of `per_set` fds may be made now (the filler's check before each set).
pub(crate) fn room_for(per_set: usize) -> Result<(), Error> {
    let (limit, open, most) = room(per_set);
    if most >= 1 {
        return Ok(());
    }
    Err(Error::os(Step::Pool, libc::EMFILE).with_what(format!("keep another set: {}", why(per_set, open, limit))))
}

/// The soft `RLIMIT_NOFILE` (`u64::MAX` when unlimited or unknown).
fn soft_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return u64::MAX;
    }
    limit.rlim_cur
}

/// How many fds this process has open (its entries in `/proc/self/fd`, less the one that lists them).
fn open_fds() -> Option<usize> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(entries.count().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_half_the_limit_rounded_down() {
        assert_eq!(share(1024), 512);
        assert_eq!(share(9), 4);
    }
}
