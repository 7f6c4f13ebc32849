//! OAuth grants at the token endpoint: building the request and reading the answer.
//!
//! `password` authenticates the filter's own client with the configured method (mTLS with
//! `tls_client_auth`); `client_credentials` forwards the calling client's id and secret.
//! [`parse_token_response`] maps every IdP answer, including transport failures, to a
//! [`TokenSet`] or an [`Error`].

use std::fmt;

use serde::Deserialize;

use crate::core::client_auth::{self, ClientAuth, Credentials};
use crate::core::config::Plan;
use crate::core::credentials::Basic;
use crate::core::discovery::{Metadata, Which};
use crate::core::error::Error;
use crate::core::idp::{IdpRequest, IdpResponse, Purpose};

/// A grant the filter runs on behalf of the request. Debug output never shows secrets.
#[derive(Clone, PartialEq, Eq)]
pub enum Grant {
    /// Resource owner password credentials (RFC 6749 4.3).
    Password(Basic),
    /// Client credentials (RFC 6749 4.4) of the calling client.
    ClientCredentials(Basic),
    /// Refresh token grant (RFC 6749 6) with a refresh token the client sent.
    RefreshToken(String),
    /// Authorization code grant (RFC 6749 4.1) with the PKCE verifier (RFC 7636).
    AuthorizationCode { code: String, verifier: String },
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::Password(b) | Grant::ClientCredentials(b) => write!(f, "{}({b:?})", self.name()),
            Grant::RefreshToken(_) => f.write_str("refresh_token(<redacted>)"),
            Grant::AuthorizationCode { .. } => f.write_str("authorization_code(<redacted>)"),
        }
    }
}

impl Grant {
    pub fn name(&self) -> &'static str {
        match self {
            Grant::Password(_) => "password",
            Grant::ClientCredentials(_) => "client_credentials",
            Grant::RefreshToken(_) => "refresh_token",
            Grant::AuthorizationCode { .. } => "authorization_code",
        }
    }

    /// Client authentication used for this grant.
    pub fn auth(&self, plan: &Plan) -> ClientAuth {
        match self {
            Grant::Password(_) | Grant::RefreshToken(_) | Grant::AuthorizationCode { .. } => plan.token_auth,
            Grant::ClientCredentials(_) => ClientAuth::ClientSecretBasic,
        }
    }

    /// Cache key: everything that makes the answer differ. `None` for grants whose answer
    /// must not be reused (a refresh token is single-use when the IdP rotates it).
    pub fn cache_key(&self, plan: &Plan) -> Option<crate::core::cache::Key> {
        let (user, secret) = match self {
            Grant::Password(b) | Grant::ClientCredentials(b) => (&b.user, &b.password),
            Grant::RefreshToken(_) | Grant::AuthorizationCode { .. } => return None,
        };
        Some(crate::core::cache::key(&[self.name(), &plan.client.id, user, secret, &plan.scope]))
    }
}

/// Tokens from a successful token response. Debug output never shows them.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct TokenSet {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSet(type={:?}, expires_in={:?}, <redacted>)", self.token_type, self.expires_in)
    }
}

/// Builds the token request for `grant`.
pub fn token_request(
    plan: &Plan,
    meta: &Metadata,
    grant: &Grant,
    now_secs: u64,
    jti: &str,
) -> Result<IdpRequest, Error> {
    let scope = plan.scope.as_str();
    fn with_scope<'a>(mut p: Vec<(&'static str, &'a str)>, scope: &'a str) -> Vec<(&'static str, &'a str)> {
        if !scope.is_empty() {
            p.push(("scope", scope));
        }
        p
    }
    match grant {
        Grant::Password(b) => {
            let params =
                with_scope(vec![("grant_type", "password"), ("username", &b.user), ("password", &b.password)], scope);
            client_auth::post(plan, meta, Which::Token, plan.token_auth, Purpose::Token, &params, now_secs, jti)
        }
        Grant::RefreshToken(rt) => {
            let params = [("grant_type", "refresh_token"), ("refresh_token", rt.as_str())];
            client_auth::post(plan, meta, Which::Token, plan.token_auth, Purpose::Token, &params, now_secs, jti)
        }
        Grant::AuthorizationCode { code, verifier } => {
            let redirect = plan.redirect_uris.first().ok_or(Error::Internal("no redirect_uri"))?;
            let params = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect.url.as_str()),
                ("code_verifier", verifier.as_str()),
            ];
            client_auth::post(plan, meta, Which::Token, plan.token_auth, Purpose::Token, &params, now_secs, jti)
        }
        Grant::ClientCredentials(b) => {
            let auth = ClientAuth::ClientSecretBasic;
            let (cluster, endpoint) =
                meta.route(plan, Which::Token, auth).ok_or(Error::EndpointMissing("token_endpoint"))?;
            let creds = Credentials {
                headers: vec![("authorization".into(), client_auth::basic(&b.user, &b.password))],
                form: Vec::new(),
            };
            let params = with_scope(vec![("grant_type", "client_credentials")], scope);
            Ok(client_auth::form_post(Purpose::Token, cluster, endpoint, plan.timeout_ms, &params, creds))
        }
    }
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
}

/// Reads the token endpoint's answer to `grant`.
pub fn parse_token_response(grant: &Grant, auth: ClientAuth, resp: &IdpResponse, timeout_ms: u64) -> Result<TokenSet, Error> {
    let status = resp.answered(timeout_ms)?;
    if status == 200 {
        let tokens: TokenSet = serde_json::from_slice(&resp.body).map_err(|_| {
            match serde_json::from_slice::<serde_json::Value>(&resp.body) {
                Ok(serde_json::Value::Object(o)) if !o.contains_key("access_token") => {
                    Error::IdpBadResponse("token response has no access_token")
                }
                Ok(_) => Error::IdpBadResponse("token response is not a valid token set"),
                Err(_) => Error::IdpBadResponse("token response is not JSON"),
            }
        })?;
        if tokens.access_token.is_empty() {
            return Err(Error::IdpBadResponse("token response has an empty access_token"));
        }
        // Tokens go into headers (upstream, back to the client): a control character would
        // split the header. RFC 6749 A.12, A.17: they are printable.
        let printable = [Some(&tokens.access_token), tokens.refresh_token.as_ref(), tokens.id_token.as_ref()]
            .into_iter()
            .flatten()
            .all(|t| !t.chars().any(char::is_control));
        if !printable {
            return Err(Error::IdpBadResponse("token response has a token with control characters"));
        }
        if let Some(t) = &tokens.token_type {
            // RFC 6749 5.1: case-insensitive; anything but bearer (or DPoP) cannot be forwarded as-is.
            if !t.eq_ignore_ascii_case("bearer") && !t.eq_ignore_ascii_case("dpop") {
                return Err(Error::IdpBadResponse("token_type is not Bearer"));
            }
        }
        return Ok(tokens);
    }
    let oauth = serde_json::from_slice::<OAuthError>(&resp.body).ok();
    match (status, oauth.as_ref().map(|e| e.error.as_str())) {
        (400 | 401, Some("invalid_client")) => Err(match grant {
            // The caller's own client id/secret were wrong.
            Grant::ClientCredentials(_) => Error::InvalidCredentials,
            _ => Error::ClientRejected { method: auth.name() },
        }),
        (400 | 401, Some("invalid_grant")) => Err(match grant {
            Grant::RefreshToken(_) => Error::InvalidToken("the refresh token is invalid, expired or revoked"),
            Grant::AuthorizationCode { .. } => Error::LoginFailed("the identity provider rejected the authorization code"),
            _ => Error::InvalidCredentials,
        }),
        (400..=499, Some(e)) => Err(Error::IdpRefused { error: sanitize(e) }),
        (400..=499, None) => Err(Error::IdpBadResponse("error without an OAuth error code")),
        _ => Err(Error::IdpBadResponse("unexpected status")),
    }
}

/// OAuth error codes are `%x20-21 / %x23-5B / %x5D-7E`; keep anything else out of answers.
fn sanitize(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(extra: &str) -> Plan {
        Plan::parse(format!("issuer: https://idp\nidp_cluster: idp\nclient_id: cid\nscopes: [openid, profile]\n{extra}").as_bytes()).unwrap()
    }

    fn meta(p: &Plan) -> Metadata {
        Metadata::parse(
            p,
            br#"{"issuer":"https://idp","token_endpoint":"https://idp/token","mtls_endpoint_aliases":{"token_endpoint":"https://mtls.idp/token"}}"#,
        )
        .unwrap()
    }

    fn john() -> Grant {
        Grant::Password(Basic { user: "john".into(), password: "d&e=".into() })
    }

    fn form(r: &IdpRequest) -> Vec<(String, String)> {
        form_urlencoded::parse(&r.body).into_owned().collect()
    }

    #[test]
    fn password_over_mtls_goes_to_the_alias_through_the_tls_cluster() {
        let p = plan("client_auth: tls_client_auth\ntls_client_auth_cluster: idp-mtls\n");
        let r = token_request(&p, &meta(&p), &john(), 0, "j").unwrap();
        assert_eq!((r.cluster.as_str(), r.authority.as_str(), r.path.as_str(), r.method), ("idp-mtls", "mtls.idp", "/token", "POST"));
        assert_eq!(
            form(&r),
            vec![
                ("grant_type".into(), "password".into()),
                ("username".into(), "john".into()),
                ("password".into(), "d&e=".into()),
                ("scope".into(), "openid profile".into()),
                ("client_id".into(), "cid".into()),
            ]
        );
        assert!(!r.headers.iter().any(|(k, _)| k == "authorization"));
    }

    #[test]
    fn password_with_secret_uses_plain_endpoint_and_basic() {
        let p = plan("client_secret: s\n");
        let r = token_request(&p, &meta(&p), &john(), 0, "j").unwrap();
        assert_eq!((r.cluster.as_str(), r.authority.as_str()), ("idp", "idp"));
        assert!(r.headers.iter().any(|(k, v)| k == "authorization" && v.starts_with("Basic ")));
    }

    #[test]
    fn client_credentials_uses_the_callers_credentials() {
        let p = plan("client_auth: tls_client_auth\ntls_client_auth_cluster: idp-mtls\n");
        let g = Grant::ClientCredentials(Basic { user: "svc".into(), password: "pw".into() });
        let r = token_request(&p, &meta(&p), &g, 0, "j").unwrap();
        assert_eq!(r.cluster, "idp");
        assert!(r.headers.contains(&("authorization".into(), client_auth::basic("svc", "pw"))));
        assert_eq!(form(&r)[0], ("grant_type".into(), "client_credentials".into()));
    }

    fn resp(status: Option<u16>, body: &str, elapsed_ms: u64) -> IdpResponse {
        IdpResponse { status, body: body.as_bytes().to_vec(), elapsed_ms }
    }

    #[test]
    fn token_responses_map_to_errors_a_user_can_act_on() {
        let g = john();
        let t = ClientAuth::TlsClientAuth;
        let ok = parse_token_response(&g, t, &resp(Some(200), r#"{"access_token":"at","token_type":"Bearer","expires_in":60}"#, 1), 1000).unwrap();
        assert_eq!((ok.access_token.as_str(), ok.expires_in), ("at", Some(60)));
        let e = |s, b: &str, el| parse_token_response(&g, t, &resp(s, b, el), 1000).unwrap_err();
        assert_eq!(e(Some(400), r#"{"error":"invalid_grant"}"#, 1), Error::InvalidCredentials);
        assert_eq!(e(Some(401), r#"{"error":"invalid_client"}"#, 1), Error::ClientRejected { method: "tls_client_auth" });
        assert_eq!(e(Some(400), r#"{"error":"unauthorized_client"}"#, 1), Error::IdpRefused { error: "unauthorized_client".into() });
        assert_eq!(e(Some(503), "maintenance", 1), Error::IdpUnavailable("server error"));
        assert_eq!(e(Some(503), "upstream connect error", 1), Error::IdpUnavailable("cannot connect to the identity provider"));
        assert_eq!(e(Some(200), "{\"token_type\":\"Bearer\"}", 1), Error::IdpBadResponse("token response has no access_token"));
        assert_eq!(e(Some(200), "<html>", 1), Error::IdpBadResponse("token response is not JSON"));
        assert_eq!(e(None, "", 1000), Error::IdpTimeout);
        assert_eq!(e(Some(504), "upstream request timeout", 1000), Error::IdpTimeout);
        assert!(matches!(e(None, "", 3), Error::IdpUnavailable(_)));
        assert!(matches!(e(Some(200), "not json", 1), Error::IdpBadResponse(_)));
        assert!(matches!(e(Some(200), r#"{"access_token":"x","token_type":"mac"}"#, 1), Error::IdpBadResponse(_)));
        assert!(matches!(e(Some(302), "", 1), Error::IdpBadResponse(_)));
        let cc = Grant::ClientCredentials(Basic { user: "a".into(), password: "b".into() });
        assert_eq!(parse_token_response(&cc, t, &resp(Some(401), r#"{"error":"invalid_client"}"#, 1), 1000).unwrap_err(), Error::InvalidCredentials);
    }

    #[test]
    fn tokens_with_control_characters_are_refused() {
        // Found by fuzz/ (corpus/idp_responses/token_lf): the access token went upstream
        // as `Authorization: Bearer …` with a line feed in it.
        let p = plan("");
        for body in [
            r#"{"access_token":"a\nb","token_type":"Bearer"}"#,
            r#"{"access_token":"a","refresh_token":"r\r\nx: y"}"#,
            r#"{"access_token":"a","id_token":"i\u0000"}"#,
        ] {
            let resp = IdpResponse { status: Some(200), body: body.as_bytes().to_vec(), elapsed_ms: 1 };
            assert_eq!(
                parse_token_response(&john(), p.token_auth, &resp, 10_000),
                Err(Error::IdpBadResponse("token response has a token with control characters")),
                "{body}"
            );
        }
    }

    #[test]
    fn idp_error_codes_are_sanitized() {
        let e = parse_token_response(&john(), ClientAuth::None, &resp(Some(400), r#"{"error":"bad\"<script>\u0001"}"#, 1), 1000).unwrap_err();
        assert_eq!(e, Error::IdpRefused { error: "bad<script>".into() });
    }

    #[test]
    fn cache_key_depends_on_password() {
        let p = plan("");
        let other = Grant::Password(Basic { user: "john".into(), password: "x".into() });
        assert_ne!(john().cache_key(&p), other.cache_key(&p));
        assert!(john().cache_key(&p).is_some());
        assert_eq!(Grant::RefreshToken("rt".into()).cache_key(&p), None);
    }
}
