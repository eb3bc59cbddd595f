//! What a run leaves on disk for people and tools: one JSON record per
//! exchange and per connection (JSON Lines), and the run's summary. The
//! schema is documented in docs/log-schema.md; every record carries
//! `schema` = [`SCHEMA_VERSION`].

pub mod console;
pub mod directory;
pub mod records;
pub mod run;
pub mod summary;
pub mod writer;

/// Version of the record schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Formats microseconds since the UNIX epoch as RFC 3339 with microseconds.
pub fn rfc3339(micros: u64) -> String {
    let nanos = i128::from(micros) * 1000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| micros.to_string())
}
