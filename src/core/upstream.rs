//! What goes upstream once a request is authenticated: the identity headers, with every
//! client-sent header of the same names removed first (nobody forges an identity), and the
//! client's own credentials removed as configured (`hide_credentials`); and what goes back
//! to the client with the upstream's answer (Kong's `downstream_*` headers).

use std::rc::Rc;

use base64::Engine;

use crate::core::claims::{self, Claims};
use crate::core::cookies;
use crate::core::credentials::{self, Source};
use crate::core::error::ConfigError;
use crate::core::header::{names, HeaderName, HeaderValue};
use crate::core::reply::Forward;

/// How a token is handed upstream (Kong's `name[:bearer]` notation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    pub name: HeaderName,
    /// Prefix the value with `Bearer `.
    pub bearer: bool,
}

impl TokenHeader {
    /// Parses `name[:bearer]`.
    pub fn parse(key: &str, spec: &str) -> Result<Self, ConfigError> {
        let (name, kind) = match spec.split_once(':') {
            Some((n, k)) => (n.trim(), Some(k.trim())),
            None => (spec.trim(), None),
        };
        let name = HeaderName::new(name).map_err(|_| ConfigError(format!("`{key}`: `{spec}` is not a valid header name")))?;
        let bearer = match kind.map(|k| k.to_ascii_lowercase()) {
            None => false,
            Some(k) if k == "bearer" => true,
            Some(k) => return ConfigError::err(format!("`{key}`: unknown value type `{k}` (only `bearer`)")),
        };
        Ok(TokenHeader { name, bearer })
    }

    /// The header value for `token` (tokens with control characters never get here: the
    /// IdP's are refused when read, the client's by `credentials::bearer`).
    pub fn value(&self, token: &str) -> Option<HeaderValue> {
        if self.bearer {
            HeaderValue::new(format!("Bearer {token}")).ok()
        } else {
            HeaderValue::new(token).ok()
        }
    }
}

/// The headers the filter sets upstream (Kong's `upstream_*`), and credential hiding.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `upstream_access_token_header`, `upstream_id_token_header`, … and
    /// `upstream_headers_claims` / `upstream_headers_names`.
    pub headers: IdentityHeaders,
    /// Kong's `downstream_*_header`s and `downstream_headers_{claims,names}`: the same values,
    /// added to the response the client gets.
    pub downstream: IdentityHeaders,
    pub hide_credentials: bool,
    /// Request header with a refresh token (`refresh_token_param_name`): never upstream.
    pub refresh_token_header: HeaderName,
    /// Response header for a rotated refresh token (`downstream_refresh_token_header`).
    pub downstream_refresh_token_header: HeaderName,
    /// `bearer_token_cookie_name`, removed upstream with `hide_credentials`.
    pub bearer_cookie: Option<String>,
    /// `bearer_token_header_name` (when not `authorization`), removed with `hide_credentials`.
    pub bearer_header: Option<HeaderName>,
}

/// The identity headers of one direction (upstream or downstream).
#[derive(Debug, Clone, Default)]
pub struct IdentityHeaders {
    pub access_token: Option<TokenHeader>,
    pub id_token: Option<TokenHeader>,
    /// Base64 of the userinfo JSON.
    pub user_info: Option<HeaderName>,
    /// Base64 of the introspection JSON.
    pub introspection: Option<HeaderName>,
    /// (claim, header) pairs.
    pub claims: Vec<(String, HeaderName)>,
}

impl IdentityHeaders {
    /// Every header name set.
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.access_token
            .iter()
            .chain(self.id_token.iter())
            .map(|h| &h.name)
            .chain(self.user_info.iter())
            .chain(self.introspection.iter())
            .chain(self.claims.iter().map(|(_, h)| h))
    }

    /// The headers for `identity`, pushed to `out` (the access token's only when
    /// `with_access_token`).
    fn push(&self, identity: &Identity, with_access_token: bool, out: &mut Vec<(HeaderName, HeaderValue)>) {
        let mut set = |name: &HeaderName, value: Option<HeaderValue>| {
            if let Some(v) = value {
                out.push((name.clone(), v));
            }
        };
        if let Some(h) = self.access_token.as_ref().filter(|_| with_access_token) {
            set(&h.name, h.value(&identity.access_token));
        }
        if let (Some(h), Some(t)) = (&self.id_token, &identity.id_token) {
            set(&h.name, h.value(t));
        }
        let b64 =
            |c: &Claims| HeaderValue::new(base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(c).unwrap_or_default())).ok();
        if let (Some(h), Some(u)) = (&self.user_info, &identity.user_info) {
            set(h, b64(u));
        }
        if let (Some(h), Some(i)) = (&self.introspection, &identity.introspection) {
            set(h, b64(i));
        }
        for (claim, header) in &self.claims {
            // A claim with control characters could split or smuggle headers: it is left out.
            set(header, identity.claims.get(claim).and_then(claims::header_value));
        }
    }
}

impl UpstreamSettings {
    /// Every header name the filter owns upstream.
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.headers.names()
    }

    /// Whether the client's own `Authorization: Bearer` is exactly what goes upstream.
    fn passes_bearer_header(&self) -> bool {
        !self.hide_credentials && self.headers.access_token.as_ref().is_some_and(|h| h.name == names::AUTHORIZATION && h.bearer)
    }
}

/// What an auth method established about the request.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub access_token: String,
    pub id_token: Option<String>,
    /// Claims rules and claim headers read (JWT payload, introspection or userinfo answer).
    pub claims: Rc<Claims>,
    pub user_info: Option<Rc<Claims>>,
    pub introspection: Option<Rc<Claims>>,
}

/// The credential the client presented, for removal before upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    Basic,
    Bearer(Source),
    RefreshToken,
    /// A session cookie (the filter's cookies never go upstream).
    Session,
}

/// Request details needed to strip a credential from the query or cookies.
#[derive(Debug, Clone, Default)]
pub struct Original {
    pub path: Option<String>,
    pub cookie: Option<String>,
    /// The client sent exactly `Authorization: Bearer <token>`.
    pub canonical_bearer_header: bool,
}

/// Header changes for a request authenticated as `identity`. `own_cookie` tells the
/// filter's own cookies (never upstream); `new_refresh_token` goes back to the client.
pub fn forward(
    up: &UpstreamSettings,
    identity: &Identity,
    presented: Presented,
    original: &Original,
    own_cookie: &dyn Fn(&str) -> bool,
    new_refresh_token: Option<&str>,
) -> Forward {
    let mut f = Forward::default();
    // The common case: the client's own `Authorization: Bearer <token>` is exactly what goes
    // upstream; leaving it in place saves rewriting a kilobyte header on every request.
    let keep_authorization =
        presented == Presented::Bearer(Source::Header) && original.canonical_bearer_header && up.passes_bearer_header();
    f.remove.extend(up.names().filter(|n| !(keep_authorization && **n == names::AUTHORIZATION)).cloned());
    match presented {
        // Passwords and client secrets, and refresh tokens, never go upstream.
        Presented::Basic => f.remove.push(names::AUTHORIZATION),
        Presented::RefreshToken => f.remove.push(up.refresh_token_header.clone()),
        Presented::Bearer(Source::Header) if up.hide_credentials => {
            f.remove.push(up.bearer_header.clone().unwrap_or(names::AUTHORIZATION));
        }
        Presented::Bearer(Source::Query) if up.hide_credentials => {
            f.set_path =
                original.path.as_deref().and_then(|p| HeaderValue::new(credentials::without_query_param(p, credentials::QUERY_PARAM)).ok());
        }
        Presented::Bearer(_) | Presented::Session => {}
    }
    // Cookies: the filter's own never go upstream; a bearer cookie only without hide_credentials.
    if let Some(cookie) = &original.cookie {
        let hidden = match (presented, &up.bearer_cookie) {
            (Presented::Bearer(Source::Cookie), Some(name)) if up.hide_credentials => Some(name.as_str()),
            _ => None,
        };
        if let Some(kept) = cookies::without(cookie, |name| own_cookie(name) || Some(name) == hidden) {
            f.remove.push(names::COOKIE);
            if let Some(v) = Some(kept).filter(|k| !k.is_empty()).and_then(|k| HeaderValue::new(k).ok()) {
                f.set.push((names::COOKIE, v));
            }
        }
    }
    up.headers.push(identity, !keep_authorization, &mut f.set);
    up.downstream.push(identity, true, &mut f.response_add);
    if let Some(rt) = new_refresh_token.and_then(|t| HeaderValue::new(t).ok()) {
        f.response_add.push((up.downstream_refresh_token_header.clone(), rt));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::core::config::Plan;

    fn plan(extra: &str) -> Plan {
        Plan::parse(
            format!("issuer: https://i\nidp_cluster: idp\nclient_id: c\nauth_methods: [bearer, password, refresh_token]\n{extra}")
                .as_bytes(),
        )
        .unwrap()
    }

    fn fwd(p: &Plan, presented: Presented, orig: &Original, rt: Option<&str>) -> Forward {
        forward(&p.policy.upstream, &identity(), presented, orig, &|n| n == "session", rt)
    }

    fn identity() -> Identity {
        let claims = json!({"sub": "john", "email": "j@example.com", "groups": ["a", "b"], "evil": "x\r\nx-admin: 1"});
        Identity {
            access_token: "AT".into(),
            id_token: Some("IDT".into()),
            claims: Rc::new(claims.as_object().unwrap().clone()),
            user_info: Some(Rc::new(json!({"sub": "john"}).as_object().unwrap().clone())),
            introspection: None,
        }
    }

    fn get<'a>(f: &'a Forward, name: &str) -> Option<&'a str> {
        f.get(name)
    }

    #[test]
    fn identity_headers_and_forgery_removal() {
        let p = plan("upstream_id_token_header: x-id-token\nupstream_user_info_header: x-userinfo\nupstream_introspection_header: x-introspection\nupstream_headers_claims: [sub, groups, evil, missing]\nupstream_headers_names: [x-user, x-groups, x-evil, x-missing]\n");
        let f = fwd(&p, Presented::Bearer(Source::Query), &Original::default(), None);
        for h in ["authorization", "x-id-token", "x-userinfo", "x-introspection", "x-user", "x-groups", "x-evil", "x-missing"] {
            assert!(f.removes(h), "{h} not removed");
        }
        assert_eq!(get(&f, "authorization"), Some("Bearer AT"));
        assert_eq!(get(&f, "x-id-token"), Some("IDT"));
        assert_eq!(get(&f, "x-user"), Some("john"));
        assert_eq!(get(&f, "x-groups"), Some("a,b"));
        assert_eq!(get(&f, "x-evil"), None);
        assert_eq!(get(&f, "x-missing"), None);
        assert_eq!(get(&f, "x-introspection"), None);
        let ui = base64::engine::general_purpose::STANDARD.decode(get(&f, "x-userinfo").unwrap()).unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&ui).unwrap(), json!({"sub": "john"}));
    }

    #[test]
    fn the_clients_bearer_header_stays_when_it_is_what_goes_upstream() {
        let p = plan("");
        let canonical = Original { canonical_bearer_header: true, ..Default::default() };
        let f = fwd(&p, Presented::Bearer(Source::Header), &canonical, None);
        assert!(!f.removes("authorization"));
        assert_eq!(get(&f, "authorization"), None);
        // `bearer` in lower case (or extra spaces) is rewritten to the canonical form
        let f = fwd(&p, Presented::Bearer(Source::Header), &Original::default(), None);
        assert_eq!(get(&f, "authorization"), Some("Bearer AT"));
        // but a token from the query replaces whatever Authorization the client sent
        let f = fwd(&p, Presented::Bearer(Source::Query), &Original::default(), None);
        assert_eq!(get(&f, "authorization"), Some("Bearer AT"));
    }

    #[test]
    fn downstream_headers_go_to_the_client_not_upstream() {
        let p = plan(
            "downstream_access_token_header: x-access-token\ndownstream_id_token_header: 'x-id-token:bearer'\n\
             downstream_user_info_header: x-userinfo\ndownstream_headers_claims: [sub, evil]\ndownstream_headers_names: [x-sub, x-evil]\n",
        );
        let f = fwd(&p, Presented::Basic, &Original::default(), None);
        let back = |n: &str| f.response_add.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(back("x-access-token"), Some("AT"));
        assert_eq!(back("x-id-token"), Some("Bearer IDT"));
        assert!(back("x-userinfo").is_some_and(|v| v.starts_with("eyJ")));
        assert_eq!(back("x-sub"), Some("john"));
        assert_eq!(back("x-evil"), None, "a claim with control characters is left out");
        assert_eq!(get(&f, "x-access-token"), None, "not upstream");
        assert!(Plan::parse(b"issuer: https://i\nidp_cluster: idp\nclient_id: c\ndownstream_headers_claims: [sub]\n").is_err());
    }

    #[test]
    fn hide_credentials() {
        let orig =
            Original { path: Some("/a?access_token=AT&x=1".into()), cookie: Some("k=v; at=AT".into()), canonical_bearer_header: false };
        let p = plan("hide_credentials: true\nbearer_token_param_type: [query, cookie]\nbearer_token_cookie_name: at\nupstream_access_token_header: x-token\n");
        let f = fwd(&p, Presented::Bearer(Source::Query), &orig, None);
        assert_eq!(f.set_path.as_ref().map(HeaderValue::as_str), Some("/a?x=1"));
        let f = fwd(&p, Presented::Bearer(Source::Cookie), &orig, None);
        assert_eq!(get(&f, "cookie"), Some("k=v"));
        let f = fwd(&p, Presented::Bearer(Source::Header), &orig, None);
        assert!(f.removes("authorization"));
        let keep = plan("upstream_access_token_header: x-token\n");
        let f = fwd(&keep, Presented::Bearer(Source::Header), &orig, None);
        assert!(!f.removes("authorization"));
        assert!(f.set_path.is_none());
    }

    #[test]
    fn refresh_token_goes_back_to_the_client_not_upstream() {
        let p = plan("");
        let f = fwd(&p, Presented::RefreshToken, &Original::default(), Some("RT2"));
        assert!(f.removes("x-refresh-token"));
        assert_eq!(f.response_add, vec![(HeaderName::new("x-refresh-token").unwrap(), HeaderValue::new("RT2").unwrap())]);
    }
}
