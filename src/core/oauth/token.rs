//! OAuth grants at the token endpoint: building the request and reading the answer.
//!
//! `password` authenticates the filter's own client with the configured method (mTLS with
//! `tls_client_auth`); `client_credentials` forwards the calling client's id and secret.
//! [`parse_token_response`] maps every IdP answer, including transport failures, to a
//! [`TokenSet`] or an [`Error`].

use std::fmt;

use serde::Deserialize;

use crate::core::cache;
use crate::core::client_auth::{self, ClientAuth, ClientSettings, Credentials};
use crate::core::credentials::Basic;
use crate::core::discovery::{Metadata, Which};
use crate::core::error::{BadAnswer, Error, IdpFault, Internal, LoginError, TokenError};
use crate::core::header::names;
use crate::core::idp::{self, Endpoint, IdpCall, IdpResponse, Purpose};

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
    pub fn auth(&self, client: &ClientSettings) -> ClientAuth {
        match self {
            Grant::Password(_) | Grant::RefreshToken(_) | Grant::AuthorizationCode { .. } => client.token_auth,
            Grant::ClientCredentials(_) => ClientAuth::ClientSecretBasic,
        }
    }

    /// Cache key: everything that makes the answer differ. `None` for grants whose answer
    /// must not be reused (a refresh token is single-use when the IdP rotates it).
    pub fn cache_key(&self, client_id: &str, scope: &str) -> Option<cache::Key> {
        let (user, secret) = match self {
            Grant::Password(b) | Grant::ClientCredentials(b) => (&b.user, &b.password),
            Grant::RefreshToken(_) | Grant::AuthorizationCode { .. } => return None,
        };
        Some(cache::key(&[self.name(), client_id, user, secret, scope]))
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

/// The token request for `grant`: `scope` for the password and client credentials
/// grants, `redirect_uri` for the authorization code grant.
pub fn token_request(
    client: &ClientSettings,
    meta: &Metadata,
    grant: &Grant,
    scope: &str,
    redirect_uri: Option<&Endpoint>,
    now_secs: u64,
    jti: &str,
) -> Result<IdpCall, Error> {
    /// `scope` and `audience` (space-separated, as Auth0 takes it) for the grants that
    /// follow no login (the login's authorization request carried them).
    fn with_scope<'a>(mut p: Vec<(&'static str, &'a str)>, scope: &'a str, audience: &'a str) -> Vec<(&'static str, &'a str)> {
        if !scope.is_empty() {
            p.push(("scope", scope));
        }
        if !audience.is_empty() {
            p.push(("audience", audience));
        }
        p
    }
    let audience = client.extras.audience.join(" ");
    let post = |params: &[(&str, &str)]| client.post(meta, Which::Token, Purpose::Token, params, now_secs, jti);
    match grant {
        Grant::Password(b) => {
            post(&with_scope(vec![("grant_type", "password"), ("username", &b.user), ("password", &b.password)], scope, &audience))
        }
        Grant::RefreshToken(rt) => post(&[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())]),
        Grant::AuthorizationCode { code, verifier } => {
            let redirect = redirect_uri.ok_or(Internal::NoRedirectUri)?;
            post(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect.url.as_str()),
                ("code_verifier", verifier.as_str()),
            ])
        }
        Grant::ClientCredentials(b) => {
            let auth = ClientAuth::ClientSecretBasic;
            let (cluster, endpoint) = client.route(meta, Which::Token, auth).ok_or(IdpFault::EndpointMissing("token_endpoint"))?;
            let creds = Credentials { headers: vec![(names::AUTHORIZATION, client_auth::basic(&b.user, &b.password))], form: Vec::new() };
            let params = with_scope(vec![("grant_type", "client_credentials")], scope, &audience);
            Ok(client_auth::form_post(Purpose::Token, cluster, endpoint, client.timeout_ms, &params, creds, client.extra(Purpose::Token)))
        }
    }
}

/// Reads the token endpoint's answer to `grant`.
pub fn parse_token_response(grant: &Grant, auth: ClientAuth, resp: &IdpResponse, timeout_ms: u64) -> Result<TokenSet, Error> {
    let status = resp.answered(timeout_ms)?;
    if status == 200 {
        let tokens: TokenSet =
            serde_json::from_slice(&resp.body).map_err(|_| match serde_json::from_slice::<serde_json::Value>(&resp.body) {
                Ok(serde_json::Value::Object(o)) if !o.contains_key("access_token") => BadAnswer::NoAccessToken,
                Ok(_) => BadAnswer::NotATokenSet,
                Err(_) => BadAnswer::TokenNotJson,
            })?;
        if tokens.access_token.is_empty() {
            return Err(BadAnswer::EmptyAccessToken.into());
        }
        // Tokens go into headers (upstream, back to the client): a control character would
        // split the header. RFC 6749 A.12, A.17: they are printable.
        let printable = [Some(&tokens.access_token), tokens.refresh_token.as_ref(), tokens.id_token.as_ref()]
            .into_iter()
            .flatten()
            .all(|t| !t.chars().any(char::is_control));
        if !printable {
            return Err(BadAnswer::ControlCharacters.into());
        }
        if let Some(t) = &tokens.token_type {
            // RFC 6749 5.1: case-insensitive; anything but bearer (or DPoP) cannot be forwarded as-is.
            if !t.eq_ignore_ascii_case("bearer") && !t.eq_ignore_ascii_case("dpop") {
                return Err(BadAnswer::NotBearer.into());
            }
        }
        return Ok(tokens);
    }
    let oauth = idp::oauth_error(&resp.body);
    match (status, oauth.as_deref()) {
        (400 | 401, Some("invalid_client")) => Err(match grant {
            // The caller's own client id/secret were wrong.
            Grant::ClientCredentials(_) => Error::InvalidCredentials,
            _ => Error::ClientRejected { method: auth.name() },
        }),
        (400 | 401, Some("invalid_grant")) => Err(match grant {
            Grant::RefreshToken(_) => TokenError::RefreshRejected.into(),
            Grant::AuthorizationCode { .. } => LoginError::CodeRejected.into(),
            _ => Error::InvalidCredentials,
        }),
        (400..=499, Some(e)) => Err(Error::IdpRefused { error: e.to_string() }),
        (400..=499, None) => Err(idp::refusal(Purpose::Token, status).unwrap_or(BadAnswer::ErrorWithoutCode.into())),
        _ => Err(BadAnswer::UnexpectedStatus.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::core::config::Plan;

    const SCOPE: &str = "openid profile";

    fn plan(extra: &str) -> Plan {
        Plan::parse(format!("issuer: https://idp\nidp_cluster: idp\nclient_id: cid\nscopes: [openid, profile]\n{extra}").as_bytes())
            .unwrap()
    }

    fn meta(_: &Plan) -> Metadata {
        Metadata::parse(
            "https://idp",
            br#"{"issuer":"https://idp","token_endpoint":"https://idp/token","mtls_endpoint_aliases":{"token_endpoint":"https://mtls.idp/token"}}"#,
        )
        .unwrap()
    }

    fn john() -> Grant {
        Grant::Password(Basic { user: "john".into(), password: "d&e=".into() })
    }

    fn form(r: &IdpCall) -> Vec<(String, String)> {
        form_urlencoded::parse(&r.body).into_owned().collect()
    }

    #[test]
    fn password_over_mtls_goes_to_the_alias_through_the_tls_cluster() {
        let p = plan("client_auth: tls_client_auth\ntls_client_auth_cluster: idp-mtls\n");
        let r = token_request(&p.policy.client, &meta(&p), &john(), SCOPE, None, 0, "j").unwrap();
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
        assert!(!r.headers.iter().any(|(k, _)| *k == names::AUTHORIZATION));
    }

    #[test]
    fn token_post_args_headers_and_audience_go_with_every_grant() {
        let p = plan(
            "client_auth: tls_client_auth\ntls_client_auth_cluster: idp-mtls\naudience: [https://api.example]\n\
             token_post_args_names: [resource]\ntoken_post_args_values: ['https://api.example/v1']\n\
             token_headers_names: [X-Api-Key]\ntoken_headers_values: [k-123]\n",
        );
        let r = token_request(&p.policy.client, &meta(&p), &john(), SCOPE, None, 0, "j").unwrap();
        let f = form(&r);
        assert_eq!(f[0], ("grant_type".into(), "password".into()));
        assert!(f.contains(&("audience".into(), "https://api.example".into())), "{f:?}");
        assert_eq!(f.last(), Some(&("resource".into(), "https://api.example/v1".into())), "{f:?}");
        assert!(r.headers.iter().any(|(k, v)| k.as_str() == "x-api-key" && v.as_str() == "k-123"));
        let cc = Grant::ClientCredentials(Basic { user: "svc".into(), password: "pw".into() });
        let r = token_request(&p.policy.client, &meta(&p), &cc, SCOPE, None, 0, "j").unwrap();
        assert!(form(&r).contains(&("resource".into(), "https://api.example/v1".into())));
        assert!(form(&r).contains(&("audience".into(), "https://api.example".into())));
        // The login's authorization request carried the audience: not the code exchange.
        let code = Grant::AuthorizationCode { code: "c".into(), verifier: "v".into() };
        let redirect = Endpoint::parse("https://gw/callback").unwrap();
        let r = token_request(&p.policy.client, &meta(&p), &code, SCOPE, Some(&redirect), 0, "j").unwrap();
        assert!(!form(&r).iter().any(|(k, _)| k == "audience"));
        assert!(form(&r).contains(&("resource".into(), "https://api.example/v1".into())));
        assert!(Plan::parse(
            b"issuer: https://idp\nidp_cluster: idp\nclient_id: c\ntoken_post_args_names: [grant_type]\ntoken_post_args_values: [x]\n"
        )
        .is_err());
    }

    #[test]
    fn password_with_secret_uses_plain_endpoint_and_basic() {
        let p = plan("client_secret: s\n");
        let r = token_request(&p.policy.client, &meta(&p), &john(), SCOPE, None, 0, "j").unwrap();
        assert_eq!((r.cluster.as_str(), r.authority.as_str()), ("idp", "idp"));
        assert!(r.headers.iter().any(|(k, v)| *k == names::AUTHORIZATION && v.as_str().starts_with("Basic ")));
    }

    #[test]
    fn client_credentials_uses_the_callers_credentials() {
        let p = plan("client_auth: tls_client_auth\ntls_client_auth_cluster: idp-mtls\n");
        let g = Grant::ClientCredentials(Basic { user: "svc".into(), password: "pw".into() });
        let r = token_request(&p.policy.client, &meta(&p), &g, SCOPE, None, 0, "j").unwrap();
        assert_eq!(r.cluster, "idp");
        assert!(r.headers.contains(&(names::AUTHORIZATION, client_auth::basic("svc", "pw"))));
        assert_eq!(form(&r)[0], ("grant_type".into(), "client_credentials".into()));
    }

    fn resp(status: Option<u16>, body: &str, elapsed_ms: u64) -> IdpResponse {
        IdpResponse { status, body: body.as_bytes().to_vec(), elapsed_ms }
    }

    #[test]
    fn token_responses_map_to_errors_a_user_can_act_on() {
        let g = john();
        let t = ClientAuth::TlsClientAuth;
        let ok = parse_token_response(&g, t, &resp(Some(200), r#"{"access_token":"at","token_type":"Bearer","expires_in":60}"#, 1), 1000)
            .unwrap();
        assert_eq!((ok.access_token.as_str(), ok.expires_in), ("at", Some(60)));
        let e = |s, b: &str, el| parse_token_response(&g, t, &resp(s, b, el), 1000).unwrap_err();
        assert_eq!(e(Some(400), r#"{"error":"invalid_grant"}"#, 1), Error::InvalidCredentials);
        assert_eq!(e(Some(401), r#"{"error":"invalid_client"}"#, 1), Error::ClientRejected { method: "tls_client_auth" });
        assert_eq!(e(Some(400), r#"{"error":"unauthorized_client"}"#, 1), Error::IdpRefused { error: "unauthorized_client".into() });
        assert_eq!(e(Some(503), "maintenance", 1), Error::Idp(IdpFault::ServerError));
        assert_eq!(e(Some(503), "upstream connect error", 1), Error::Idp(IdpFault::Unreachable));
        assert_eq!(e(Some(200), "{\"token_type\":\"Bearer\"}", 1), BadAnswer::NoAccessToken.into());
        assert_eq!(e(Some(200), "<html>", 1), BadAnswer::TokenNotJson.into());
        assert_eq!(e(None, "", 1000), Error::Idp(IdpFault::Timeout));
        assert_eq!(e(Some(504), "upstream request timeout", 1000), Error::Idp(IdpFault::Timeout));
        assert_eq!(e(None, "", 3), Error::Idp(IdpFault::Reset));
        assert_eq!(e(Some(200), "not json", 1), BadAnswer::TokenNotJson.into());
        assert_eq!(e(Some(200), r#"{"access_token":"x","token_type":"mac"}"#, 1), BadAnswer::NotBearer.into());
        assert_eq!(e(Some(302), "", 1), BadAnswer::UnexpectedStatus.into());
        // A bare 4xx is a refusal (401), not a broken IdP (502); a wrong endpoint is not.
        assert_eq!(e(Some(403), "", 1), Error::Refused { endpoint: "token_endpoint", status: 403 });
        assert_eq!(e(Some(401), "<html>Unauthorized</html>", 1), Error::Refused { endpoint: "token_endpoint", status: 401 });
        assert_eq!(e(Some(403), "", 1).status(), 401);
        assert_eq!(e(Some(404), "", 1), BadAnswer::ErrorWithoutCode.into());
        assert_eq!(e(Some(404), "", 1).status(), 502);
        let cc = Grant::ClientCredentials(Basic { user: "a".into(), password: "b".into() });
        assert_eq!(
            parse_token_response(&cc, t, &resp(Some(401), r#"{"error":"invalid_client"}"#, 1), 1000).unwrap_err(),
            Error::InvalidCredentials
        );
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
                parse_token_response(&john(), p.policy.client.token_auth, &resp, 10_000),
                Err(BadAnswer::ControlCharacters.into()),
                "{body}"
            );
        }
    }

    #[test]
    fn idp_error_codes_are_sanitized() {
        let e =
            parse_token_response(&john(), ClientAuth::None, &resp(Some(400), r#"{"error":"bad\"<script>\u0001"}"#, 1), 1000).unwrap_err();
        assert_eq!(e, Error::IdpRefused { error: "bad<script>".into() });
    }

    #[test]
    fn cache_key_depends_on_password() {
        let p = plan("");
        let other = Grant::Password(Basic { user: "john".into(), password: "x".into() });
        let key = |g: &Grant| g.cache_key(&p.policy.client.client.id, SCOPE);
        assert_ne!(key(&john()), key(&other));
        assert!(key(&john()).is_some());
        assert_eq!(key(&Grant::RefreshToken("rt".into())), None);
    }
}
