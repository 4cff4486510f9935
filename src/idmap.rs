//! User and group id maps: `(inside, outside, count)` ranges, checked the way the kernel checks them,
//! so that a bad map is a `ValueError` before anything is forked rather than an `EINVAL` from the child.

use crate::errors::Error;

/// The kernel accepts at most this many lines in `uid_map`/`gid_map` (since Linux 4.15).
pub const MAX_LINES: usize = 340;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// As the user wrote it: `(inside, outside, count)`.
impl std::fmt::Display for IdRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}, {}, {})", self.inside, self.outside, self.count)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdMap {
    ranges: Vec<IdRange>,
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0 + b.1 && b.0 < a.0 + a.1
}

impl IdMap {
    /// Checks a map; `what` (`"uid_map"`/`"gid_map"`) names it in the error.
    pub fn new(what: &'static str, ranges: Vec<IdRange>) -> Result<IdMap, Error> {
        let bad = |msg: String| Err(Error::rule(what, format!("{what}: {msg}")));
        if ranges.is_empty() {
            return bad("needs at least one (inside, outside, count) range".into());
        }
        if ranges.len() > MAX_LINES {
            return bad(format!("has {} ranges; the kernel takes at most {MAX_LINES}", ranges.len()));
        }
        for r in &ranges {
            if r.count == 0 {
                return bad(format!("range {r} has count 0"));
            }
            // ids are 32 bits and (u32)-1 is not a valid id, so a range must end at or below u32::MAX.
            if u64::from(r.inside) + u64::from(r.count) > u64::from(u32::MAX)
                || u64::from(r.outside) + u64::from(r.count) > u64::from(u32::MAX)
            {
                return bad(format!("range {r} runs past the largest id (4294967294)"));
            }
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                let span = |start: u32, r: &IdRange| (u64::from(start), u64::from(r.count));
                if overlaps(span(a.inside, a), span(b.inside, b)) {
                    return bad(format!("inside ranges of {a} and {b} overlap"));
                }
                if overlaps(span(a.outside, a), span(b.outside, b)) {
                    return bad(format!("outside ranges of {a} and {b} overlap"));
                }
            }
        }
        let map = IdMap { ranges };
        // The kernel takes a map in one write of less than a page (`map_write`: EINVAL otherwise).
        let len = map.to_proc_text().len();
        if len >= page_size() {
            return bad(format!(
                "is {len} bytes as /proc text; the kernel takes less than {} (use fewer ranges)",
                page_size()
            ));
        }
        Ok(map)
    }

    /// The map `unshare --map-root-user` writes: `id` outside is 0 inside.
    #[must_use]
    pub fn root_of(id: u32) -> IdMap {
        IdMap { ranges: vec![IdRange { inside: 0, outside: id, count: 1 }] }
    }

    /// True when the map is a single id of the writer's own: the one map an unprivileged process may
    /// write for itself (`user_namespaces(7)`, "the data written ... maps the writing process's ... ID").
    #[must_use]
    pub fn is_single_own_id(&self, own: u32) -> bool {
        matches!(self.ranges.as_slice(), [r] if r.outside == own && r.count == 1)
    }

    /// The text the kernel expects: one `inside outside count` line per range.
    #[must_use]
    pub fn to_proc_text(&self) -> Vec<u8> {
        use std::fmt::Write as _;
        let mut out = String::new();
        for r in &self.ranges {
            let _ = writeln!(out, "{} {} {}", r.inside, r.outside, r.count);
        }
        out.into_bytes()
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(inside: u32, outside: u32, count: u32) -> IdRange {
        IdRange { inside, outside, count }
    }

    #[test]
    fn formats_one_line_per_range() {
        let map = IdMap::new("uid_map", vec![r(0, 1000, 1), r(1, 100_000, 65536)]).unwrap();
        assert_eq!(map.to_proc_text(), b"0 1000 1\n1 100000 65536\n");
    }

    #[test]
    fn rejects_overlaps_zero_counts_and_overflow() {
        assert!(IdMap::new("uid_map", vec![r(0, 1000, 10), r(5, 2000, 1)]).is_err());
        assert!(IdMap::new("uid_map", vec![r(0, 1000, 10), r(50, 1005, 1)]).is_err());
        assert!(IdMap::new("uid_map", vec![r(0, 1000, 0)]).is_err());
        assert!(IdMap::new("uid_map", vec![r(u32::MAX - 1, 0, 2)]).is_err());
        assert!(IdMap::new("uid_map", vec![]).is_err());
        let many = (0..=MAX_LINES as u32).map(|i| r(i, i, 1)).collect();
        assert!(IdMap::new("uid_map", many).is_err());
    }

    #[test]
    fn a_map_longer_than_a_page_is_refused_before_forking() {
        // 200 lines of three 9- and 10-digit numbers: within the 340-line limit, past 4 KiB.
        let wide = (0..200u32).map(|i| r(1_000_000_000 + i, 2_000_000_000 + i, 1)).collect();
        let err = IdMap::new("uid_map", wide).unwrap_err().to_string();
        assert!(err.contains("bytes as /proc text"), "{err}");
        let narrow = (0..200u32).map(|i| r(i, 100_000 + i, 1)).collect();
        assert!(IdMap::new("uid_map", narrow).is_ok());
    }

    #[test]
    fn ranges_read_as_the_user_wrote_them() {
        let err = IdMap::new("uid_map", vec![r(0, 1, 0)]).unwrap_err().to_string();
        assert_eq!(err, "uid_map: range (0, 1, 0) has count 0");
    }

    #[test]
    fn adjacent_ranges_are_fine() {
        assert!(IdMap::new("gid_map", vec![r(0, 1000, 1), r(1, 1001, 1)]).is_ok());
    }

    #[test]
    fn error_names_the_map() {
        let err = IdMap::new("gid_map", vec![r(0, 1, 0)]).unwrap_err();
        assert!(err.to_string().starts_with("gid_map: "), "{err}");
    }

    #[test]
    fn single_own_id_detection() {
        assert!(IdMap::root_of(1000).is_single_own_id(1000));
        assert!(!IdMap::root_of(1000).is_single_own_id(0));
        let wide = IdMap::new("uid_map", vec![r(0, 1000, 2)]).unwrap();
        assert!(!wide.is_single_own_id(1000));
    }
}
