//! OpenID Provider metadata: fetching, validating, choosing endpoints, and sharing the
//! document between Envoy workers.
//!
//! Each Envoy worker runs its own Wasm VM, so the discovery document is fetched by one of
//! them and shared through the host's shared data. The protocol is plain data here:
//! [`Record`] is what is stored, [`Lease`] is the small "who may fetch, and not before when"
//! value that every worker competes for with compare-and-swap. The lease doubles as the
//! retry backoff when the IdP is down.

use serde::Deserialize;

use crate::core::client_auth::ClientAuth;
use crate::core::config::Plan;
use crate::core::idp::{Endpoint, IdpRequest, Purpose};

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
    /// Parses and validates a discovery document for `plan.issuer` (OIDC Discovery 4.3:
    /// the `issuer` must be identical to the configured one).
    pub fn parse(plan: &Plan, body: &[u8]) -> Result<Metadata, String> {
        let raw: RawMetadata =
            serde_json::from_slice(body).map_err(|e| format!("discovery document is not valid JSON: {e}"))?;
        let issuer = raw.issuer.ok_or("discovery document has no `issuer`")?;
        if issuer.trim_end_matches('/') != plan.issuer.trim_end_matches('/') {
            let shown: String = issuer.chars().filter(|c| !c.is_control()).take(200).collect();
            return Err(format!("discovery `issuer` is `{shown}`, configured `issuer` is `{}`", plan.issuer));
        }
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
            mtls_revocation_endpoint: ep(
                "mtls_endpoint_aliases.revocation_endpoint",
                raw.mtls_endpoint_aliases.revocation_endpoint,
            )?,
        })
    }

    /// The endpoint and Envoy cluster for a call to `which` authenticated with `auth`.
    ///
    /// TLS-client-authenticated calls use, in order: the configured `mtls_*_endpoint`, the
    /// discovered `mtls_endpoint_aliases` entry, the plain endpoint; and always the
    /// `tls_client_auth_cluster`. Other calls use the plain endpoint and `idp_cluster`.
    pub fn route<'a>(&'a self, plan: &'a Plan, which: Which, auth: ClientAuth) -> Option<(&'a str, &'a Endpoint)> {
        let (plain, alias, configured) = match which {
            Which::Token => (&self.token_endpoint, &self.mtls_token_endpoint, &plan.mtls.token),
            Which::Introspection => (
                &self.introspection_endpoint,
                &self.mtls_introspection_endpoint,
                &plan.mtls.introspection,
            ),
            Which::Revocation => (&self.revocation_endpoint, &self.mtls_revocation_endpoint, &plan.mtls.revocation),
        };
        let endpoint = if auth.is_tls() {
            configured.as_ref().or(alias.as_ref()).or(plain.as_ref())
        } else {
            plain.as_ref()
        }?;
        Some((plan.cluster_for(auth), endpoint))
    }
}

/// The discovery request.
pub fn request(plan: &Plan) -> IdpRequest {
    IdpRequest::get(Purpose::Discovery, &plan.idp_cluster, &plan.discovery, plan.timeout_ms)
}

/// The JWKS request, when the IdP publishes a `jwks_uri`.
pub fn jwks_request(plan: &Plan, meta: &Metadata) -> Option<IdpRequest> {
    meta.jwks_uri
        .as_ref()
        .map(|uri| IdpRequest::get(Purpose::Jwks, &plan.idp_cluster, uri, plan.timeout_ms))
}

/// How long a shared document is used before one worker refreshes it.
pub const REFRESH_AFTER_MS: u64 = 3_600_000;
/// First retry delay when the IdP is down; doubles up to [`MAX_BACKOFF_MS`].
pub const MIN_BACKOFF_MS: u64 = 500;
pub const MAX_BACKOFF_MS: u64 = 30_000;

/// A document in shared data: when it was fetched, then the raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub fetched_at_ms: u64,
    pub body: &'a [u8],
}

impl<'a> Record<'a> {
    pub fn encode(fetched_at_ms: u64, body: &[u8]) -> Vec<u8> {
        let mut out = format!("{fetched_at_ms}\n").into_bytes();
        out.extend_from_slice(body);
        out
    }

    pub fn decode(bytes: &'a [u8]) -> Option<Record<'a>> {
        let nl = bytes.iter().position(|b| *b == b'\n')?;
        let (head, body) = (bytes.get(..nl)?, bytes.get(nl + 1..)?);
        let fetched_at_ms = std::str::from_utf8(head).ok()?.parse().ok()?;
        Some(Record { fetched_at_ms, body })
    }

    pub fn stale(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.fetched_at_ms) >= REFRESH_AFTER_MS
    }
}

/// The fetch lease: the holder may fetch until `until_ms`; after a failure the holder
/// extends it to the retry time, so nobody fetches before the backoff has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub holder: u64,
    pub until_ms: u64,
    /// Consecutive failures so far (sets the next backoff).
    pub failures: u32,
}

impl Lease {
    pub fn encode(&self) -> Vec<u8> {
        format!("{} {} {}", self.holder, self.until_ms, self.failures).into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<Lease> {
        let s = std::str::from_utf8(bytes).ok()?;
        let mut it = s.split(' ');
        let lease = Lease {
            holder: it.next()?.parse().ok()?,
            until_ms: it.next()?.parse().ok()?,
            failures: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(lease)
    }

    /// Whether `me` may take the lease now (free, expired, or unreadable).
    pub fn claimable(current: Option<&[u8]>, now_ms: u64) -> bool {
        match current.filter(|b| !b.is_empty()).map(Lease::decode) {
            None => true,
            Some(None) => true,
            Some(Some(l)) => now_ms >= l.until_ms,
        }
    }

    /// Whether an early re-fetch may take the lease (a key the JWKS does not have): only
    /// from a holder that succeeded (not during someone's fetch, nor during a backoff).
    pub fn claimable_early(current: Option<&[u8]>, now_ms: u64, timeout_ms: u64) -> bool {
        match current.and_then(Lease::decode) {
            None => true,
            Some(l) => now_ms >= l.until_ms || (l.failures == 0 && l.until_ms > now_ms + 2 * timeout_ms),
        }
    }

    /// The lease `me` writes to start a fetch, keeping the failure count of the old one.
    pub fn take(current: Option<&[u8]>, me: u64, now_ms: u64, timeout_ms: u64) -> Lease {
        let failures = current.and_then(Lease::decode).map(|l| l.failures).unwrap_or(0);
        // Twice the call timeout: a holder that died mid-fetch frees the lease soon.
        Lease { holder: me, until_ms: now_ms + 2 * timeout_ms, failures }
    }

    /// After a failed fetch: hold the lease until the backoff has passed.
    pub fn failed(self, now_ms: u64) -> Lease {
        let failures = self.failures.saturating_add(1);
        let backoff = MIN_BACKOFF_MS
            .saturating_mul(1u64 << failures.saturating_sub(1).min(16))
            .min(MAX_BACKOFF_MS);
        Lease { holder: self.holder, until_ms: now_ms + backoff, failures }
    }

    /// After a successful fetch: nobody needs to fetch until the document is stale.
    pub fn succeeded(self, now_ms: u64) -> Lease {
        Lease { holder: self.holder, until_ms: now_ms + REFRESH_AFTER_MS, failures: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(extra: &str) -> Plan {
        Plan::parse(format!("issuer: https://idp.example.com/\nidp_cluster: idp\nclient_id: c\n{extra}").as_bytes()).unwrap()
    }

    const DOC: &str = r#"{"issuer":"https://idp.example.com/","token_endpoint":"https://idp.example.com/token",
        "introspection_endpoint":"https://idp.example.com/introspect","jwks_uri":"https://idp.example.com/jwks",
        "mtls_endpoint_aliases":{"token_endpoint":"https://mtls.idp.example.com/token"}}"#;

    #[test]
    fn parses_and_routes_mtls_calls_to_aliases() {
        let p = plan("client_auth: tls_client_auth\ntls_client_auth_cluster: idp-mtls\n");
        let m = Metadata::parse(&p, DOC.as_bytes()).unwrap();
        let (cluster, ep) = m.route(&p, Which::Token, p.token_auth).unwrap();
        assert_eq!((cluster, ep.authority.as_str(), ep.path.as_str()), ("idp-mtls", "mtls.idp.example.com", "/token"));
        // no alias published for introspection: the plain endpoint, still through the mTLS cluster
        let (cluster, ep) = m.route(&p, Which::Introspection, p.introspection_auth).unwrap();
        assert_eq!((cluster, ep.url.as_str()), ("idp-mtls", "https://idp.example.com/introspect"));
        assert!(m.route(&p, Which::Revocation, p.revocation_auth).is_none());
    }

    #[test]
    fn configured_override_wins_and_secret_calls_use_plain_endpoint() {
        let p = plan("client_secret: s\nintrospection_endpoint_auth_method: tls_client_auth\ntls_client_auth_cluster: m\nmtls_introspection_endpoint: https://other/i\n");
        let m = Metadata::parse(&p, DOC.as_bytes()).unwrap();
        let (c, ep) = m.route(&p, Which::Token, p.token_auth).unwrap();
        assert_eq!((c, ep.url.as_str()), ("idp", "https://idp.example.com/token"));
        let (c, ep) = m.route(&p, Which::Introspection, p.introspection_auth).unwrap();
        assert_eq!((c, ep.url.as_str()), ("m", "https://other/i"));
    }

    #[test]
    fn issuer_mismatch_and_garbage_are_refused() {
        let p = plan("");
        let e = Metadata::parse(&p, br#"{"issuer":"https://evil.example.com"}"#).unwrap_err();
        assert!(e.contains("issuer"), "{e}");
        assert!(Metadata::parse(&p, b"<html>").is_err());
        assert!(Metadata::parse(&p, br#"{"issuer":"https://idp.example.com","token_endpoint":"nope"}"#).is_err());
    }

    #[test]
    fn record_round_trip() {
        let bytes = Record::encode(42, b"{\"a\":1}\n");
        let r = Record::decode(&bytes).unwrap();
        assert_eq!((r.fetched_at_ms, r.body), (42, &b"{\"a\":1}\n"[..]));
        assert!(Record::decode(b"nonsense").is_none());
        assert!(!r.stale(42 + REFRESH_AFTER_MS - 1));
        assert!(r.stale(42 + REFRESH_AFTER_MS));
    }

    #[test]
    fn lease_backoff_grows_and_caps() {
        assert!(Lease::claimable(None, 0));
        let l = Lease::take(None, 7, 1000, 100);
        assert!(!Lease::claimable(Some(&l.encode()), 1100));
        assert!(Lease::claimable(Some(&l.encode()), 1200));
        let f1 = l.failed(2000);
        assert_eq!(f1.until_ms, 2500);
        let again = Lease::take(Some(&f1.encode()), 8, 2500, 100);
        let f2 = again.failed(3000);
        assert_eq!(f2.until_ms, 4000);
        let mut l = f2;
        for _ in 0..40 {
            l = l.failed(0);
        }
        assert_eq!(l.until_ms, MAX_BACKOFF_MS);
        assert_eq!(l.succeeded(10).failures, 0);
        assert!(Lease::claimable(Some(b"garbage"), 0));
        // early re-fetch: allowed after a success, not during a fetch or a backoff
        let fetching = Lease::take(None, 7, 1000, 100);
        assert!(!Lease::claimable_early(Some(&fetching.encode()), 1001, 100));
        assert!(Lease::claimable_early(Some(&fetching.succeeded(1050).encode()), 1100, 100));
        assert!(!Lease::claimable_early(Some(&fetching.failed(1050).encode()), 1100, 100));
        assert_eq!(Lease::decode(&l.encode()), Some(l));
    }
}
