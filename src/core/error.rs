//! Errors a request can end in, and the one place where each becomes an HTTP answer.
//!
//! Every failure on the request path is an [`Error`]; [`Error::reply`] maps it to the status,
//! `WWW-Authenticate` challenge and short JSON body the client sees. Nothing here carries a
//! secret: descriptions name what went wrong, never a credential or a token.

use crate::core::config::Plan;
use crate::core::reply::Reply;

/// Why a request was not forwarded upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request carries no credential that any configured auth method accepts.
    MissingCredentials,
    /// A credential was found but is malformed (for example Basic that is not base64).
    MalformedCredentials(&'static str),
    /// The IdP refused the end user's (or calling client's) credentials.
    InvalidCredentials,
    /// The IdP refused the filter's own client authentication (wrong or missing client
    /// certificate, wrong secret, bad assertion). `method` is the method the filter used.
    ClientRejected { method: &'static str },
    /// The IdP answered with an OAuth error the client cannot fix (misconfiguration).
    IdpRefused { error: String },
    /// The IdP could not be reached, reset the connection, or answered with a server error.
    IdpUnavailable(&'static str),
    /// The IdP did not answer within `timeout`.
    IdpTimeout,
    /// The IdP answered something that is not a valid protocol message.
    IdpBadResponse(&'static str),
    /// Discovery has not completed within `timeout`.
    DiscoveryUnavailable,
    /// The IdP does not publish an endpoint the configured flow needs.
    EndpointMissing(&'static str),
    /// The filter could not build the request to the IdP (for example a signing failure).
    Internal(&'static str),
    /// A bearer token that is malformed, expired, revoked, wrongly signed or not bound to the
    /// client's certificate (RFC 6750 `invalid_token`).
    InvalidToken(&'static str),
    /// A browser login could not be completed (state, nonce, ID token, IdP error).
    LoginFailed(&'static str),
    /// The token is valid but fails a `*_required` rule (RFC 6750 `insufficient_scope`);
    /// carries the rule's config key.
    InsufficientScope(&'static str),
}

impl Error {
    /// Short, stable name used in logs and in the JSON body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            Error::MissingCredentials | Error::MalformedCredentials(_) => "invalid_request",
            Error::InvalidCredentials => "invalid_grant",
            Error::ClientRejected { .. } => "invalid_client",
            Error::IdpRefused { .. } => "idp_refused",
            Error::IdpUnavailable(_) | Error::IdpBadResponse(_) => "idp_unavailable",
            Error::IdpTimeout => "idp_timeout",
            Error::DiscoveryUnavailable => "discovery_unavailable",
            Error::EndpointMissing(_) => "idp_misconfigured",
            Error::Internal(_) => "internal_error",
            Error::InvalidToken(_) => "invalid_token",
            Error::LoginFailed(_) => "login_failed",
            Error::InsufficientScope(_) => "insufficient_scope",
        }
    }

    /// Human readable description; never contains secrets.
    pub fn description(&self) -> String {
        match self {
            Error::MissingCredentials => "credentials are required".into(),
            Error::MalformedCredentials(what) => format!("malformed credentials: {what}"),
            Error::InvalidCredentials => "the identity provider rejected the credentials".into(),
            Error::ClientRejected { method } => format!(
                "the identity provider rejected the gateway's client authentication ({method})"
            ),
            Error::IdpRefused { error } => {
                format!("the identity provider refused the request: {error}")
            }
            Error::IdpUnavailable(why) => format!("the identity provider is unavailable: {why}"),
            Error::IdpTimeout => "the identity provider did not answer in time".into(),
            Error::IdpBadResponse(why) => {
                format!("the identity provider sent an invalid answer: {why}")
            }
            Error::DiscoveryUnavailable => {
                "the identity provider's discovery document is not available yet".into()
            }
            Error::EndpointMissing(which) => {
                format!("the identity provider publishes no {which}")
            }
            Error::Internal(why) => format!("internal error: {why}"),
            Error::InvalidToken(why) | Error::LoginFailed(why) => (*why).to_string(),
            Error::InsufficientScope(rule) => format!("the token does not satisfy `{rule}`"),
        }
    }

    /// HTTP status for the client.
    pub fn status(&self) -> u16 {
        match self {
            Error::MissingCredentials
            | Error::MalformedCredentials(_)
            | Error::InvalidCredentials
            | Error::ClientRejected { .. }
            | Error::InvalidToken(_)
            | Error::LoginFailed(_) => 401,
            Error::InsufficientScope(_) => 403,
            Error::IdpRefused { .. }
            | Error::IdpUnavailable(_)
            | Error::IdpBadResponse(_)
            | Error::EndpointMissing(_) => 502,
            Error::IdpTimeout => 504,
            Error::DiscoveryUnavailable => 503,
            Error::Internal(_) => 500,
        }
    }

    /// The local reply for this error under `plan` (challenges depend on the auth methods).
    pub fn reply(&self, plan: &Plan) -> Reply {
        let status = self.status();
        let mut headers = Vec::new();
        let description = self.description();
        let challenges = match self {
            Error::InvalidToken(_) | Error::InsufficientScope(_) => {
                let all = plan.challenges(Some((self.code(), &description)));
                // A 403 challenges only the bearer token it refused.
                if status == 403 { all.into_iter().take(1).collect() } else { all }
            }
            _ if status == 401 => plan.challenges(None),
            _ => Vec::new(),
        };
        for challenge in challenges {
            headers.push(("www-authenticate".to_string(), challenge));
        }
        let body = serde_json::json!({
            "error": self.code(),
            "error_description": description,
        });
        Reply::json(status, headers, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(Error::MissingCredentials.status(), 401);
        assert_eq!(Error::InvalidCredentials.status(), 401);
        assert_eq!(Error::ClientRejected { method: "tls_client_auth" }.status(), 401);
        assert_eq!(Error::IdpUnavailable("reset").status(), 502);
        assert_eq!(Error::IdpTimeout.status(), 504);
        assert_eq!(Error::DiscoveryUnavailable.status(), 503);
    }

    #[test]
    fn bearer_errors_carry_rfc6750_challenges() {
        let plan = Plan::parse(b"issuer: https://i\nidp_cluster: c\nclient_id: x\nauth_methods: [bearer, password]\n").unwrap();
        let r = Error::InvalidToken("the token has expired").reply(&plan);
        assert_eq!(r.status, 401);
        let ch: Vec<&str> = r.headers.iter().filter(|(k, _)| k == "www-authenticate").map(|(_, v)| v.as_str()).collect();
        assert_eq!(ch[0], "Bearer realm=\"oidc\", error=\"invalid_token\", error_description=\"the token has expired\"");
        assert!(ch[1].starts_with("Basic "));
        let r = Error::InsufficientScope("scopes_required").reply(&plan);
        assert_eq!(r.status, 403);
        let ch: Vec<&str> = r.headers.iter().filter(|(k, _)| k == "www-authenticate").map(|(_, v)| v.as_str()).collect();
        assert_eq!(ch.len(), 1);
        assert!(ch[0].contains("error=\"insufficient_scope\""), "{ch:?}");
        let r = Error::MissingCredentials.reply(&plan);
        assert!(r.headers.iter().any(|(k, v)| k == "www-authenticate" && v == "Bearer realm=\"oidc\""));
    }

    #[test]
    fn client_rejection_names_the_method() {
        let d = Error::ClientRejected { method: "tls_client_auth" }.description();
        assert!(d.contains("tls_client_auth"), "{d}");
    }
}
