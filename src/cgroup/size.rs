//! Sizes as people write them: `"256M"`, `"1.5G"`, `"64K"`, a plain number of bytes. Units are binary (K is
//! 1024), as `docker --memory` and `systemd`'s `MemoryMax=` read them.

use crate::errors::{quoted, Error};

/// The multiplier of each unit letter.
const UNITS: [(char, u32); 5] = [('K', 10), ('M', 20), ('G', 30), ('T', 40), ('P', 50)];

/// The bytes `text` stands for: digits with an optional fraction, then an optional unit (`K`, `M`, `G`, `T`,
/// `P`, either case, optionally followed by `B` or `iB`; a lone `B` is bytes). A fraction of a byte is
/// dropped. `None` for anything else, or more than `u64` can hold.
#[must_use]
pub fn parse(text: &str) -> Option<u64> {
    let number_end = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || (number.contains('.') && fraction.is_empty()) {
        return None;
    }
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        unit => {
            let mut chars = unit.chars();
            let letter = chars.next()?;
            let (_, shift) = UNITS.iter().find(|(l, _)| *l == letter)?;
            if !matches!(chars.as_str(), "" | "B" | "IB") {
                return None;
            }
            *shift
        }
    };
    // Exact integer arithmetic: (whole.fraction) * 2^shift, as digits / 10^len(fraction).
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let bytes = digits.checked_mul(1u128 << shift)? / scale;
    u64::try_from(bytes).ok()
}

/// [`parse`], as the error an option gives: the option's name, the text, and what a size looks like.
pub fn parse_option(option: &'static str, text: &str) -> Result<u64, Error> {
    parse(text).ok_or_else(|| {
        Error::bad_option(
            option,
            format_args!(
                "must be a number of bytes or a size such as '256M', '1.5G' or '64K' (binary units), not {}",
                quoted(text)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_binary_units() {
        let cases = [
            ("0", 0),
            ("4096", 4096),
            ("64K", 64 << 10),
            ("64k", 64 << 10),
            ("256M", 256 << 20),
            ("256MiB", 256 << 20),
            ("256mb", 256 << 20),
            ("1.5G", 3 << 29),
            ("0.5K", 512),
            ("1.0001K", 1024),
            ("2T", 2 << 40),
            ("1P", 1 << 50),
            ("100B", 100),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse(text), Some(bytes), "{text}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for text in ["", "12Q", "-5M", "M", "1.", ".5G", "1..5G", "1e3", " 1M", "1M ", "1 M", "1KK", "1Bi", "1iB"] {
            assert_eq!(parse(text), None, "{text:?}");
        }
        // More than u64 holds.
        assert_eq!(parse("16384P"), None);
        assert_eq!(parse("99999999999999999999999"), None);
    }

    #[test]
    fn the_error_names_the_option_and_the_text() {
        let err = parse_option("memory_limit", "12Q").unwrap_err().to_string();
        assert!(err.starts_with("memory_limit must be") && err.contains("not '12Q'"), "{err}");
    }
}
