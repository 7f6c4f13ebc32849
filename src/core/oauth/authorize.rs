//! Browser login: the authorization code flow with PKCE (RFC 7636), state and nonce.
//!
//! The login state (state, nonce, code verifier, original URL) travels in a short-lived
//! encrypted `authorization` cookie, not in filter memory, so any worker of any Envoy with
//! the same `session_secret` can finish a login. The ID token is validated here: signature
//! by `kid`, `iss`, `aud` (and `azp`), `exp`/`iat` with `leeway`, `nonce`.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::claims::Claims;
use crate::core::discovery::Metadata;
use crate::core::error::{Error, IdpFault, Internal, LoginError};
use crate::core::extras::Extra;
use crate::core::header::HeaderValue;
use crate::core::idp::{self, Endpoint};
use crate::core::jwt::{Expect, KeySet};

/// What a login needs to know (`redirect_uri`, the client, the scopes, the issuer).
#[derive(Debug, Clone)]
pub struct LoginSettings {
    /// The first is sent to the IdP; the paths of all are callbacks.
    pub redirect_uris: Vec<Endpoint>,
    pub client_id: String,
    /// Space-joined `scopes`.
    pub scope: String,
    pub issuer: String,
    pub leeway: u64,
    /// `authorization_query_args_*`.
    pub extra: Extra,
    /// `audience`, space-separated into one `audience` argument when set.
    pub audience: Vec<String>,
}

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
    if safe {
        uri.to_string()
    } else {
        "/".to_string()
    }
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
pub fn authorize_url(login: &LoginSettings, meta: &Metadata, pending: &Pending) -> Result<HeaderValue, Error> {
    let endpoint = meta.authorization_endpoint.as_ref().ok_or(IdpFault::EndpointMissing("authorization_endpoint"))?;
    let redirect = login.redirect_uris.first().ok_or(Internal::NoRedirectUri)?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", &login.client_id)
        .append_pair("redirect_uri", &redirect.url)
        .append_pair("scope", &login.scope)
        .append_pair("state", &pending.state)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &pending.challenge())
        .append_pair("code_challenge_method", "S256");
    if !login.audience.is_empty() {
        query.append_pair("audience", &login.audience.join(" "));
    }
    login.extra.append_args(&mut query);
    let query = query.finish();
    // The endpoint was checked when discovery was parsed, the query is form-encoded.
    HeaderValue::new(idp::with_query(&endpoint.url, &query)).map_err(|_| IdpFault::EndpointMissing("authorization_endpoint").into())
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
pub fn callback(login: &LoginSettings, path: &str) -> Option<Callback> {
    let (p, query) = path.split_once('?').unwrap_or((path, ""));
    if !login.redirect_uris.iter().any(|r| r.path.split('?').next() == Some(p)) {
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
pub fn check_callback(cb: &Callback, pending: Option<Pending>, issuer: &str) -> Result<(String, Pending), LoginError> {
    if cb.iss.as_deref().is_some_and(|i| i.trim_end_matches('/') != issuer.trim_end_matches('/')) {
        return Err(LoginError::OtherIssuer);
    }
    if let Some(e) = &cb.error {
        let e: String = e.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
        return Err(if e == "access_denied" { LoginError::AccessDenied } else { LoginError::IdpError });
    }
    let pending = pending.ok_or(LoginError::NoLoginInProgress)?;
    let state = cb.state.as_deref().ok_or(LoginError::NoState)?;
    if !constant_time_eq(state.as_bytes(), pending.state.as_bytes()) {
        return Err(LoginError::StateMismatch);
    }
    let code = cb.code.clone().filter(|c| !c.is_empty()).ok_or(LoginError::NoCode)?;
    Ok((code, pending))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Validates an ID token from the code exchange.
pub fn validate_id_token(login: &LoginSettings, keys: &KeySet, id_token: &str, nonce: &str, now_secs: u64) -> Result<Claims, LoginError> {
    let expect =
        Expect { issuer: &login.issuer, audience: Some(&login.client_id), nonce: Some(nonce), leeway_secs: login.leeway, now_secs };
    let claims = keys.verify_with(id_token, &expect).map_err(|_| LoginError::BadIdToken)?;
    // OIDC Core 2: `sub` and `iat` are required.
    if claims.get("sub").and_then(|s| s.as_str()).is_none_or(str::is_empty) {
        return Err(LoginError::NoSubject);
    }
    if !claims.get("iat").is_some_and(|i| i.is_number()) {
        return Err(LoginError::NoIssueTime);
    }
    // OIDC Core 3.1.3.7: with several audiences, azp must be this client; if present, always.
    let many = claims.get("aud").and_then(|a| a.as_array()).is_some_and(|a| a.len() > 1);
    match claims.get("azp").and_then(|a| a.as_str()) {
        Some(azp) if azp != login.client_id => Err(LoginError::OtherClient),
        None if many => Err(LoginError::SeveralAudiences),
        _ => Ok(claims),
    }
}

/// Whether the client is a browser that can follow a login redirect.
pub fn is_browser(accept: Option<&str>, x_requested_with: Option<&str>) -> bool {
    x_requested_with.is_none() && accept.is_some_and(|a| a.to_ascii_lowercase().contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> LoginSettings {
        let e = |u: &str| Endpoint::parse(u).unwrap();
        LoginSettings {
            redirect_uris: vec![e("http://127.0.0.1:8000/callback"), e("http://localhost:8000/cb2")],
            client_id: "web".into(),
            scope: "openid".into(),
            issuer: "https://idp".into(),
            leeway: 0,
            extra: Extra::default(),
            audience: Vec::new(),
        }
    }

    fn meta() -> Metadata {
        Metadata::parse("https://idp", br#"{"issuer":"https://idp","authorization_endpoint":"https://idp/auth","token_endpoint":"https://idp/token","revocation_endpoint":"https://idp/revoke","end_session_endpoint":"https://idp/session/end"}"#).unwrap()
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
        let url = authorize_url(&login(), &meta(), &pending()).unwrap();
        let (base, q) = url.as_str().split_once('?').unwrap();
        assert_eq!(base, "https://idp/auth");
        let q: std::collections::HashMap<String, String> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:8000/callback");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"], pending().challenge());
        assert_eq!(q["state"], pending().state);
        assert_eq!(q["nonce"], pending().nonce);
        assert!(pending().verifier.len() >= 43);
        assert!(!q.contains_key("audience"));
    }

    #[test]
    fn authorization_query_args_and_audience_follow_the_protocol_arguments() {
        let login = LoginSettings {
            extra: Extra { args: vec![("prompt".into(), "login".into()), ("acr_values".into(), "urn:mfa a&b".into())], headers: vec![] },
            audience: vec!["https://api.example".into(), "other".into()],
            ..login()
        };
        let url = authorize_url(&login, &meta(), &pending()).unwrap();
        let q: Vec<(String, String)> = form_urlencoded::parse(url.as_str().split_once('?').unwrap().1.as_bytes()).into_owned().collect();
        assert_eq!(q[0], ("response_type".into(), "code".into()));
        assert!(q.contains(&("audience".into(), "https://api.example other".into())));
        assert_eq!(&q[q.len() - 2..], &[("prompt".into(), "login".into()), ("acr_values".into(), "urn:mfa a&b".into())]);
    }

    #[test]
    fn pkce_challenge_matches_rfc7636_example() {
        let p = Pending { verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(), ..pending() };
        assert_eq!(p.challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn callbacks() {
        let p = login();
        assert!(callback(&p, "/callback").is_none(), "no code/state/error: not a callback");
        assert!(callback(&p, "/other?code=x").is_none());
        let cb = callback(&p, "/cb2?code=c&state=s").unwrap();
        assert_eq!(check_callback(&cb, Some(Pending { state: "s".into(), ..pending() }), "https://idp").unwrap().0, "c");
        let mixed = Callback {
            iss: Some("https://evil".into()),
            ..Callback { code: Some("c".into()), state: Some("s".into()), ..Default::default() }
        };
        assert_eq!(
            check_callback(&mixed, Some(Pending { state: "s".into(), ..pending() }), "https://idp").unwrap_err(),
            LoginError::OtherIssuer
        );
        let ours = Callback {
            iss: Some("https://idp/".into()),
            ..Callback { code: Some("c".into()), state: Some("s".into()), ..Default::default() }
        };
        assert!(check_callback(&ours, Some(Pending { state: "s".into(), ..pending() }), "https://idp").is_ok());
        assert_eq!(check_callback(&cb, None, "https://idp").unwrap_err(), LoginError::NoLoginInProgress);
        assert_eq!(check_callback(&cb, Some(pending()), "https://idp").unwrap_err(), LoginError::StateMismatch);
        let denied = callback(&p, "/callback?error=access_denied&state=s").unwrap();
        assert_eq!(check_callback(&denied, Some(pending()), "https://idp").unwrap_err(), LoginError::AccessDenied);
    }

    #[test]
    fn browsers() {
        assert!(is_browser(Some("text/html,application/xhtml+xml"), None));
        assert!(!is_browser(Some("text/html"), Some("XMLHttpRequest")));
        assert!(!is_browser(Some("application/json"), None));
        assert!(!is_browser(None, None));
    }
}
