//! Browser login: the authorization code flow with PKCE (RFC 7636) and nonce, and logout.
//!
//! The login state (state, nonce, code verifier, original URL) travels in a short-lived
//! encrypted `authorization` cookie, not in filter memory, so any worker of any Envoy with
//! the same `session_secret` can finish a login. The ID token is validated here: signature
//! by `kid`, `iss`, `aud` (and `azp`), `exp`/`iat` with `leeway`, `nonce`.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::claims::Claims;
use crate::core::client_auth;
use crate::core::config::Plan;
use crate::core::discovery::{Metadata, Which};
use crate::core::error::Error;
use crate::core::idp::{IdpRequest, Purpose};
use crate::core::jwt::{Expect, KeySet};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the authorization cookie carries between the redirect and the callback.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    /// PKCE code verifier.
    pub verifier: String,
    /// Path and query of the request that started the login.
    pub uri: String,
    /// Created (seconds).
    pub iat: u64,
}

/// Where the browser returns after the login: the request's path and query, made safe as
/// a same-origin `Location` (no open redirect). A path a browser could read as another host
/// (`//evil.example`, `/\evil.example`), a non-path or control characters gives `/`.
pub fn local_path(uri: &str) -> String {
    let bytes = uri.as_bytes();
    let safe = bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/') | Some(b'\\'))
        && !uri.chars().any(|c| c.is_control() || c == '\\');
    if safe { uri.to_string() } else { "/".to_string() }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending(uri={}, <secrets redacted>)", self.uri)
    }
}

impl Pending {
    /// Fresh state, nonce and verifier from 48 random bytes.
    pub fn new(random: &[u8; 48], uri: &str, now: u64) -> Self {
        Pending {
            state: b64(&random[..16]),
            nonce: b64(&random[16..32]),
            // 32 bytes → 43 characters, the minimum RFC 7636 allows… padded with 16 more.
            verifier: format!("{}{}", b64(&random[..32]), b64(&random[32..])),
            uri: local_path(uri),
            iat: now,
        }
    }

    /// `S256` code challenge.
    pub fn challenge(&self) -> String {
        b64(&Sha256::digest(self.verifier.as_bytes()))
    }
}

/// The URL the browser is sent to for login.
pub fn authorize_url(plan: &Plan, meta: &Metadata, pending: &Pending) -> Result<String, Error> {
    let endpoint = meta.authorization_endpoint.as_ref().ok_or(Error::EndpointMissing("authorization_endpoint"))?;
    let redirect = plan.redirect_uris.first().ok_or(Error::Internal("no redirect_uri"))?;
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &plan.client.id)
        .append_pair("redirect_uri", &redirect.url)
        .append_pair("scope", &plan.scope)
        .append_pair("state", &pending.state)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &pending.challenge())
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if endpoint.url.contains('?') { '&' } else { '?' };
    Ok(format!("{}{sep}{query}", endpoint.url))
}

/// What the IdP sent back to the redirect URI.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    /// RFC 9207 `iss`: which IdP answered (mix-up defence).
    pub iss: Option<String>,
}

/// Reads the callback query when `path` is one of the redirect URIs' paths and carries a
/// `code`, `state` or `error`.
pub fn callback(plan: &Plan, path: &str) -> Option<Callback> {
    let (p, query) = path.split_once('?').unwrap_or((path, ""));
    if !plan.redirect_uris.iter().any(|r| r.path.split('?').next() == Some(p)) {
        return None;
    }
    let mut cb = Callback::default();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "code" => cb.code = Some(v.into_owned()),
            "state" => cb.state = Some(v.into_owned()),
            "error" => cb.error = Some(v.into_owned()),
            "iss" => cb.iss = Some(v.into_owned()),
            _ => {}
        }
    }
    (cb.code.is_some() || cb.state.is_some() || cb.error.is_some()).then_some(cb)
}

/// Checks the callback against the pending login and `issuer`; returns the code and the
/// login. An `iss` parameter (RFC 9207) that is not our issuer means the answer comes from
/// another IdP (a mix-up attack): refused before anything else.
pub fn check_callback(cb: &Callback, pending: Option<Pending>, issuer: &str) -> Result<(String, Pending), Error> {
    if cb.iss.as_deref().is_some_and(|i| i.trim_end_matches('/') != issuer.trim_end_matches('/')) {
        return Err(Error::LoginFailed("the callback comes from another identity provider (iss)"));
    }
    if let Some(e) = &cb.error {
        let e: String = e.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
        return Err(Error::LoginFailed(if e == "access_denied" {
            "the identity provider denied the login (access_denied)"
        } else {
            "the identity provider answered the login with an error"
        }));
    }
    let pending = pending.ok_or(Error::LoginFailed("no login in progress (the authorization cookie is missing or expired)"))?;
    let state = cb.state.as_deref().ok_or(Error::LoginFailed("the callback has no state"))?;
    if !constant_time_eq(state.as_bytes(), pending.state.as_bytes()) {
        return Err(Error::LoginFailed("the callback's state does not match the login in progress"));
    }
    let code = cb.code.clone().filter(|c| !c.is_empty()).ok_or(Error::LoginFailed("the callback has no code"))?;
    Ok((code, pending))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Validates an ID token from the code exchange.
pub fn validate_id_token(plan: &Plan, keys: &KeySet, id_token: &str, nonce: &str, now_secs: u64) -> Result<Claims, Error> {
    let expect = Expect {
        issuer: &plan.issuer,
        audience: Some(&plan.client.id),
        nonce: Some(nonce),
        leeway_secs: plan.leeway,
        now_secs,
    };
    let claims = keys
        .verify_with(id_token, &expect)
        .map_err(|_| Error::LoginFailed("the ID token is invalid (signature, issuer, audience, lifetime or nonce)"))?;
    // OIDC Core 2: `sub` and `iat` are required.
    if !claims.get("sub").and_then(|s| s.as_str()).is_some_and(|s| !s.is_empty()) {
        return Err(Error::LoginFailed("the ID token has no subject (sub)"));
    }
    if !claims.get("iat").is_some_and(|i| i.is_number()) {
        return Err(Error::LoginFailed("the ID token has no issue time (iat)"));
    }
    // OIDC Core 3.1.3.7: with several audiences, azp must be this client; if present, always.
    let many = claims.get("aud").and_then(|a| a.as_array()).is_some_and(|a| a.len() > 1);
    match claims.get("azp").and_then(|a| a.as_str()) {
        Some(azp) if azp != plan.client.id => Err(Error::LoginFailed("the ID token was issued to another client (azp)")),
        None if many => Err(Error::LoginFailed("the ID token has several audiences and no azp")),
        _ => Ok(claims),
    }
}

/// RFC 7009 revocation of `token`.
pub fn revocation_request(plan: &Plan, meta: &Metadata, token: &str, hint: &str, now_secs: u64, jti: &str) -> Result<IdpRequest, Error> {
    let params = [("token", token), ("token_type_hint", hint)];
    client_auth::post(plan, meta, Which::Revocation, plan.revocation_auth, Purpose::Revocation, &params, now_secs, jti)
}

/// Where the browser goes after logout: the IdP's `end_session_endpoint` (with
/// `id_token_hint` and `post_logout_redirect_uri`), else `logout_redirect_uri`.
pub fn after_logout(plan: &Plan, meta: Option<&Metadata>, id_token: Option<&str>) -> Option<String> {
    if let Some(end) = meta.and_then(|m| m.end_session_endpoint.as_ref()) {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(t) = id_token {
            q.append_pair("id_token_hint", t);
        }
        if let Some(r) = &plan.logout.redirect_uri {
            q.append_pair("post_logout_redirect_uri", r);
        }
        q.append_pair("client_id", &plan.client.id);
        let sep = if end.url.contains('?') { '&' } else { '?' };
        return Some(format!("{}{sep}{}", end.url, q.finish()));
    }
    plan.logout.redirect_uri.clone()
}

/// Whether this request asks to log out (by path or query).
pub fn is_logout(plan: &Plan, method: &str, path: &str) -> bool {
    let l = &plan.logout;
    if !l.methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
        return false;
    }
    let (p, query) = path.split_once('?').unwrap_or((path, ""));
    let by_suffix = l.uri_suffix.as_deref().is_some_and(|s| p.ends_with(s));
    let by_arg = l.query_arg.as_deref().is_some_and(|a| form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == a));
    by_suffix || by_arg
}

/// Whether the client is a browser that can follow a login redirect.
pub fn is_browser(accept: Option<&str>, x_requested_with: Option<&str>) -> bool {
    x_requested_with.is_none() && accept.is_some_and(|a| a.to_ascii_lowercase().contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(extra: &str) -> Plan {
        Plan::parse(
            format!("issuer: https://idp\nidp_cluster: idp\nclient_id: web\nclient_auth: tls_client_auth\ntls_client_auth_cluster: mtls\nauth_methods: [authorization_code]\nsession_secret: 0123456789abcdef0123\nredirect_uri: [http://127.0.0.1:8000/callback, http://localhost:8000/cb2]\n{extra}").as_bytes(),
        )
        .unwrap()
    }

    fn meta(p: &Plan) -> Metadata {
        Metadata::parse(p, br#"{"issuer":"https://idp","authorization_endpoint":"https://idp/auth","token_endpoint":"https://idp/token","revocation_endpoint":"https://idp/revoke","end_session_endpoint":"https://idp/session/end"}"#).unwrap()
    }

    fn pending() -> Pending {
        Pending::new(&[7u8; 48], "/orig?x=1", 100)
    }

    #[test]
    fn return_path_is_never_another_host() {
        for bad in ["//evil.example/x", "/\\evil.example", "/a\\b", "https://evil.example/", "", "evil", "/a\r\nb", "/\t/evil"] {
            assert_eq!(local_path(bad), "/", "{bad:?}");
        }
        for good in ["/", "/a/b?c=d&e=//f", "/%2F%2Fevil.example"] {
            assert_eq!(local_path(good), good);
        }
        assert_eq!(Pending::new(&[0; 48], "//evil.example", 1).uri, "/");
    }

    #[test]
    fn authorize_url_has_pkce_state_nonce() {
        let p = plan("");
        let url = authorize_url(&p, &meta(&p), &pending()).unwrap();
        let (base, q) = url.split_once('?').unwrap();
        assert_eq!(base, "https://idp/auth");
        let q: std::collections::HashMap<String, String> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:8000/callback");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"], pending().challenge());
        assert_eq!(q["state"], pending().state);
        assert_eq!(q["nonce"], pending().nonce);
        assert!(pending().verifier.len() >= 43);
    }

    #[test]
    fn pkce_challenge_matches_rfc7636_example() {
        let p = Pending { verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(), ..pending() };
        assert_eq!(p.challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn callbacks() {
        let p = plan("");
        assert!(callback(&p, "/callback").is_none(), "no code/state/error: not a callback");
        assert!(callback(&p, "/other?code=x").is_none());
        let cb = callback(&p, "/cb2?code=c&state=s").unwrap();
        assert_eq!(check_callback(&cb, Some(Pending { state: "s".into(), ..pending() }), "https://idp").unwrap().0, "c");
        let mixed = Callback { iss: Some("https://evil".into()), ..Callback { code: Some("c".into()), state: Some("s".into()), ..Default::default() } };
        assert!(matches!(check_callback(&mixed, Some(Pending { state: "s".into(), ..pending() }), "https://idp"), Err(Error::LoginFailed(d)) if d.contains("iss")));
        let ours = Callback { iss: Some("https://idp/".into()), ..Callback { code: Some("c".into()), state: Some("s".into()), ..Default::default() } };
        assert!(check_callback(&ours, Some(Pending { state: "s".into(), ..pending() }), "https://idp").is_ok());
        assert!(matches!(check_callback(&cb, None, "https://idp"), Err(Error::LoginFailed(_))));
        assert!(matches!(check_callback(&cb, Some(pending()), "https://idp"), Err(Error::LoginFailed(_))));
        let denied = callback(&p, "/callback?error=access_denied&state=s").unwrap();
        assert!(matches!(check_callback(&denied, Some(pending()), "https://idp"), Err(Error::LoginFailed(d)) if d.contains("access_denied")));
    }

    #[test]
    fn logout_detection() {
        let p = plan("logout_uri_suffix: /logout\nlogout_query_arg: logout\n");
        assert!(is_logout(&p, "POST", "/app/logout"));
        assert!(is_logout(&p, "DELETE", "/x?logout=1"));
        assert!(!is_logout(&p, "GET", "/app/logout"));
        assert!(!is_logout(&p, "POST", "/app/logout/more"));
        let none = plan("");
        assert!(!is_logout(&none, "POST", "/logout"));
    }

    #[test]
    fn after_logout_goes_to_end_session() {
        let p = plan("logout_redirect_uri: http://127.0.0.1:8000/bye\n");
        let url = after_logout(&p, Some(&meta(&p)), Some("IDT")).unwrap();
        assert!(url.starts_with("https://idp/session/end?id_token_hint=IDT&post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A8000%2Fbye"), "{url}");
        assert_eq!(after_logout(&p, None, None).as_deref(), Some("http://127.0.0.1:8000/bye"));
    }

    #[test]
    fn browsers() {
        assert!(is_browser(Some("text/html,application/xhtml+xml"), None));
        assert!(!is_browser(Some("text/html"), Some("XMLHttpRequest")));
        assert!(!is_browser(Some("application/json"), None));
        assert!(!is_browser(None, None));
    }
}
