//! The `Encapsulated` header (RFC 3507 section 4.4.1): which HTTP entities a
//! message carries and at which offsets into its encapsulated section.

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
