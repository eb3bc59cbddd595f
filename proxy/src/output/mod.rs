//! What a run leaves on disk for people and tools: one JSON record per
//! exchange and per connection (JSON Lines, optionally rotated and bounded:
//! [`logset`], [`log_rotation`], [`log_writer`]), and the run's summary. The
//! schema is documented in docs/log-schema.md; every record carries
//! `schema` = [`SCHEMA_VERSION`]. [`ecs`] writes the same records as
//! Elastic Common Schema events beside them (`--log-schema ecs`).

pub mod console;
pub mod directory;
pub mod ecs;
pub mod log_rotation;
pub mod log_writer;
pub mod logset;
pub mod records;
pub mod run;
pub mod summary;
pub mod terminal;
pub mod writer;

/// Version of the record schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Formats microseconds since the UNIX epoch as RFC 3339 in UTC with
/// exactly six fractional digits (`2026-11-28T11:25:49.884000Z`): every
/// record and summary time has the same width, so times sort as text and
/// shippers that expect a fixed layout parse them all.
pub fn rfc3339(micros: u64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    let nanos = i128::from(micros) * 1000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| micros.to_string())
}

/// Lower-case hexadecimal of `bytes`, as digests are written in records,
/// manifests and scenario files.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Reads an RFC 3339 time (as [`rfc3339`] writes it, or with any offset)
/// back into microseconds since the UNIX epoch.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_to_the_microsecond() {
        for micros in [0u64, 1, 1_764_323_821_402_311, 4_102_444_800_000_000] {
            assert_eq!(parse_rfc3339(&rfc3339(micros)), Some(micros));
        }
        assert_eq!(
            parse_rfc3339("2026-11-28T10:00:00+01:00"),
            parse_rfc3339("2026-11-28T09:00:00Z")
        );
        assert_eq!(parse_rfc3339("not a time"), None);
    }

    #[test]
    fn rfc3339_always_has_six_fractional_digits() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_795_865_149_884_000),
            "2026-11-28T11:25:49.884000Z"
        );
        assert_eq!(
            rfc3339(1_795_865_149_000_001),
            "2026-11-28T11:25:49.000001Z"
        );
        for micros in [0u64, 10, 1_000_000, 1_795_865_149_884_082] {
            let text = rfc3339(micros);
            let fraction = text.split('.').nth(1).unwrap();
            assert_eq!(fraction.len(), "884082Z".len(), "{text}");
        }
    }
}
