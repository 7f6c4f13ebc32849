//! The one place where an [`Error`] becomes the client's answer: status, RFC 6750
//! `WWW-Authenticate` challenges (one per credential kind the policy accepts), and a short
//! JSON body `{"error", "message"}` (Kong's `unauthorized_error_message` /
//! `forbidden_error_message` for `401` / `403`), with `error_description` when
//! `display_errors` is on. The code (`error`) is always there: it names no secret and tells
//! a client what to do; the description says more than an outsider needs (which check
//! failed), so, as in Kong, it is shown only when asked for. The log always has it.

use crate::core::error::Error;
use crate::core::header::{names, HeaderValue, Headers, Static};
use crate::core::method::{AuthMethod, Methods};
use crate::core::reply::Reply;

const BASIC: Static = HeaderValue::from_static("Basic realm=\"oidc\", charset=\"UTF-8\"");

/// Which challenges a `401` carries, and what the body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeSettings {
    /// A method takes bearer tokens.
    pub bearer: bool,
    /// A method takes `Authorization: Basic` (password, client credentials).
    pub basic: bool,
    /// `display_errors`: the description in the body and in `WWW-Authenticate`.
    pub display_errors: bool,
    /// `unauthorized_error_message`, `forbidden_error_message`.
    pub unauthorized_message: String,
    pub forbidden_message: String,
}

impl ChallengeSettings {
    pub fn for_methods(m: Methods) -> Self {
        ChallengeSettings {
            bearer: m.takes_bearer(),
            basic: m.has(AuthMethod::Password) || m.has(AuthMethod::ClientCredentials),
            display_errors: false,
            unauthorized_message: "Unauthorized".into(),
            forbidden_message: "Forbidden".into(),
        }
    }

    /// `WWW-Authenticate` values; `bearer_error` is the RFC 6750 `error` and description.
    pub fn challenges(&self, bearer_error: Option<(&str, &str)>) -> Vec<HeaderValue> {
        let mut out = Vec::new();
        if self.bearer || bearer_error.is_some() {
            let v = match bearer_error {
                // RFC 6750 3: no `"` or `\` inside a quoted value.
                Some((e, d)) if self.display_errors => {
                    let d: String = d.chars().filter(|c| *c != '"' && *c != '\\').collect();
                    format!("Bearer realm=\"oidc\", error=\"{e}\", error_description=\"{d}\"")
                }
                Some((e, _)) => format!("Bearer realm=\"oidc\", error=\"{e}\""),
                None => "Bearer realm=\"oidc\"".to_string(),
            };
            out.extend(HeaderValue::new(v).ok());
        }
        if self.basic {
            out.push(BASIC.into());
        }
        out
    }
}

/// The local reply for `e`.
pub fn reply(e: &Error, ch: &ChallengeSettings) -> Reply {
    reply_with(e, ch, Vec::new())
}

/// The same, with more headers (cookies to clear).
pub fn reply_with(e: &Error, ch: &ChallengeSettings, more: Headers) -> Reply {
    let status = e.status();
    let description = e.to_string();
    let challenges = match e {
        Error::InvalidToken(_) | Error::InsufficientScope(_) => {
            let all = ch.challenges(Some((e.code(), &description)));
            // A 403 challenges only the bearer token it refused.
            if status == 403 {
                all.into_iter().take(1).collect()
            } else {
                all
            }
        }
        _ if status == 401 => ch.challenges(None),
        _ => Vec::new(),
    };
    let mut headers: Headers = challenges.into_iter().map(|c| (names::WWW_AUTHENTICATE, c)).collect();
    headers.extend(more);
    let mut body = serde_json::Map::new();
    body.insert("error".into(), e.code().into());
    match status {
        401 => body.insert("message".into(), ch.unauthorized_message.as_str().into()),
        403 => body.insert("message".into(), ch.forbidden_message.as_str().into()),
        _ => None,
    };
    if ch.display_errors {
        body.insert("error_description".into(), description.into());
    }
    Reply::json(status, headers, &serde_json::Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::TokenError;

    fn both() -> ChallengeSettings {
        ChallengeSettings { bearer: true, basic: true, display_errors: true, ..ChallengeSettings::for_methods(Methods::default()) }
    }

    #[test]
    fn descriptions_only_with_display_errors_and_kongs_messages_always() {
        let quiet = ChallengeSettings { display_errors: false, ..both() };
        let r = reply(&Error::InvalidToken(TokenError::OtherCertificate), &quiet);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, serde_json::json!({"error": "invalid_token", "message": "Unauthorized"}));
        assert_eq!(r.header("www-authenticate")[0], "Bearer realm=\"oidc\", error=\"invalid_token\"");
        let own = ChallengeSettings { forbidden_message: "Nope".into(), ..quiet };
        let body: serde_json::Value = serde_json::from_slice(&reply(&Error::InsufficientScope("scopes_required"), &own).body).unwrap();
        assert_eq!(body["message"], "Nope");
        let body: serde_json::Value = serde_json::from_slice(&reply(&Error::DiscoveryUnavailable, &own).body).unwrap();
        assert_eq!(body, serde_json::json!({"error": "discovery_unavailable"}));
    }

    #[test]
    fn bearer_errors_carry_rfc6750_challenges() {
        let r = reply(&Error::InvalidToken(TokenError::Invalid), &both());
        assert_eq!(r.status, 401);
        let ch = r.header("www-authenticate");
        assert_eq!(
            ch[0],
            "Bearer realm=\"oidc\", error=\"invalid_token\", error_description=\"the token's signature, issuer or lifetime is invalid\""
        );
        assert!(ch[1].starts_with("Basic "));
        let r = reply(&Error::InsufficientScope("scopes_required"), &both());
        assert_eq!(r.status, 403);
        let ch = r.header("www-authenticate");
        assert_eq!(ch.len(), 1);
        assert!(ch[0].contains("error=\"insufficient_scope\""), "{ch:?}");
        let r = reply(&Error::MissingCredentials, &both());
        assert_eq!(r.header("www-authenticate")[0], "Bearer realm=\"oidc\"");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(r.header("content-type"), vec!["application/json"]);
    }

    #[test]
    fn server_errors_carry_no_challenge() {
        let r = reply(&Error::DiscoveryUnavailable, &both());
        assert_eq!(r.status, 503);
        assert!(r.header("www-authenticate").is_empty());
    }
}
