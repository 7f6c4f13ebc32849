//! Why a request was not forwarded, and why a configuration was refused: enums all the way
//! down, typed by who is at fault.
//!
//! [`Error`] keeps a short top level (the client's fault, the IdP's, ours); each kind nests
//! an enum with the detail. [`Error::status`] and [`Error::code`] are the single mapping to
//! HTTP; the reply itself (challenges, body) is built in [`crate::core::challenge`]. Log and
//! body text comes from `Display` and never carries a credential or a token.

use std::fmt;

/// Why a request ended without going upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request carries no credential that any configured auth method accepts.
    MissingCredentials,
    /// A credential was found but is malformed.
    MalformedCredentials(CredentialError),
    /// The IdP refused the end user's (or calling client's) credentials.
    InvalidCredentials,
    /// The IdP refused the filter's own client authentication (wrong or missing client
    /// certificate, wrong secret, bad assertion); `method` is what the filter used.
    ClientRejected { method: &'static str },
    /// The IdP answered with an OAuth error the client cannot fix (misconfiguration).
    IdpRefused { error: String },
    /// The IdP answered a `4xx` without an OAuth error code (some answer a refused password,
    /// token or client certificate with a bare `403`): the caller's credentials or the
    /// gateway's client authentication were not accepted. Not a broken IdP: `401`.
    Refused { endpoint: &'static str, status: u16 },
    /// The IdP failed: unreachable, slow, broken answer, missing endpoint.
    Idp(IdpFault),
    /// The discovery document is not available (the IdP is down, or its document invalid).
    DiscoveryUnavailable,
    /// A bearer token (or refresh token) that is not acceptable (RFC 6750 `invalid_token`).
    InvalidToken(TokenError),
    /// A browser login could not be completed.
    LoginFailed(LoginError),
    /// The token is valid but fails a `*_required` rule (RFC 6750 `insufficient_scope`);
    /// carries the rule's config key.
    InsufficientScope(&'static str),
    /// The filter could not build what it needed (never caused by outside data).
    Internal(Internal),
}

/// A malformed credential in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    BasicNotBase64,
    BasicNotUtf8,
    BasicNoColon,
    BasicEmptyUser,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header and payload.
    Malformed,
    /// `none`, HMAC or an unknown algorithm.
    AlgorithmRefused,
    /// No key with this `kid` (after a JWKS re-fetch, or when one was not allowed).
    UnknownKey,
    /// `iss` is neither the policy's issuer nor one of its `issuers_allowed`.
    IssuerNotAllowed,
    /// The key exists but cannot verify this algorithm.
    KeyMismatch,
    /// Signature, issuer or time checks failed.
    Invalid,
    /// `exp` missing.
    NoExpiry,
    /// The IdP's key set is not available.
    KeysUnavailable,
    /// Introspection says `active: false`.
    Inactive,
    /// The userinfo endpoint refused the token.
    UserinfoRejected,
    /// The IdP refused a refresh token.
    RefreshRejected,
    /// `proof_of_possession_mtls: strict` and the token carries no `cnf.x5t#S256`.
    NotBound,
    /// The token is certificate-bound but the connection has no client certificate.
    CertificateMissing,
    /// The token is bound to another client certificate.
    OtherCertificate,
}

/// Why a browser login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    OtherIssuer,
    AccessDenied,
    IdpError,
    NoLoginInProgress,
    NoState,
    StateMismatch,
    NoCode,
    CodeRejected,
    NoIdToken,
    KeysUnavailable,
    BadIdToken,
    NoSubject,
    NoIssueTime,
    OtherClient,
    SeveralAudiences,
}

/// How the IdP failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpFault {
    /// No answer within `timeout`.
    Timeout,
    /// The connection could not be made.
    Unreachable,
    /// The connection was closed or reset before an answer.
    Reset,
    /// The TLS handshake failed.
    Tls,
    /// The IdP answered with a server error.
    ServerError,
    /// The host refused to send the call (the cluster is not configured).
    NotSent,
    /// The answer is not a valid protocol message.
    BadAnswer(BadAnswer),
    /// The IdP publishes no endpoint of this name.
    EndpointMissing(&'static str),
}

/// What was wrong with an IdP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadAnswer {
    TokenNotJson,
    NoAccessToken,
    NotATokenSet,
    EmptyAccessToken,
    ControlCharacters,
    NotBearer,
    ErrorWithoutCode,
    UnexpectedStatus,
    IntrospectionStatus,
    IntrospectionNotObject,
    UserinfoStatus,
    UserinfoNotObject,
    RevocationStatus,
}

/// Failures of the filter itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Internal {
    /// The route names a policy the filter does not have.
    UnknownPolicy,
    NoRedirectUri,
    NoClientSecret,
    NoSigningKey,
    SigningFailed,
}

impl Error {
    /// Short, stable name used in logs and in the JSON body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            Error::MissingCredentials | Error::MalformedCredentials(_) => "invalid_request",
            Error::InvalidCredentials => "invalid_grant",
            Error::ClientRejected { .. } => "invalid_client",
            Error::IdpRefused { .. } => "idp_refused",
            Error::Refused { .. } => "access_denied",
            Error::Idp(IdpFault::Timeout) => "idp_timeout",
            Error::Idp(IdpFault::EndpointMissing(_)) => "idp_misconfigured",
            Error::Idp(_) => "idp_unavailable",
            Error::DiscoveryUnavailable => "discovery_unavailable",
            Error::Internal(_) => "internal_error",
            Error::InvalidToken(_) => "invalid_token",
            Error::LoginFailed(_) => "login_failed",
            Error::InsufficientScope(_) => "insufficient_scope",
        }
    }

    /// HTTP status for the client.
    pub fn status(&self) -> u16 {
        match self {
            Error::MissingCredentials
            | Error::MalformedCredentials(_)
            | Error::InvalidCredentials
            | Error::ClientRejected { .. }
            | Error::Refused { .. }
            | Error::InvalidToken(_)
            | Error::LoginFailed(_) => 401,
            Error::InsufficientScope(_) => 403,
            Error::IdpRefused { .. } | Error::Idp(_) => match self {
                Error::Idp(IdpFault::Timeout) => 504,
                _ => 502,
            },
            Error::DiscoveryUnavailable => 503,
            Error::Internal(_) => 500,
        }
    }

    /// Human readable description; never contains secrets.
    pub fn description(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::MissingCredentials => f.write_str("credentials are required"),
            Error::MalformedCredentials(e) => write!(f, "malformed credentials: {e}"),
            Error::InvalidCredentials => f.write_str("the identity provider rejected the credentials"),
            Error::ClientRejected { method } => {
                write!(f, "the identity provider rejected the gateway's client authentication ({method})")
            }
            Error::IdpRefused { error } => write!(f, "the identity provider refused the request: {error}"),
            Error::Refused { endpoint, status } => write!(
                f,
                "the identity provider's {endpoint} refused the request with HTTP {status} and no OAuth error code: the credentials, the token or the gateway's client authentication were not accepted"
            ),
            Error::Idp(IdpFault::Timeout) => f.write_str("the identity provider did not answer in time"),
            Error::Idp(IdpFault::EndpointMissing(which)) => write!(f, "the identity provider publishes no {which}"),
            Error::Idp(IdpFault::BadAnswer(why)) => write!(f, "the identity provider sent an invalid answer: {why}"),
            Error::Idp(fault) => write!(f, "the identity provider is unavailable: {fault}"),
            Error::DiscoveryUnavailable => f.write_str("the identity provider's discovery document is not available yet"),
            Error::Internal(why) => write!(f, "internal error: {why}"),
            Error::InvalidToken(why) => write!(f, "{why}"),
            Error::LoginFailed(why) => write!(f, "{why}"),
            Error::InsufficientScope(rule) => write!(f, "the token does not satisfy `{rule}`"),
        }
    }
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CredentialError::BasicNotBase64 => "Basic credentials are not base64",
            CredentialError::BasicNotUtf8 => "Basic credentials are not UTF-8",
            CredentialError::BasicNoColon => "Basic credentials have no `:`",
            CredentialError::BasicEmptyUser => "Basic credentials have an empty user",
        })
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "the token is not a well-formed JWT",
            TokenError::AlgorithmRefused => "the token's signing algorithm is not accepted",
            TokenError::UnknownKey => "the token is signed with an unknown key",
            TokenError::IssuerNotAllowed => "the token's issuer is not allowed",
            TokenError::KeyMismatch => "the token's algorithm does not match its key",
            TokenError::Invalid => "the token's signature, issuer or lifetime is invalid",
            TokenError::NoExpiry => "the token has no expiry",
            TokenError::KeysUnavailable => "the identity provider's keys are not available",
            TokenError::Inactive => "the token is not active",
            TokenError::UserinfoRejected => "the identity provider's userinfo endpoint rejected the token",
            TokenError::RefreshRejected => "the refresh token is invalid, expired or revoked",
            TokenError::NotBound => "the token is not bound to a client certificate",
            TokenError::CertificateMissing => "the token is bound to a client certificate that was not presented",
            TokenError::OtherCertificate => "the token is bound to another client certificate",
        })
    }
}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoginError::OtherIssuer => "the callback comes from another identity provider (iss)",
            LoginError::AccessDenied => "the identity provider denied the login (access_denied)",
            LoginError::IdpError => "the identity provider answered the login with an error",
            LoginError::NoLoginInProgress => "no login in progress (the authorization cookie is missing or expired)",
            LoginError::NoState => "the callback has no state",
            LoginError::StateMismatch => "the callback's state does not match the login in progress",
            LoginError::NoCode => "the callback has no code",
            LoginError::CodeRejected => "the identity provider rejected the authorization code",
            LoginError::NoIdToken => "the token response has no ID token",
            LoginError::KeysUnavailable => "the identity provider's keys are not loaded",
            LoginError::BadIdToken => "the ID token is invalid (signature, issuer, audience, lifetime or nonce)",
            LoginError::NoSubject => "the ID token has no subject (sub)",
            LoginError::NoIssueTime => "the ID token has no issue time (iat)",
            LoginError::OtherClient => "the ID token was issued to another client (azp)",
            LoginError::SeveralAudiences => "the ID token has several audiences and no azp",
        })
    }
}

impl fmt::Display for IdpFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdpFault::Timeout => f.write_str("no answer in time"),
            IdpFault::Unreachable => f.write_str("cannot connect to the identity provider"),
            IdpFault::Reset => f.write_str("connection failed or was reset"),
            IdpFault::Tls => f.write_str("TLS handshake with the identity provider failed"),
            IdpFault::ServerError => f.write_str("server error"),
            IdpFault::NotSent => f.write_str("the IdP cluster is not available"),
            IdpFault::BadAnswer(why) => write!(f, "{why}"),
            IdpFault::EndpointMissing(which) => write!(f, "no {which}"),
        }
    }
}

impl fmt::Display for BadAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadAnswer::TokenNotJson => "token response is not JSON",
            BadAnswer::NoAccessToken => "token response has no access_token",
            BadAnswer::NotATokenSet => "token response is not a valid token set",
            BadAnswer::EmptyAccessToken => "token response has an empty access_token",
            BadAnswer::ControlCharacters => "token response has a token with control characters",
            BadAnswer::NotBearer => "token_type is not Bearer",
            BadAnswer::ErrorWithoutCode => "error without an OAuth error code",
            BadAnswer::UnexpectedStatus => "unexpected status",
            BadAnswer::IntrospectionStatus => "unexpected introspection status",
            BadAnswer::IntrospectionNotObject => "introspection answer is not a JSON object",
            BadAnswer::UserinfoStatus => "unexpected userinfo status",
            BadAnswer::UserinfoNotObject => "userinfo is not a JSON object",
            BadAnswer::RevocationStatus => "unexpected status from the revocation endpoint",
        })
    }
}

impl fmt::Display for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Internal::UnknownPolicy => "the route names a policy this filter does not have",
            Internal::NoRedirectUri => "no redirect_uri",
            Internal::NoClientSecret => "client secret missing",
            Internal::NoSigningKey => "client signing key missing",
            Internal::SigningFailed => "cannot sign the client assertion",
        })
    }
}

impl From<IdpFault> for Error {
    fn from(f: IdpFault) -> Self {
        Error::Idp(f)
    }
}

impl From<BadAnswer> for Error {
    fn from(b: BadAnswer) -> Self {
        Error::Idp(IdpFault::BadAnswer(b))
    }
}

impl From<TokenError> for Error {
    fn from(t: TokenError) -> Self {
        Error::InvalidToken(t)
    }
}

impl From<LoginError> for Error {
    fn from(l: LoginError) -> Self {
        Error::LoginFailed(l)
    }
}

impl From<CredentialError> for Error {
    fn from(c: CredentialError) -> Self {
        Error::MalformedCredentials(c)
    }
}

impl From<Internal> for Error {
    fn from(i: Internal) -> Self {
        Error::Internal(i)
    }
}

/// A configuration the filter refuses to load, always naming the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid oidc filter configuration: {}", self.0)
    }
}

impl ConfigError {
    /// `Err` with this message.
    pub fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError(msg.into()))
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
        assert_eq!(Error::Idp(IdpFault::Reset).status(), 502);
        assert_eq!(Error::Idp(IdpFault::Timeout).status(), 504);
        assert_eq!(Error::Idp(IdpFault::EndpointMissing("token_endpoint")).code(), "idp_misconfigured");
        assert_eq!(Error::DiscoveryUnavailable.status(), 503);
        assert_eq!(Error::InsufficientScope("scopes_required").status(), 403);
        assert_eq!(Error::Internal(Internal::SigningFailed).status(), 500);
    }

    #[test]
    fn descriptions_name_the_fault() {
        let d = Error::ClientRejected { method: "tls_client_auth" }.to_string();
        assert!(d.contains("tls_client_auth"), "{d}");
        assert_eq!(
            Error::from(BadAnswer::NoAccessToken).to_string(),
            "the identity provider sent an invalid answer: token response has no access_token"
        );
        assert_eq!(
            Error::Idp(IdpFault::Unreachable).to_string(),
            "the identity provider is unavailable: cannot connect to the identity provider"
        );
        assert_eq!(Error::from(TokenError::Inactive).to_string(), "the token is not active");
    }
}
