//! Resource limits by name (`rlimits=`), as `resource.RLIMIT_*` names them in lower case.

use crate::errors::{quoted, Error};

/// The names and their `RLIMIT_*` numbers.
const TABLE: [(&str, libc::__rlimit_resource_t); 16] = [
    ("cpu", libc::RLIMIT_CPU),
    ("fsize", libc::RLIMIT_FSIZE),
    ("data", libc::RLIMIT_DATA),
    ("stack", libc::RLIMIT_STACK),
    ("core", libc::RLIMIT_CORE),
    ("rss", libc::RLIMIT_RSS),
    ("nproc", libc::RLIMIT_NPROC),
    ("nofile", libc::RLIMIT_NOFILE),
    ("memlock", libc::RLIMIT_MEMLOCK),
    ("as", libc::RLIMIT_AS),
    ("locks", libc::RLIMIT_LOCKS),
    ("sigpending", libc::RLIMIT_SIGPENDING),
    ("msgqueue", libc::RLIMIT_MSGQUEUE),
    ("nice", libc::RLIMIT_NICE),
    ("rtprio", libc::RLIMIT_RTPRIO),
    ("rttime", libc::RLIMIT_RTTIME),
];

/// One limit to set in the box, soft and hard (`RLIM_INFINITY` is `u64::MAX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: libc::__rlimit_resource_t,
    pub soft: u64,
    pub hard: u64,
}

impl Rlimit {
    /// Checks a (name, soft, hard) triple: a known name, soft at most hard.
    pub fn new(name: &str, soft: u64, hard: u64) -> Result<Rlimit, Error> {
        let Some(&(_, resource)) = TABLE.iter().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = TABLE.iter().map(|(n, _)| *n).collect();
            return Err(Error::bad_option(
                "rlimits",
                format_args!("names {}, which is not a resource limit (known: {})", quoted(name), known.join(", ")),
            ));
        };
        if soft > hard {
            return Err(Error::bad_option(
                "rlimits",
                format_args!("for {name}: the soft limit {soft} is above the hard limit {hard}"),
            ));
        }
        Ok(Rlimit { resource, soft, hard })
    }

    /// The limit's name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        TABLE.iter().find(|(_, r)| *r == self.resource).map_or("?", |(n, _)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_soft_and_hard() {
        let limit = Rlimit::new("nofile", 64, 128).unwrap();
        assert_eq!((limit.resource, limit.name()), (libc::RLIMIT_NOFILE, "nofile"));
        assert!(Rlimit::new("as", 1 << 30, u64::MAX).is_ok());
        let err = Rlimit::new("files", 1, 1).unwrap_err().to_string();
        assert!(err.contains("rlimits names 'files', which is not a resource limit"), "{err}");
        let err = Rlimit::new("core", 2, 1).unwrap_err().to_string();
        assert!(err.contains("rlimits for core: the soft limit 2 is above the hard limit 1"), "{err}");
    }
}
