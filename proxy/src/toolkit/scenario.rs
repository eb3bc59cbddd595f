//! Mock-sensor scenarios: what the sensor advertises in its OPTIONS answer
//! (RFC 3507 section 4.10) and which verdict it gives each REQMOD/RESPMOD
//! request (sections 4.8 and 4.9), read from a TOML file.
//!
//! Rules are tried in order and the first that matches wins. A rule's match
//! criteria are all optional (an empty match takes every request); its
//! answer is one [`Action`], optionally delayed. A built-in last rule
//! answers the EICAR test file as infected unless `eicar_rule = false`.
//! docs/toolkit.md describes the format; docs/toolkit-scenario.toml shows
//! every action.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

use super::sample::{EICAR, EICAR_THREAT};

mod matching;

pub use matching::{Decision, RequestFacts};

/// The scenario used when `--scenario` is not given.
pub const DEFAULT_SCENARIO: &str = include_str!("default-scenario.toml");

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario file {path}: {source}; check the path given to --scenario")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("scenario {origin} is invalid: {source}; see docs/toolkit.md for the format")]
    Parse {
        /// The file name, or `built-in`.
        origin: String,
        /// What the TOML parser said (with line and column).
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("scenario {origin}: {what}; see docs/toolkit.md for the allowed values")]
    Invalid {
        /// The file name, or `built-in`.
        origin: String,
        /// What is wrong.
        what: String,
    },
}

/// A whole scenario: OPTIONS answer, services, verdict rules and limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What OPTIONS answers advertise, and the ISTag of every answer.
    #[serde(default)]
    pub options: OptionsConfig,
    /// Known services; requests to other paths are served with every method.
    #[serde(default = "default_services", rename = "service")]
    pub services: Vec<ServiceConfig>,
    /// Verdict rules, first match wins.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
    /// Whether the built-in EICAR rule is appended after the rules.
    #[serde(default = "default_true")]
    pub eicar_rule: bool,
    /// Memory and connection bounds.
    #[serde(default)]
    pub limits: SensorLimits,
}

/// What OPTIONS answers carry (RFC 3507 section 4.10.2).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptionsConfig {
    /// ISTag without quotes (at most 30 bytes; the quotes make 32).
    pub istag: String,
    /// After every N REQMOD/RESPMOD requests the ISTag gets a new
    /// generation suffix (`-1`, `-2`...), as after a signature update or a
    /// restart. 0 never changes it.
    pub istag_change_every: u64,
    /// `Service`: the server's description.
    pub service: String,
    /// `Service-ID`.
    pub service_id: Option<String>,
    /// `Max-Connections`.
    pub max_connections: Option<u64>,
    /// `Options-TTL` in seconds.
    pub options_ttl: Option<u64>,
    /// `Allow` codes, e.g. `[204]` or `[204, 206]`; empty sends no `Allow`.
    pub allow: Vec<u16>,
    /// `Preview` in bytes; none sends no `Preview`.
    pub preview: Option<u64>,
    /// `Transfer-Preview` (file extensions or `*`).
    pub transfer_preview: Option<String>,
    /// `Transfer-Ignore`.
    pub transfer_ignore: Option<String>,
    /// `Transfer-Complete`.
    pub transfer_complete: Option<String>,
    /// `X-Include`: headers the sensor asks clients to send.
    pub x_include: Vec<String>,
}

impl Default for OptionsConfig {
    fn default() -> Self {
        OptionsConfig {
            istag: "ICAPTAP-1".to_owned(),
            istag_change_every: 0,
            service: "icaptap mock sensor".to_owned(),
            service_id: None,
            max_connections: Some(100),
            options_ttl: Some(3600),
            allow: vec![204],
            preview: Some(1024),
            transfer_preview: Some("*".to_owned()),
            transfer_ignore: None,
            transfer_complete: None,
            x_include: vec!["X-Client-IP".to_owned(), "X-Authenticated-User".to_owned()],
        }
    }
}

/// One service path and the methods it takes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The path, e.g. `/av/respmod`.
    pub path: String,
    /// `REQMOD`, `RESPMOD` (OPTIONS is always served).
    pub methods: Vec<String>,
}

fn default_services() -> Vec<ServiceConfig> {
    vec![
        ServiceConfig {
            path: "/av/reqmod".to_owned(),
            methods: vec!["REQMOD".to_owned()],
        },
        ServiceConfig {
            path: "/av/respmod".to_owned(),
            methods: vec!["RESPMOD".to_owned()],
        },
        ServiceConfig {
            path: "/echo".to_owned(),
            methods: vec!["REQMOD".to_owned(), "RESPMOD".to_owned()],
        },
    ]
}

fn default_true() -> bool {
    true
}

/// Bounds that keep the sensor's memory finite whatever clients send.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SensorLimits {
    /// Body bytes kept per request for matching and echoing. A longer body
    /// is still hashed and counted; it can be answered 204 or by any
    /// action that does not echo it, and echoing it answers 500.
    pub max_body_bytes: usize,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Seconds a connection may stay idle between reads.
    pub idle_timeout_secs: u64,
}

impl Default for SensorLimits {
    fn default() -> Self {
        SensorLimits {
            max_body_bytes: 16 * 1024 * 1024,
            max_connections: 1024,
            idle_timeout_secs: 300,
        }
    }
}

/// One verdict rule.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A name printed in the sensor's log.
    #[serde(default)]
    pub name: Option<String>,
    /// What a request must look like; every given criterion must hold.
    #[serde(default, rename = "match")]
    pub when: RuleMatch,
    /// What to answer.
    pub answer: Action,
    /// Milliseconds to wait before answering (combines with any action).
    #[serde(default)]
    pub delay_ms: u64,
}

impl Rule {
    /// The rule's name, or `rule N` (1-based position).
    pub fn label(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("rule {}", index + 1))
    }
}

/// Match criteria of a rule; absent ones are not checked.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    /// Exact service path, e.g. `/av/respmod`.
    pub service: Option<String>,
    /// `REQMOD` or `RESPMOD`.
    pub method: Option<String>,
    /// Regular expression searched in the encapsulated request URL.
    pub url: Option<UrlPattern>,
    /// Text searched in the body.
    pub body_contains: Option<ContentPattern>,
    /// SHA-256 of the whole body, in hexadecimal.
    pub body_sha256: Option<Sha256Hex>,
    /// Smallest whole-body size in bytes.
    pub size_min: Option<u64>,
    /// Largest whole-body size in bytes.
    pub size_max: Option<u64>,
}

/// A compiled URL regular expression.
#[derive(Clone, Debug)]
pub struct UrlPattern(pub regex::Regex);

impl<'de> Deserialize<'de> for UrlPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        regex::Regex::new(&text)
            .map(UrlPattern)
            .map_err(|e| serde::de::Error::custom(format!("url regex {text:?}: {e}")))
    }
}

/// A literal byte string searched in bodies.
#[derive(Clone, Debug)]
pub struct ContentPattern(pub regex::bytes::Regex);

impl ContentPattern {
    /// A pattern matching the byte string `literal` anywhere.
    pub fn literal(literal: &[u8]) -> Result<Self, regex::Error> {
        // Every byte written as \xNN with Unicode off: any byte string.
        let escaped: String = literal.iter().map(|b| format!("\\x{b:02x}")).collect();
        regex::bytes::Regex::new(&format!("(?-u){escaped}")).map(ContentPattern)
    }
}

impl<'de> Deserialize<'de> for ContentPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ContentPattern::literal(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("body_contains {text:?}: {e}")))
    }
}

/// A SHA-256 digest given in hexadecimal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sha256Hex(pub [u8; 32]);

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_sha256(&text).map(Sha256Hex).ok_or_else(|| {
            serde::de::Error::custom(format!("body_sha256 {text:?} is not 64 hexadecimal digits"))
        })
    }
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 of `data` in lowercase hexadecimal, as rules write it.
pub fn sha256_hex(data: &[u8]) -> String {
    crate::output::hex(&Sha256::digest(data))
}

/// What the sensor answers.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Action {
    /// 204 when allowed (inside a preview, or `Allow: 204`), else 200 echo.
    Clean,
    /// 200 with the encapsulated message unchanged.
    Echo,
    /// 200 with an HTTP block page (403 unless `status` says otherwise).
    Block {
        /// HTTP status of the block page.
        #[serde(default = "default_block_status")]
        status: u16,
        /// The page's HTML; a built-in page when absent.
        #[serde(default)]
        page: Option<String>,
    },
    /// 200 with a block page and a vendor-style infection header.
    Infected {
        /// The threat name.
        #[serde(default = "default_threat")]
        threat: String,
        /// Which vendor header to send.
        #[serde(default)]
        style: InfectionStyle,
    },
    /// An ICAP error status (500 by default; 503 means overloaded).
    Error {
        /// The ICAP status code.
        #[serde(default = "default_error_status")]
        status: u16,
        /// The reason phrase; a standard one when absent.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Close the connection (FIN) instead of answering.
    Close,
    /// Reset the connection (RST) instead of answering.
    Reset,
    /// Never answer; keep the connection open (after a preview, the
    /// classic deadlock).
    Silence,
    /// A deliberately broken answer.
    Malformed {
        /// Which violation.
        defect: Defect,
    },
}

fn default_block_status() -> u16 {
    403
}

fn default_threat() -> String {
    EICAR_THREAT.to_owned()
}

fn default_error_status() -> u16 {
    500
}

impl Action {
    /// Whether answering needs the whole body (echoing it), so a preview
    /// must be continued first.
    pub fn needs_whole_body(&self) -> bool {
        match self {
            Action::Echo => true,
            Action::Malformed { defect } => defect.needs_whole_body(),
            _ => false,
        }
    }

    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Clean => "clean",
            Action::Echo => "echo",
            Action::Block { .. } => "block",
            Action::Infected { .. } => "infected",
            Action::Error { .. } => "error",
            Action::Close => "close",
            Action::Reset => "reset",
            Action::Silence => "silence",
            Action::Malformed { .. } => "malformed",
        }
    }
}

/// Vendor styles of reporting an infection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InfectionStyle {
    /// `X-Infection-Found: Type=0; Resolution=2; Threat=NAME;` (draft
    /// ICAP extensions; Symantec, McAfee, ESET, Trend Micro).
    #[default]
    XInfectionFound,
    /// `X-Virus-ID: NAME` (Kaspersky, Sophos, c-icap clamav module).
    XVirusId,
    /// `X-Violations-Found: 1` with folded detail lines (c-icap, Squid's
    /// reading of the draft).
    XViolationsFound,
    /// `X-Response-Info: Blocked` with `X-Response-Desc` and
    /// `X-Blocked-Reason: Infected`, the threat in `X-Virus-ID`
    /// (MetaDefender).
    XResponseInfo,
}

/// Deliberate protocol violations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Defect {
    /// A 200 echo whose `Encapsulated` body offset misses the end of the
    /// HTTP head.
    BadEncapsulatedOffsets,
    /// `100 Continue` although the preview carried `ieof`, then a 204.
    ContinueAfterIeof,
    /// 204 to a request without `Allow: 204`, after the whole body.
    #[serde(rename = "204-without-allow")]
    NoContentWithoutAllow,
    /// A 204 (or 200 echo) without `ISTag`.
    MissingIstag,
    /// A 200 echo whose chunked body has a non-hexadecimal chunk size.
    BrokenChunking,
}

impl Defect {
    fn needs_whole_body(self) -> bool {
        // Every defect but `continue-after-ieof` answers after the whole
        // body: they echo it, or (204 without Allow) must be outside the
        // preview to be a violation at all.
        !matches!(self, Defect::ContinueAfterIeof)
    }
}

impl Scenario {
    /// The built-in default scenario.
    pub fn default_scenario() -> Result<Scenario, ScenarioError> {
        Scenario::from_toml(DEFAULT_SCENARIO, "built-in")
    }

    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Scenario::from_toml(&text, &path.display().to_string())
    }

    /// Parses and checks a scenario; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let mut scenario: Scenario =
            toml::from_str(text).map_err(|source| ScenarioError::Parse {
                origin: origin.to_owned(),
                source,
            })?;
        scenario.check(origin)?;
        if scenario.eicar_rule {
            scenario.rules.push(Rule {
                name: Some("eicar (built in)".to_owned()),
                when: RuleMatch {
                    body_contains: Some(ContentPattern::literal(EICAR).map_err(|e| {
                        ScenarioError::Invalid {
                            origin: origin.to_owned(),
                            what: format!("built-in EICAR pattern: {e}"),
                        }
                    })?),
                    ..RuleMatch::default()
                },
                answer: Action::Infected {
                    threat: EICAR_THREAT.to_owned(),
                    style: InfectionStyle::XInfectionFound,
                },
                delay_ms: 0,
            });
        }
        Ok(scenario)
    }

    fn check(&self, origin: &str) -> Result<(), ScenarioError> {
        let invalid = |what: String| ScenarioError::Invalid {
            origin: origin.to_owned(),
            what,
        };
        let istag = &self.options.istag;
        if istag.len() > 30 || istag.contains('"') || istag.chars().any(|c| c.is_control()) {
            return Err(invalid(format!(
                "options.istag {istag:?} must be at most 30 bytes without quotes or control characters"
            )));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            match &rule.answer {
                Action::Error { status, .. } if !(400..=599).contains(status) => {
                    return Err(invalid(format!(
                        "{}: error status {status} is not 400..599",
                        rule.label(i)
                    )));
                }
                Action::Block { status, .. } if !(100..=599).contains(status) => {
                    return Err(invalid(format!(
                        "{}: block status {status} is not an HTTP status",
                        rule.label(i)
                    )));
                }
                _ => {}
            }
        }
        if self.limits.max_connections == 0 {
            return Err(invalid(
                "limits.max_connections must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }

    /// The methods `path` accepts, or `None` when it is not a configured
    /// service (then every method is served).
    pub fn service_methods(&self, path: &str) -> Option<&[String]> {
        self.services
            .iter()
            .find(|s| s.path == path)
            .map(|s| s.methods.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use icap_codec::Method;

    fn facts<'a>(body: &'a [u8], complete: bool, sha: Option<&'a [u8; 32]>) -> RequestFacts<'a> {
        RequestFacts {
            method: &Method::Respmod,
            service: "/av/respmod",
            url: Some("http://example.test/file.bin"),
            body,
            body_len: body.len() as u64,
            body_complete: complete,
            sha256: sha,
        }
    }

    #[test]
    fn default_scenario_parses_and_has_the_eicar_rule_last() {
        let s = Scenario::default_scenario().unwrap();
        assert!(s.rules.last().unwrap().name.as_deref() == Some("eicar (built in)"));
        assert_eq!(s.service_methods("/av/respmod").unwrap(), ["RESPMOD"]);
    }

    #[test]
    fn eicar_decides_on_preview_clean_needs_body() {
        let s = Scenario::from_toml("", "test").unwrap();
        assert!(
            matches!(s.decide(&facts(EICAR, false, None)), Decision::Matched(_, r) if matches!(r.answer, Action::Infected{..}))
        );
        assert!(matches!(
            s.decide(&facts(b"hello", false, None)),
            Decision::NeedBody
        ));
        assert!(matches!(
            s.decide(&facts(b"hello", true, None)),
            Decision::NoRule
        ));
    }

    #[test]
    fn first_match_wins_and_criteria_combine() {
        let text = r#"
            eicar_rule = false
            [[rule]]
            name = "big"
            match = { size_min = 10, url = "file\\.bin$" }
            answer = { action = "error", status = 503 }
            [[rule]]
            match = { service = "/av/respmod" }
            answer = { action = "block" }
            delay_ms = 5
        "#;
        let s = Scenario::from_toml(text, "test").unwrap();
        match s.decide(&facts(b"0123456789ab", true, None)) {
            Decision::Matched(0, r) => {
                assert!(matches!(r.answer, Action::Error { status: 503, .. }))
            }
            other => panic!("{other:?}"),
        }
        match s.decide(&facts(b"short", true, None)) {
            Decision::Matched(1, r) => assert_eq!(r.delay_ms, 5),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sha256_rule_needs_the_complete_body() {
        let body = b"exact content";
        let digest: [u8; 32] = Sha256::digest(body).into();
        let text = format!(
            "[[rule]]\nmatch = {{ body_sha256 = \"{}\" }}\nanswer = {{ action = \"infected\", threat = \"Hash.Hit\", style = \"x-virus-id\" }}\n",
            sha256_hex(body)
        );
        let s = Scenario::from_toml(&text, "test").unwrap();
        assert!(matches!(
            s.decide(&facts(body, false, None)),
            Decision::NeedBody
        ));
        assert!(matches!(
            s.decide(&facts(body, true, Some(&digest))),
            Decision::Matched(0, _)
        ));
    }

    #[test]
    fn bad_values_are_rejected_with_the_origin() {
        let err = Scenario::from_toml(
            "[[rule]]\nanswer = { action = \"error\", status = 200 }\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("x.toml") && err.contains("200"), "{err}");
        let err = Scenario::from_toml("[[rule]]\nanswer = { action = \"explode\" }\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("explode"), "{err}");
        assert!(Scenario::from_toml(
            "[[rule]]\nmatch = { url = \"(\" }\nanswer = { action = \"clean\" }\n",
            "x"
        )
        .is_err());
    }
}
