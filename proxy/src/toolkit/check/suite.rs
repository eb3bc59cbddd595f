//! Vendor test suites for `icaptap check`: where the vendor's HTTP proxy
//! is, where icaptap's sensor listens (the ICAP services the vendor must be
//! configured with), and the cases to run, read from a TOML file. The
//! sensor's OPTIONS answer (RFC 3507 section 4.10) and its verdict rules
//! are derived from the suite, so a case and the sensor behaviour it needs
//! are written in one place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::toolkit::scenario::{Scenario, ScenarioError};
use crate::units::parse_duration;

/// The suite `icaptap check` runs when no file is given.
pub const DEFAULT_SUITE: &str = include_str!("default-suite.toml");

/// Where every test URL of a check lives on the origin; the sensor's rules
/// match case directories below it.
pub const URL_PREFIX: &str = "/icaptap-check/";

/// Why a suite could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// The file could not be read.
    #[error("cannot read suite file {path}: {source}; check the path given to icaptap check")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid suite.
    #[error("suite {origin} is invalid: {source}; see docs/toolkit.md, \"Vendor suites\"")]
    Parse {
        /// The file name, or `built-in`.
        origin: String,
        /// What the TOML parser said (with line and column).
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("suite {origin}: {what}; see docs/toolkit.md, \"Vendor suites\"")]
    Invalid {
        /// The file name, or `built-in`.
        origin: String,
        /// What is wrong.
        what: String,
    },
    /// The sensor scenario derived from the suite is invalid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
}

/// A whole suite.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// A name for the table and the JUnit report.
    pub name: String,
    /// The vendor's HTTP proxy, which every test download goes through.
    pub proxy: SocketAddr,
    /// Time allowed for one download.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// icaptap's sensor, as the vendor must be configured to use it.
    pub sensor: SensorSpec,
    /// The web origin serving the test files.
    #[serde(default)]
    pub origin: OriginSpec,
    /// The cases, run in order.
    #[serde(rename = "case")]
    pub cases: Vec<Case>,
}

/// The sensor icaptap plays (behind the in-process icaptap proxy, so
/// every exchange is also recorded).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorSpec {
    /// Where the vendor's ICAP client connects (loopback by default; the
    /// vendor configuration names this address).
    pub listen: SocketAddr,
    /// REQMOD service path.
    #[serde(default = "default_reqmod")]
    pub reqmod: String,
    /// RESPMOD service path.
    #[serde(default = "default_respmod")]
    pub respmod: String,
    /// `Preview` advertised in OPTIONS.
    #[serde(default = "default_preview")]
    pub preview: u64,
    /// `Max-Connections` advertised in OPTIONS.
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    /// `ISTag` (without quotes).
    #[serde(default = "default_istag")]
    pub istag: String,
    /// ICAP over TLS (`icaps://`): icaptap's listener speaks TLS with a
    /// certificate it generates into the check's output directory, which
    /// the vendor must trust.
    #[serde(default)]
    pub tls: bool,
    /// With `tls`: icaptap's certificate chain (PEM) instead of a generated
    /// one (one the vendor already trusts); with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert` (PEM).
    pub tls_key: Option<PathBuf>,
}

impl SensorSpec {
    /// `icaps` over TLS, else `icap`.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "icaps"
        } else {
            "icap"
        }
    }
}

/// The origin the test downloads come from.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginSpec {
    /// Listening address (port 0 picks a free one: the URLs carry it).
    pub listen: SocketAddr,
}

impl Default for OriginSpec {
    fn default() -> Self {
        OriginSpec {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// One case: a name and what to check.
#[derive(Clone, Debug, Deserialize)]
pub struct Case {
    /// Shown in the table and as the JUnit test name; defaults to the
    /// check's own description.
    pub name: Option<String>,
    /// What to check.
    #[serde(flatten)]
    pub check: Check,
}

/// What happens to the user when the sensor cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DownPolicy {
    /// Downloads are refused while the sensor is down.
    FailClosed,
    /// Downloads pass unscanned while the sensor is down (bypass).
    FailOpen,
}

impl DownPolicy {
    /// `fail-closed` or `fail-open`.
    pub fn as_str(self) -> &'static str {
        match self {
            DownPolicy::FailClosed => "fail-closed",
            DownPolicy::FailOpen => "fail-open",
        }
    }
}

/// The checks a case can make, each from what the user sees (status and
/// bytes of the download) and what the sensor saw (the recorded exchanges).
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "check", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Check {
    /// A clean file arrives byte for byte, and the sensor saw it.
    CleanIntact {
        /// File size in bytes.
        #[serde(default = "default_clean_size")]
        size: u64,
    },
    /// The EICAR test file does not reach the user.
    InfectedBlocked,
    /// A sensor taking `delay` to answer: the user still gets the file,
    /// and not before the verdict.
    SensorSlow {
        /// The sensor's delay before its verdict.
        #[serde(default = "default_slow_delay", deserialize_with = "duration")]
        delay: Duration,
    },
    /// The identity headers reach the sensor on every request of a
    /// download: `require` fails the case when absent, `want` only says so.
    IdentityHeaders {
        /// Headers that must be sent.
        #[serde(default)]
        require: Vec<String>,
        /// Headers reported when absent.
        #[serde(default)]
        want: Vec<String>,
    },
    /// A file larger than the preview: the vendor previews at most the
    /// advertised size, and sends the rest after `100 Continue`.
    PreviewHonoured {
        /// File size in bytes.
        #[serde(default = "default_preview_size")]
        size: u64,
    },
    /// Parallel downloads with a slow sensor: the vendor never holds more
    /// ICAP connections than `Max-Connections`.
    MaxConnections {
        /// Downloads started at once.
        #[serde(default = "default_downloads")]
        downloads: usize,
        /// The sensor's delay, so the downloads overlap.
        #[serde(default = "default_overlap_delay", deserialize_with = "duration")]
        delay: Duration,
    },
    /// The sensor is stopped, then a clean file is downloaded.
    SensorDown {
        /// What the user should see.
        expect: DownPolicy,
    },
}

impl Check {
    /// The check's identifier, as written in suites and JUnit class names.
    pub fn id(&self) -> &'static str {
        match self {
            Check::CleanIntact { .. } => "clean-intact",
            Check::InfectedBlocked => "infected-blocked",
            Check::SensorSlow { .. } => "sensor-slow",
            Check::IdentityHeaders { .. } => "identity-headers",
            Check::PreviewHonoured { .. } => "preview-honoured",
            Check::MaxConnections { .. } => "max-connections",
            Check::SensorDown { .. } => "sensor-down",
        }
    }

    /// A description for a case without a name.
    pub fn description(&self) -> String {
        match self {
            Check::CleanIntact { .. } => "clean file intact".to_owned(),
            Check::InfectedBlocked => "infected download blocked".to_owned(),
            Check::SensorSlow { delay } => format!("sensor slow ({delay:?})"),
            Check::IdentityHeaders { .. } => "identity headers sent".to_owned(),
            Check::PreviewHonoured { .. } => "preview honoured".to_owned(),
            Check::MaxConnections { .. } => "Max-Connections respected".to_owned(),
            Check::SensorDown { expect } => format!("sensor down ({})", expect.as_str()),
        }
    }
}

impl Case {
    /// The name shown for the case.
    pub fn title(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.check.description())
    }
}

/// The URL directory of case `index` (from 0): `/icaptap-check/N-ID/`.
pub fn case_dir(index: usize, check: &Check) -> String {
    format!("{URL_PREFIX}{}-{}/", index + 1, check.id())
}

impl Suite {
    /// Parses a suite; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Suite, SuiteError> {
        let suite: Suite = toml::from_str(text).map_err(|source| SuiteError::Parse {
            origin: origin.to_owned(),
            source,
        })?;
        suite.validate(origin)?;
        Ok(suite)
    }

    /// Reads a suite file.
    pub fn load(path: &Path) -> Result<Suite, SuiteError> {
        let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Suite::from_toml(&text, &path.display().to_string())
    }

    /// The shipped default suite.
    pub fn default_suite() -> Result<Suite, SuiteError> {
        Suite::from_toml(DEFAULT_SUITE, "built-in")
    }

    fn validate(&self, origin: &str) -> Result<(), SuiteError> {
        let invalid = |what: String| SuiteError::Invalid {
            origin: origin.to_owned(),
            what,
        };
        if self.cases.is_empty() {
            return Err(invalid("it has no [[case]]".to_owned()));
        }
        for path in [&self.sensor.reqmod, &self.sensor.respmod] {
            if !path.starts_with('/') {
                return Err(invalid(format!("service path {path:?} must start with /")));
            }
        }
        if self.sensor.tls_cert.is_some() != self.sensor.tls_key.is_some() {
            return Err(invalid(
                "sensor.tls_cert and sensor.tls_key go together: give both, or neither".to_owned(),
            ));
        }
        if self.sensor.tls_cert.is_some() && !self.sensor.tls {
            return Err(invalid(
                "sensor.tls_cert is given but sensor.tls is not true".to_owned(),
            ));
        }
        if self.sensor.max_connections == 0 {
            return Err(invalid(
                "sensor.max_connections must be at least 1".to_owned(),
            ));
        }
        for case in &self.cases {
            if let Check::MaxConnections { downloads, .. } = case.check {
                if downloads == 0 {
                    return Err(invalid(format!(
                        "case {:?}: downloads must be at least 1",
                        case.title()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The ICAP service URLs the vendor must be configured with.
    pub fn service_urls(&self) -> (String, String) {
        let at = self.sensor.listen;
        let scheme = self.sensor.scheme();
        (
            format!("{scheme}://{at}{}", self.sensor.reqmod),
            format!("{scheme}://{at}{}", self.sensor.respmod),
        )
    }

    /// The sensor's scenario: the suite's OPTIONS values, a delay rule per
    /// slow case, an echo (which asks for the rest after a preview) per
    /// preview case, then the built-in EICAR rule; anything else is clean.
    pub fn scenario(&self) -> Result<Scenario, SuiteError> {
        let s = &self.sensor;
        let mut text = format!(
            "[options]\nistag = {istag:?}\nservice = \"icaptap check sensor\"\n\
             max_connections = {max}\npreview = {preview}\nallow = [204]\n\
             transfer_preview = \"*\"\nx_include = [\"X-Client-IP\", \"X-Authenticated-User\"]\n\n\
             [[service]]\npath = {req:?}\nmethods = [\"REQMOD\"]\n\n\
             [[service]]\npath = {resp:?}\nmethods = [\"RESPMOD\"]\n",
            istag = s.istag,
            max = s.max_connections,
            preview = s.preview,
            req = s.reqmod,
            resp = s.respmod,
        );
        for (i, case) in self.cases.iter().enumerate() {
            let dir = case_dir(i, &case.check);
            let rule = match &case.check {
                Check::SensorSlow { delay } | Check::MaxConnections { delay, .. } => {
                    format!("action = \"clean\" }}\ndelay_ms = {}", delay.as_millis())
                }
                Check::PreviewHonoured { .. } => "action = \"echo\" }".to_owned(),
                _ => continue,
            };
            // Only RESPMOD is delayed or echoed: REQMOD of the same URL is
            // answered at once, so the case measures the response scan.
            text.push_str(&format!(
                "\n[[rule]]\nname = {name:?}\nmatch = {{ method = \"RESPMOD\", url = {dir:?} }}\nanswer = {{ {rule}\n",
                name = case.title(),
            ));
        }
        Ok(Scenario::from_toml(&text, "check suite")?)
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_reqmod() -> String {
    "/av/reqmod".to_owned()
}

fn default_respmod() -> String {
    "/av/respmod".to_owned()
}

fn default_preview() -> u64 {
    1024
}

fn default_max_connections() -> u64 {
    16
}

fn default_istag() -> String {
    "ICAPTAP-CHECK-1".to_owned()
}

/// `clean-intact`'s size without `size`: under 64 KiB, because the mock
/// sensor reads a whole body before it answers and Squid 5 stops sending a
/// body at 65,535 bytes until the sensor answers (docs/toolkit.md).
pub const DEFAULT_CLEAN_SIZE: u64 = 48 * 1024;

/// `preview-honoured`'s size without `size`: larger than the preview,
/// under 64 KiB for the same reason as [`DEFAULT_CLEAN_SIZE`].
pub const DEFAULT_PREVIEW_SIZE: u64 = 40_000;

fn default_clean_size() -> u64 {
    DEFAULT_CLEAN_SIZE
}

fn default_preview_size() -> u64 {
    DEFAULT_PREVIEW_SIZE
}

fn default_slow_delay() -> Duration {
    Duration::from_secs(3)
}

fn default_downloads() -> usize {
    24
}

fn default_overlap_delay() -> Duration {
    Duration::from_millis(700)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_suite_loads_and_its_scenario_is_valid() {
        let suite = Suite::default_suite().unwrap();
        let ids: Vec<&str> = suite.cases.iter().map(|c| c.check.id()).collect();
        for want in [
            "clean-intact",
            "infected-blocked",
            "sensor-slow",
            "identity-headers",
            "preview-honoured",
            "max-connections",
            "sensor-down",
        ] {
            assert!(ids.contains(&want), "default suite lacks {want}");
        }
        let scenario = suite.scenario().unwrap();
        assert!(scenario.eicar_rule);
        assert!(scenario.rules.len() >= 3);
    }

    #[test]
    fn sizes_default_to_what_the_shipped_suite_and_the_docs_say() {
        let base =
            "name = \"t\"\nproxy = \"127.0.0.1:3128\"\n[sensor]\nlisten = \"127.0.0.1:11344\"\n";
        let text = format!(
            "{base}[[case]]\ncheck = \"clean-intact\"\n[[case]]\ncheck = \"preview-honoured\"\n"
        );
        let suite = Suite::from_toml(&text, "x.toml").unwrap();
        let sizes: Vec<u64> = suite
            .cases
            .iter()
            .filter_map(|c| match c.check {
                Check::CleanIntact { size } | Check::PreviewHonoured { size } => Some(size),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, [DEFAULT_CLEAN_SIZE, DEFAULT_PREVIEW_SIZE]);
        // The shipped suite spells the same sizes out.
        let shipped = Suite::default_suite().unwrap();
        for case in &shipped.cases {
            match case.check {
                Check::CleanIntact { size } => assert_eq!(size, DEFAULT_CLEAN_SIZE),
                Check::PreviewHonoured { size } => assert_eq!(size, DEFAULT_PREVIEW_SIZE),
                _ => {}
            }
        }
        // Both stay below the 65,535 bytes Squid 5 sends before an answer.
        const { assert!(DEFAULT_CLEAN_SIZE < 65_535 && DEFAULT_PREVIEW_SIZE < 65_535) };
        // docs/toolkit.md's table of checks names the same defaults.
        let docs = include_str!("../../../../docs/toolkit.md");
        let kib = DEFAULT_CLEAN_SIZE / 1024;
        assert!(
            docs.contains(&format!("| `clean-intact` (`size`, {kib} KiB) |")),
            "docs/toolkit.md: clean-intact default"
        );
        assert!(
            docs.contains(&format!(
                "| `preview-honoured` (`size`, {DEFAULT_PREVIEW_SIZE}) |"
            )),
            "docs/toolkit.md: preview-honoured default"
        );
    }

    #[test]
    fn unknown_checks_and_bad_values_are_refused_with_the_origin() {
        let base =
            "name = \"t\"\nproxy = \"127.0.0.1:3128\"\n[sensor]\nlisten = \"127.0.0.1:11344\"\n";
        let bad = format!("{base}[[case]]\ncheck = \"no-such-check\"\n");
        let e = Suite::from_toml(&bad, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("no-such-check"), "{e}");
        let bad = format!("{base}[[case]]\ncheck = \"sensor-slow\"\ndelay = \"soon\"\n");
        assert!(Suite::from_toml(&bad, "x.toml").is_err());
        let bad = format!("{base}[[case]]\ncheck = \"sensor-down\"\nexpect = \"maybe\"\n");
        assert!(Suite::from_toml(&bad, "x.toml").is_err());
        let none = base.to_owned();
        assert!(Suite::from_toml(&none, "x.toml").is_err());
        let ok = format!("{base}[[case]]\ncheck = \"sensor-down\"\nexpect = \"fail-open\"\n");
        let suite = Suite::from_toml(&ok, "x.toml").unwrap();
        assert_eq!(suite.cases[0].title(), "sensor down (fail-open)");
        assert!(!suite.sensor.tls);
        assert!(suite.service_urls().0.starts_with("icap://"));
    }

    #[test]
    fn sensor_tls_makes_the_service_urls_icaps() {
        let text =
            "name = \"t\"\nproxy = \"127.0.0.1:3128\"\n[sensor]\nlisten = \"127.0.0.1:11344\"\n\
                    tls = true\n[[case]]\ncheck = \"clean-intact\"\n";
        let suite = Suite::from_toml(text, "x.toml").unwrap();
        assert!(suite.sensor.tls);
        assert_eq!(
            suite.service_urls(),
            (
                "icaps://127.0.0.1:11344/av/reqmod".to_owned(),
                "icaps://127.0.0.1:11344/av/respmod".to_owned()
            )
        );
        // The shipped suite says how to turn it on.
        assert!(DEFAULT_SUITE.contains("tls = false"), "{DEFAULT_SUITE}");
    }
}
