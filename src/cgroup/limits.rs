//! The limits a box's cgroup enforces, checked before anything is made.

use super::size;
use crate::errors::{quoted, Error};

/// The smallest memory limit: below it not even the program's exec fits, and a number this small was most
/// likely meant in megabytes.
pub const MIN_MEMORY: u64 = 1 << 20;
/// The most processes a PID limit can name (`PID_MAX_LIMIT` on 64-bit kernels).
pub const MAX_PIDS: i64 = 4_194_304;
/// The CFS bandwidth period nsbox uses (the kernel's default): 100 ms.
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kernel's smallest quota is 1 ms, so the smallest CPU limit is 1 ms per period.
pub const MIN_CPUS: f64 = 0.01;
/// Far above any machine, far below the kernel's largest quota.
pub const MAX_CPUS: f64 = 100_000.0;

/// `memory_limit` as given: bytes, or a size such as `"256M"`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "python", derive(pyo3::FromPyObject))]
pub enum SizeArg {
    Bytes(i64),
    Text(String),
}

/// Checked limits: what the box's cgroup is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Limits {
    /// Bytes of memory (`memory.max` / `memory.limit_in_bytes`).
    pub memory: Option<u64>,
    /// Processes (and threads) at once (`pids.max`).
    pub pids: Option<u64>,
    /// Microseconds of CPU time per [`CPU_PERIOD_US`] (`cpu.max` / `cpu.cfs_quota_us`).
    pub cpu_quota_us: Option<u64>,
}

impl Limits {
    /// The limits of `memory_limit`, `pids_limit` and `cpu_limit`; `None` when none is given.
    pub fn resolve(memory: Option<SizeArg>, pids: Option<i64>, cpus: Option<f64>) -> Result<Option<Limits>, Error> {
        if memory.is_none() && pids.is_none() && cpus.is_none() {
            return Ok(None);
        }
        let memory = memory.map(memory_bytes).transpose()?;
        let pids = match pids {
            Some(n) if !(1..=MAX_PIDS).contains(&n) => {
                return Err(Error::bad_option("pids_limit", format_args!("must be from 1 to {MAX_PIDS}, not {n}")));
            }
            n => n.map(|n| n as u64),
        };
        let cpu_quota_us = match cpus {
            Some(c) if !(MIN_CPUS..=MAX_CPUS).contains(&c) => {
                return Err(Error::bad_option(
                    "cpu_limit",
                    format_args!("must be a number of CPUs from {MIN_CPUS} to {MAX_CPUS} (0.5: half a CPU), not {c}"),
                ));
            }
            // Exact: CPU_PERIOD_US is far below 2^52.
            #[allow(clippy::cast_precision_loss)]
            c => c.map(|c| (c * CPU_PERIOD_US as f64).round() as u64),
        };
        Ok(Some(Limits { memory, pids, cpu_quota_us }))
    }
}

fn memory_bytes(arg: SizeArg) -> Result<u64, Error> {
    let (bytes, shown, unitless) = match arg {
        SizeArg::Bytes(n) if n < 0 => {
            return Err(Error::bad_option("memory_limit", format_args!("must be a positive size, not {n}")));
        }
        SizeArg::Bytes(n) => (n as u64, n.to_string(), true),
        SizeArg::Text(text) => {
            let unitless = text.bytes().all(|b| b.is_ascii_digit());
            (size::parse_option("memory_limit", &text)?, quoted(&text), unitless)
        }
    };
    if bytes < MIN_MEMORY {
        // A small number without a unit was most likely meant in megabytes.
        let why = if unitless { ": it is in bytes; '256M' is 256 MiB" } else { "" };
        return Err(Error::bad_option(
            "memory_limit",
            format_args!("must be at least 1M ({MIN_MEMORY} bytes), not {shown}{why}"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_given_is_no_cgroup() {
        assert_eq!(Limits::resolve(None, None, None), Ok(None));
    }

    #[test]
    fn values_become_what_the_kernel_takes() {
        let limits = Limits::resolve(Some(SizeArg::Text("64M".into())), Some(64), Some(0.25)).unwrap().unwrap();
        assert_eq!(limits, Limits { memory: Some(64 << 20), pids: Some(64), cpu_quota_us: Some(25_000) });
        let bytes = Limits::resolve(Some(SizeArg::Bytes(1 << 30)), None, None).unwrap().unwrap();
        assert_eq!(bytes.memory, Some(1 << 30));
    }

    #[test]
    fn bad_values_name_the_option() {
        let cases = [
            (Some(SizeArg::Text("12Q".into())), None, None, "memory_limit must be a number of bytes"),
            (Some(SizeArg::Bytes(-1)), None, None, "memory_limit must be a positive size, not -1"),
            (Some(SizeArg::Bytes(0)), None, None, "memory_limit must be at least 1M"),
            (Some(SizeArg::Text("256".into())), None, None, "not '256': it is in bytes"),
            (Some(SizeArg::Text("64K".into())), None, None, "bytes), not '64K'"),
            (None, Some(0), None, "pids_limit must be from 1"),
            (None, Some(-3), None, "not -3"),
            (None, None, Some(0.0), "cpu_limit must be a number of CPUs from 0.01"),
            (None, None, Some(-1.0), "not -1"),
            (None, None, Some(f64::NAN), "not NaN"),
            (None, None, Some(f64::INFINITY), "not inf"),
        ];
        for (memory, pids, cpus, needle) in cases {
            let err = Limits::resolve(memory, pids, cpus).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        }
    }
}
