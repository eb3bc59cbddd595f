//! Findings: anomalies as they appear in records, whether the codec found
//! them in the bytes or a rule of the observer found them in timing, in the
//! way a connection ended, or across connections.
//!
//! Codec codes come from [`icap_codec::AnomalyCode`]; the observer's own
//! codes are [`RuleCode`]. Both are stable kebab-case strings, and
//! docs/anomalies.md describes every one.

use icap_codec::{Anomaly, AnomalyCode, Severity, Side};

macro_rules! rule_codes {
    ($( $(#[$doc:meta])* $variant:ident => $code:literal, $side:ident, $severity:ident; )*) => {
        /// Every anomaly the observer's rules report (beyond the codec's).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum RuleCode {
            $( $(#[$doc])* $variant, )*
        }

        impl RuleCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [RuleCode] = &[ $( RuleCode::$variant, )* ];

            /// The stable kebab-case code written in records.
            pub fn as_str(self) -> &'static str {
                match self { $( RuleCode::$variant => $code, )* }
            }

            /// Who is normally at fault.
            pub fn side(self) -> Side {
                match self { $( RuleCode::$variant => Side::$side, )* }
            }

            /// How bad it is.
            pub fn severity(self) -> Severity {
                match self { $( RuleCode::$variant => Severity::$severity, )* }
            }
        }
    };
}

rule_codes! {
    /// The sensor refused the connection or did not answer the connect.
    SensorUnreachable => "sensor-unreachable", Server, Error;
    /// icaptap hit its own open-file limit (EMFILE/ENFILE) opening the
    /// sensor leg: the client's connection was closed by icaptap's limit,
    /// not the sensor's. Blamed on neither peer: the side is the client's,
    /// the side icaptap stands on.
    IcaptapFdLimit => "icaptap-fd-limit", Client, Error;
    /// The client closed its connection, having sent nothing, before the
    /// sensor leg was up; icaptap stopped connecting.
    ClientGoneBeforeConnect => "client-gone-before-connect", Client, Info;
    /// icaptap's connection to the sensor came back to icaptap itself
    /// (a forwarding loop); icaptap closed it without forwarding.
    ForwardingLoop => "forwarding-loop", Server, Error;
    /// The ICAP client's TLS handshake with icaptap failed (it does not
    /// trust icaptap's certificate, no common version or cipher, ...).
    TlsClientHandshakeFailed => "tls-client-handshake-failed", Client, Error;
    /// The ICAP client sent plain ICAP to icaptap's TLS port.
    TlsPlainOnTlsPort => "tls-plain-on-tls-port", Client, Error;
    /// icaptap's TLS handshake with the sensor failed for a reason other
    /// than its certificate (an alert, no common version, the sensor
    /// closed, a plain sensor port).
    TlsSensorHandshakeFailed => "tls-sensor-handshake-failed", Server, Error;
    /// The sensor's TLS certificate has expired or is not valid yet.
    TlsCertificateExpired => "tls-certificate-expired", Server, Error;
    /// The sensor's TLS certificate chains to no trusted CA.
    TlsCertificateUntrusted => "tls-certificate-untrusted", Server, Error;
    /// The sensor's TLS certificate is not valid for the name asked for.
    TlsCertificateNameMismatch => "tls-certificate-name-mismatch", Server, Error;
    /// The sensor closed (FIN) the connection while a request waited for
    /// its verdict.
    ServerClosedBeforeResponse => "server-closed-before-response", Server, Error;
    /// The sensor reset the connection while a request waited for its
    /// verdict.
    ServerResetBeforeResponse => "server-reset-before-response", Server, Error;
    /// The sensor ended the connection after the client had gone idle
    /// mid-body: its own timeout answering the client's stall.
    ServerClosedStalledTransfer => "server-closed-stalled-transfer", Server, Info;
    /// The client closed or reset the connection before the verdict came.
    ClientClosedBeforeResponse => "client-closed-before-response", Client, Warn;
    /// The client ended the connection while a response body was coming;
    /// icaptap reset the sensor leg on its behalf.
    ClientClosedDuringResponse => "client-closed-during-response", Client, Info;
    /// No response head within the verdict timeout; the connection was left
    /// alone.
    VerdictTimeout => "verdict-timeout", Server, Error;
    /// A verdict arrived after the verdict timeout had already recorded the
    /// exchange as missing.
    VerdictLate => "verdict-late", Server, Warn;
    /// The verdict went missing on a reused (persistent) connection: the
    /// classic keep-alive race.
    ReusedConnectionClosed => "reused-connection-closed", Server, Warn;
    /// A preview without `ieof` got neither 100 Continue nor a verdict while
    /// both sides were idle: the server never answered the preview.
    PreviewDeadlock => "preview-deadlock", Server, Error;
    /// The server sent 100 Continue and the client sent nothing more.
    ContinueNotFollowed => "continue-not-followed", Client, Error;
    /// A message body stopped mid-way with both sides idle.
    TransferStall => "transfer-stall", Client, Error;
    /// The response was fully framed but the client stayed idle and closed
    /// much later, as if it waited for the end of the connection.
    ClientWaitedForEof => "client-waited-for-eof", Client, Warn;
    /// More concurrent connections to a sensor than its OPTIONS
    /// `Max-Connections`.
    MaxConnectionsExceeded => "max-connections-exceeded", Client, Warn;
    /// The sensor answered 503: overloaded.
    ServerOverloaded => "server-overloaded", Server, Warn;
    /// The sensor answered 404: the service path is wrong.
    ServiceNotFound => "service-not-found", Client, Error;
    /// The sensor answered 405: the method is not allowed on this service.
    MethodNotAllowed => "method-not-allowed", Client, Error;
    /// A method the service's OPTIONS `Methods` did not list.
    MethodNotAdvertised => "method-not-advertised", Client, Warn;
    /// The service's ISTag changed (signatures updated, or a restart).
    IstagChanged => "istag-changed", Server, Info;
    /// A header the service asked for in `X-Include` is absent.
    IdentityHeaderMissing => "identity-header-missing", Client, Warn;
    /// `X-Authenticated-User` or `X-Authenticated-Groups` is not valid base64.
    IdentityHeaderInvalid => "identity-header-invalid", Client, Warn;
    /// A REQMOD wrapping an HTTP CONNECT was answered with an HTTP page,
    /// which a client cannot show inside a tunnel.
    ConnectAnsweredWithPage => "connect-answered-with-page", Server, Warn;
    /// The EICAR test file passed as clean: the sensor is not scanning.
    EicarNotDetected => "eicar-not-detected", Server, Error;
    /// The observer fell behind and missed bytes of this connection; its
    /// exchanges are incompletely decoded (forwarding was not affected).
    ObserverDropped => "observer-dropped", Client, Warn;
    /// The capture holds no more packets of a connection that neither side
    /// ended, in the middle of an exchange: its end was not seen (tcpdump
    /// stopped, or the flow went quiet past the capture's flow expiry).
    /// Not a fault of either peer.
    CaptureEnded => "capture-ended", Client, Info;
}

/// One anomaly in a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The stable code.
    pub code: &'static str,
    /// Who caused it.
    pub side: Side,
    /// How bad it is.
    pub severity: Severity,
    /// What was seen.
    pub detail: String,
    /// Byte offset in the causing side's stream, when known.
    pub offset: Option<u64>,
}

impl Finding {
    /// A finding of a rule, with the code's default side.
    pub fn rule(code: RuleCode, detail: impl Into<String>) -> Finding {
        Finding::rule_on(code, code.side(), detail)
    }

    /// A finding of a rule blamed on `side`.
    pub fn rule_on(code: RuleCode, side: Side, detail: impl Into<String>) -> Finding {
        Finding {
            code: code.as_str(),
            side,
            severity: code.severity(),
            detail: detail.into(),
            offset: None,
        }
    }

    /// The same finding at stream offset `offset`.
    pub fn at(mut self, offset: u64) -> Finding {
        self.offset = Some(offset);
        self
    }

    /// Whether this finding has `code`.
    pub fn is(&self, code: RuleCode) -> bool {
        self.code == code.as_str()
    }
}

impl From<&Anomaly> for Finding {
    fn from(a: &Anomaly) -> Finding {
        Finding {
            code: a.code.as_str(),
            side: a.side,
            severity: a.severity(),
            detail: a.detail.clone(),
            offset: Some(a.offset),
        }
    }
}

/// Whether a codec anomaly means the response could not be decoded as
/// sent (its verdict is `malformed`).
pub fn breaks_response(code: AnomalyCode) -> bool {
    use AnomalyCode::*;
    matches!(
        code,
        StartLineInvalid
            | HeaderLineInvalid
            | LimitExceeded
            | EncapsulatedMissing
            | EncapsulatedSyntax
            | EncapsulatedOrder
            | EncapsulatedOffsetOrder
            | EncapsulatedForm
            | EncapsulatedOffsetMismatch
            | EncapsulatedEntityAbsent
            | HttpHeadInvalid
            | ChunkSizeInvalid
            | ChunkCrlfMissing
            | ChunkFinalMissing
            | MessageTruncated
            | IstagMissing
            | ContinueAfterIeof
            | ContinueWithoutPreview
            | Status204NotAllowed
            | Status206NotAllowed
            | ResponseUnsolicited
            | OptionsReplyInvalid
            | ResponseNotIcap
    )
}
