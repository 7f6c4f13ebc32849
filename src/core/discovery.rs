//! The OpenID Provider's discovery document (OpenID Connect Discovery 1.0, RFC 8414): the
//! parts the filter uses, parsed and validated once.
//!
//! Fetching, sharing between workers and refreshing it is [`crate::core::docs`]'s job; which
//! endpoint and upstream a call goes to is [`crate::core::client_auth`]'s.

use serde::Deserialize;

use crate::core::idp::Endpoint;

/// The parts of the discovery document the filter uses, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub issuer: String,
    pub token_endpoint: Option<Endpoint>,
    pub introspection_endpoint: Option<Endpoint>,
    pub revocation_endpoint: Option<Endpoint>,
    pub userinfo_endpoint: Option<Endpoint>,
    pub authorization_endpoint: Option<Endpoint>,
    pub end_session_endpoint: Option<Endpoint>,
    pub jwks_uri: Option<Endpoint>,
    /// RFC 8705 section 5 `mtls_endpoint_aliases`.
    pub mtls_token_endpoint: Option<Endpoint>,
    pub mtls_introspection_endpoint: Option<Endpoint>,
    pub mtls_revocation_endpoint: Option<Endpoint>,
}

#[derive(Deserialize)]
struct RawMetadata {
    issuer: Option<String>,
    token_endpoint: Option<String>,
    introspection_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
    userinfo_endpoint: Option<String>,
    authorization_endpoint: Option<String>,
    end_session_endpoint: Option<String>,
    jwks_uri: Option<String>,
    #[serde(default)]
    mtls_endpoint_aliases: RawAliases,
}

#[derive(Deserialize, Default)]
struct RawAliases {
    token_endpoint: Option<String>,
    introspection_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
}

/// Which IdP endpoint a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Token,
    Introspection,
    Revocation,
}

impl Which {
    pub fn name(self) -> &'static str {
        match self {
            Which::Token => "token_endpoint",
            Which::Introspection => "introspection_endpoint",
            Which::Revocation => "revocation_endpoint",
        }
    }
}

impl Metadata {
    /// Parses and validates a discovery document for `issuer` (OIDC Discovery 4.3: the
    /// document's `issuer` must be identical to the configured one).
    pub fn parse(issuer: &str, body: &[u8]) -> Result<Metadata, String> {
        let raw: RawMetadata = serde_json::from_slice(body).map_err(|e| format!("discovery document is not valid JSON: {e}"))?;
        let found = raw.issuer.ok_or("discovery document has no `issuer`")?;
        if found.trim_end_matches('/') != issuer.trim_end_matches('/') {
            let shown: String = found.chars().filter(|c| !c.is_control()).take(200).collect();
            return Err(format!("discovery `issuer` is `{shown}`, configured `issuer` is `{issuer}`"));
        }
        let issuer = found;
        let ep = |name: &str, v: Option<String>| -> Result<Option<Endpoint>, String> {
            v.map(|u| Endpoint::parse(&u).map_err(|e| format!("discovery `{name}`: {e}"))).transpose()
        };
        Ok(Metadata {
            issuer,
            token_endpoint: ep("token_endpoint", raw.token_endpoint)?,
            introspection_endpoint: ep("introspection_endpoint", raw.introspection_endpoint)?,
            revocation_endpoint: ep("revocation_endpoint", raw.revocation_endpoint)?,
            userinfo_endpoint: ep("userinfo_endpoint", raw.userinfo_endpoint)?,
            authorization_endpoint: ep("authorization_endpoint", raw.authorization_endpoint)?,
            end_session_endpoint: ep("end_session_endpoint", raw.end_session_endpoint)?,
            jwks_uri: ep("jwks_uri", raw.jwks_uri)?,
            mtls_token_endpoint: ep("mtls_endpoint_aliases.token_endpoint", raw.mtls_endpoint_aliases.token_endpoint)?,
            mtls_introspection_endpoint: ep(
                "mtls_endpoint_aliases.introspection_endpoint",
                raw.mtls_endpoint_aliases.introspection_endpoint,
            )?,
            mtls_revocation_endpoint: ep("mtls_endpoint_aliases.revocation_endpoint", raw.mtls_endpoint_aliases.revocation_endpoint)?,
        })
    }

    /// The plain endpoint for `which`, and the RFC 8705 `mtls_endpoint_aliases` entry.
    pub fn endpoints(&self, which: Which) -> (Option<&Endpoint>, Option<&Endpoint>) {
        match which {
            Which::Token => (self.token_endpoint.as_ref(), self.mtls_token_endpoint.as_ref()),
            Which::Introspection => (self.introspection_endpoint.as_ref(), self.mtls_introspection_endpoint.as_ref()),
            Which::Revocation => (self.revocation_endpoint.as_ref(), self.mtls_revocation_endpoint.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://idp.example.com/";

    const DOC: &str = r#"{"issuer":"https://idp.example.com/","token_endpoint":"https://idp.example.com/token",
        "introspection_endpoint":"https://idp.example.com/introspect","jwks_uri":"https://idp.example.com/jwks",
        "mtls_endpoint_aliases":{"token_endpoint":"https://mtls.idp.example.com/token"}}"#;

    #[test]
    fn parses_endpoints_and_aliases() {
        let m = Metadata::parse(ISS, DOC.as_bytes()).unwrap();
        let (plain, alias) = m.endpoints(Which::Token);
        assert_eq!(plain.unwrap().url, "https://idp.example.com/token");
        assert_eq!(alias.unwrap().authority, "mtls.idp.example.com");
        assert_eq!(m.endpoints(Which::Introspection).1, None);
        assert_eq!(m.endpoints(Which::Revocation), (None, None));
    }

    #[test]
    fn issuer_mismatch_and_garbage_are_refused() {
        let e = Metadata::parse(ISS, br#"{"issuer":"https://evil.example.com"}"#).unwrap_err();
        assert!(e.contains("issuer"), "{e}");
        assert!(Metadata::parse(ISS, b"<html>").is_err());
        assert!(Metadata::parse(ISS, br#"{"issuer":"https://idp.example.com","token_endpoint":"nope"}"#).is_err());
        assert!(Metadata::parse(ISS, br#"{"token_endpoint":"https://idp.example.com/t"}"#).unwrap_err().contains("no `issuer`"));
    }
}
