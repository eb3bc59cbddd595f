//! Values people type on the command line and in config files, parsed one
//! way everywhere: durations (`250ms`, `5s`, `2m`, `1m30s`, `1h`, or a bare
//! number of seconds such as `7` or `1.5`) and byte sizes (`65536`, `64K`,
//! `64KiB`, `10M`, `1 GiB`: powers of 1024), and the bounded forms of both
//! that options refusing silly values share.

use std::time::Duration;

/// Parses a duration; humantime reads the units, a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("`{text}`: not a usable number of seconds"));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("`{text}`: {e}; expected a number and a unit: 250ms, 5s, 2m, 1h or 1m30s")
    })
}

/// How sizes are written, for error messages.
const SIZE_FORMS: &str = "write a number with an optional unit, e.g. 65536, 64KiB, 10MiB or 1GiB (K, M and G are powers of 1024)";

/// Parses a positive byte count with an optional binary unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], t[i..].trim()),
        None => (t, ""),
    };
    let factor: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: unknown size unit {unit:?}; {SIZE_FORMS}"
            ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a positive size; {SIZE_FORMS}"))
}

/// Parses a duration that must be longer than zero (`--duration`): a run
/// that ends as it starts records nothing.
pub fn parse_nonzero_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(format!(
            "`{}`: must be longer than zero, e.g. 30s, 10m or 2h",
            text.trim()
        ));
    }
    Ok(d)
}

/// Parses a duration of whole seconds, at least one (`--rotate-time`,
/// like tcpdump -G): `10s`, `5m`, `1h` or a bare `600`.
pub fn parse_whole_seconds(text: &str) -> Result<u64, String> {
    let d = parse_duration(text)?;
    if d.as_secs() == 0 || d.subsec_nanos() != 0 {
        return Err(format!(
            "`{}`: must be a whole number of seconds, at least 1, e.g. 10s, 5m or 1h",
            text.trim()
        ));
    }
    Ok(d.as_secs())
}

/// The smallest capture file size `--rotate-size` and capture size
/// `--ring` take: below it a run makes thousands of files for a few
/// exchanges (tcpdump -C counts in millions of bytes, too).
pub const MIN_CAPTURE_SIZE: u64 = 1 << 20;

/// Parses a capture size (`--rotate-size`, `--ring`) of at least
/// [`MIN_CAPTURE_SIZE`].
pub fn parse_capture_size(text: &str) -> Result<u64, String> {
    let size = parse_size(text)?;
    if size < MIN_CAPTURE_SIZE {
        return Err(format!(
            "{text:?} is too small: capture sizes are at least 1MiB, e.g. 100M or 2G"
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("5T").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn bounded_values_refuse_what_would_break_a_run() {
        assert_eq!(parse_nonzero_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_nonzero_duration("0s")
            .unwrap_err()
            .contains("longer than zero"));
        assert!(parse_nonzero_duration("0").is_err());
        assert_eq!(parse_whole_seconds("10s"), Ok(10));
        assert_eq!(parse_whole_seconds("5m"), Ok(300));
        assert_eq!(parse_whole_seconds("600"), Ok(600));
        assert!(parse_whole_seconds("0").is_err());
        assert!(parse_whole_seconds("1500ms").is_err());
        assert_eq!(parse_capture_size("1M"), Ok(1 << 20));
        assert_eq!(parse_capture_size("2G"), Ok(2 << 30));
        assert!(parse_capture_size("1")
            .unwrap_err()
            .contains("at least 1MiB"));
        assert!(parse_capture_size("1023K").is_err());
    }
}
