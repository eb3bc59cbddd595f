//! OPTIONS responses (RFC 3507 section 4.10): the service's capabilities,
//! parsed into a typed struct.

use bytes::Bytes;

/// What an OPTIONS response says about a service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptionsInfo {
    /// `Methods`: the methods the service supports.
    pub methods: Vec<String>,
    /// `Service`: a description of the server software.
    pub service: Option<String>,
    /// `ISTag`, quotes included.
    pub istag: Option<Bytes>,
    /// `Max-Connections`.
    pub max_connections: Option<u64>,
    /// `Options-TTL` in seconds.
    pub options_ttl: Option<u64>,
    /// `Allow: 204`.
    pub allow_204: bool,
    /// `Allow: 206`.
    pub allow_206: bool,
    /// `Preview`: bytes the server wants to see first.
    pub preview: Option<u64>,
    /// `Transfer-Preview` file extensions.
    pub transfer_preview: Vec<String>,
    /// `Transfer-Ignore` file extensions.
    pub transfer_ignore: Vec<String>,
    /// `Transfer-Complete` file extensions.
    pub transfer_complete: Vec<String>,
    /// `Service-ID`.
    pub service_id: Option<String>,
    /// `X-Include`: headers the server wants in every request.
    pub x_include: Vec<String>,
}
