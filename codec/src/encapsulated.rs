//! The `Encapsulated` header (RFC 3507 section 4.4.1): which HTTP entities a
//! message carries and at which offsets into its encapsulated section; its
//! syntax, and the order and forms allowed per method and direction.

use crate::anomaly::AnomalyCode;
use crate::vocabulary::Method;

/// An entity named in `Encapsulated`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// `req-hdr`: an HTTP request head.
    ReqHdr,
    /// `res-hdr`: an HTTP response head.
    ResHdr,
    /// `req-body`: an HTTP request body (chunked).
    ReqBody,
    /// `res-body`: an HTTP response body (chunked).
    ResBody,
    /// `opt-body`: an OPTIONS response body (chunked).
    OptBody,
    /// `null-body`: no body follows.
    NullBody,
}

impl EntityKind {
    /// The token as written in `Encapsulated`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::ReqHdr => "req-hdr",
            EntityKind::ResHdr => "res-hdr",
            EntityKind::ReqBody => "req-body",
            EntityKind::ResBody => "res-body",
            EntityKind::OptBody => "opt-body",
            EntityKind::NullBody => "null-body",
        }
    }

    /// Whether this is a body entity (including `null-body`).
    pub fn is_body(self) -> bool {
        !matches!(self, EntityKind::ReqHdr | EntityKind::ResHdr)
    }
}

/// A parsed `Encapsulated` value: entities with their offsets, in the order
/// they were listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encapsulated {
    /// `(entity, offset)` pairs as listed.
    pub entities: Vec<(EntityKind, u64)>,
}

impl Encapsulated {
    /// The body entity (the last one listed, when it is a body), if any.
    pub fn body(&self) -> Option<EntityKind> {
        self.entities
            .last()
            .map(|(k, _)| *k)
            .filter(|k| k.is_body())
    }

    /// Whether a real body (not `null-body`) follows.
    pub fn has_body(&self) -> bool {
        matches!(self.body(), Some(k) if k != EntityKind::NullBody)
    }

    /// Whether `kind` is listed.
    pub fn has(&self, kind: EntityKind) -> bool {
        self.entities.iter().any(|(k, _)| *k == kind)
    }
}

/// Which message an `Encapsulated` value belongs to, for the form check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormContext<'a> {
    /// A request with this method.
    Request(&'a Method),
    /// A response (the decoder does not know which request it answers, so
    /// any response form is accepted).
    Response,
}

impl Encapsulated {
    /// Parses an `Encapsulated` value such as
    /// `req-hdr=0, res-hdr=137, res-body=296`. Every well-formed pair is
    /// kept; the error, if any, describes the first malformed one.
    pub fn parse(value: &[u8]) -> (Encapsulated, Option<String>) {
        let mut entities = Vec::with_capacity(4);
        let mut error = None;
        for item in value.split(|&b| b == b',') {
            let item = item.trim_ascii();
            let parsed = item.iter().position(|&b| b == b'=').and_then(|eq| {
                let kind = match item[..eq].trim_ascii() {
                    b"req-hdr" => EntityKind::ReqHdr,
                    b"res-hdr" => EntityKind::ResHdr,
                    b"req-body" => EntityKind::ReqBody,
                    b"res-body" => EntityKind::ResBody,
                    b"opt-body" => EntityKind::OptBody,
                    b"null-body" => EntityKind::NullBody,
                    _ => return None,
                };
                let digits = item[eq + 1..].trim_ascii();
                if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit)
                {
                    return None;
                }
                let offset = digits.iter().try_fold(0u64, |n, &d| {
                    n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                })?;
                Some((kind, offset))
            });
            match parsed {
                Some(pair) => entities.push(pair),
                None if error.is_none() => {
                    error = Some(format!(
                        "`{}` is not `entity=offset` with a known entity",
                        String::from_utf8_lossy(&item[..item.len().min(64)])
                    ));
                }
                None => {}
            }
        }
        (Encapsulated { entities }, error)
    }

    /// Checks order, offsets and form (RFC 3507 section 4.4.1); returns
    /// every violation found.
    pub fn check(&self, context: FormContext<'_>) -> Vec<(AnomalyCode, String)> {
        let mut found = Vec::new();
        let rank = |k: EntityKind| match k {
            EntityKind::ReqHdr => 0,
            EntityKind::ResHdr => 1,
            _ => 2,
        };
        let bodies = self.entities.iter().filter(|(k, _)| k.is_body()).count();
        let ranks_ok = self
            .entities
            .windows(2)
            .all(|w| rank(w[0].0) < rank(w[1].0));
        if bodies > 1 {
            found.push((
                AnomalyCode::EncapsulatedOrder,
                format!("{bodies} body entities; at most one is allowed"),
            ));
        } else if !ranks_ok {
            found.push((
                AnomalyCode::EncapsulatedOrder,
                format!(
                    "entities listed as {}; expected req-hdr, res-hdr, then the body, each once",
                    self.describe()
                ),
            ));
        }
        if !self.entities.windows(2).all(|w| w[0].1 < w[1].1) {
            found.push((
                AnomalyCode::EncapsulatedOffsetOrder,
                format!("offsets do not increase: {}", self.describe()),
            ));
        }
        if !self.form_allowed(context) {
            let whose = match context {
                FormContext::Request(m) => format!("a {} request", m.as_str()),
                FormContext::Response => "a response".to_string(),
            };
            found.push((
                AnomalyCode::EncapsulatedForm,
                format!("`{}` is not a form allowed in {whose}", self.describe()),
            ));
        }
        found
    }

    fn form_allowed(&self, context: FormContext<'_>) -> bool {
        use EntityKind::*;
        let req = self.has(ReqHdr);
        let res = self.has(ResHdr);
        let body = self.entities.iter().map(|(k, _)| *k).find(|k| k.is_body());
        let body_in = |allowed: &[EntityKind]| body.is_some_and(|b| allowed.contains(&b));
        match context {
            FormContext::Request(Method::Reqmod) => !res && body_in(&[ReqBody, NullBody]),
            FormContext::Request(Method::Respmod) => body_in(&[ResBody, NullBody]),
            FormContext::Request(Method::Options) => {
                !req && !res && (body.is_none() || body_in(&[OptBody, NullBody]))
            }
            FormContext::Request(Method::Other(_)) => true,
            FormContext::Response => {
                (!res && body_in(&[ReqBody, NullBody]))
                    || (!req && body_in(&[ResBody, NullBody]))
                    || (!req && !res && body_in(&[OptBody, NullBody]))
            }
        }
    }

    fn describe(&self) -> String {
        self.entities
            .iter()
            .map(|(k, o)| format!("{}={o}", k.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(value: &str, context: FormContext<'_>) -> Vec<AnomalyCode> {
        let (e, err) = Encapsulated::parse(value.as_bytes());
        assert!(err.is_none(), "{value}: {err:?}");
        e.check(context).into_iter().map(|(c, _)| c).collect()
    }

    #[test]
    fn valid_forms() {
        let req = FormContext::Request(&Method::Reqmod);
        let resp = FormContext::Request(&Method::Respmod);
        let opt = FormContext::Request(&Method::Options);
        let table: &[(&str, FormContext<'_>)] = &[
            ("req-hdr=0, req-body=100", req),
            ("req-hdr=0, null-body=100", req),
            ("req-body=0", req),
            ("req-hdr=0, res-hdr=100, res-body=200", resp),
            ("res-hdr=0, res-body=200", resp),
            ("res-body=0", resp),
            ("null-body=0", opt),
            ("opt-body=0", FormContext::Response),
            ("res-hdr=0, null-body=10", FormContext::Response),
            ("req-hdr=0, req-body=10", FormContext::Response),
        ];
        for (value, ctx) in table {
            assert!(codes(value, *ctx).is_empty(), "{value}");
        }
    }

    #[test]
    fn invalid_forms() {
        let req = FormContext::Request(&Method::Reqmod);
        let table: &[(&str, FormContext<'_>, AnomalyCode)] = &[
            (
                "req-body=0, req-hdr=10",
                req,
                AnomalyCode::EncapsulatedOrder,
            ),
            (
                "req-hdr=0, req-body=10, null-body=20",
                req,
                AnomalyCode::EncapsulatedOrder,
            ),
            (
                "req-hdr=50, req-body=10",
                req,
                AnomalyCode::EncapsulatedOffsetOrder,
            ),
            ("req-hdr=0, res-body=10", req, AnomalyCode::EncapsulatedForm),
            ("req-hdr=0", req, AnomalyCode::EncapsulatedForm),
            (
                "req-hdr=0, res-hdr=10, res-body=20",
                FormContext::Response,
                AnomalyCode::EncapsulatedForm,
            ),
        ];
        for (value, ctx, code) in table {
            assert!(codes(value, *ctx).contains(code), "{value}");
        }
    }

    #[test]
    fn syntax() {
        let (e, err) = Encapsulated::parse(b"req-hdr=0, bogus=5, null-body=x");
        assert_eq!(e.entities, vec![(EntityKind::ReqHdr, 0)]);
        assert!(err.is_some());
    }
}
