//! What the filter tells the host to do with the client's request: forward it (with header
//! changes) or answer it locally.

/// A local answer to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON answer with `content-type: application/json` and `cache-control: no-store`.
    pub fn json(status: u16, mut headers: Vec<(String, String)>, body: &serde_json::Value) -> Self {
        headers.push(("content-type".into(), "application/json".into()));
        headers.push(("cache-control".into(), "no-store".into()));
        Reply { status, headers, body: body.to_string().into_bytes() }
    }
}

/// Header changes to apply before the request goes upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forward {
    /// Headers removed first (lowercase names).
    pub remove: Vec<String>,
    /// Headers set (replacing any value) after the removals.
    pub set: Vec<(String, String)>,
    /// A new `:path` (a credential removed from the query).
    pub set_path: Option<String>,
    /// Headers added to the response the client gets.
    pub response_set: Vec<(String, String)>,
}
