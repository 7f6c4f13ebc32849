//! The plugin configuration: parsed once from YAML or JSON into an immutable [`Plan`].
//!
//! Field names follow Kong's `openid-connect` plugin wherever the meaning is the same.
//! Everything is validated here, at load: unknown keys, wrong types, missing companions
//! (a TLS client auth method without `tls_client_auth_cluster`, a secret method without
//! `client_secret` …). A [`Plan`] that exists is one the request path can trust.

use std::fmt;

use serde::Deserialize;

use crate::core::claims::Rule;
use crate::core::client_auth::{ClientAuth, Signer};
use crate::core::idp::Endpoint;
use crate::core::session::{CookieAttrs, Sealer, Timeouts};

/// A configuration error, always naming the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid oidc filter configuration: {}", self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// The ways a request can be authenticated, in the order Kong tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    Session,
    Bearer,
    Introspection,
    Userinfo,
    RefreshToken,
    Password,
    ClientCredentials,
    AuthorizationCode,
}

impl AuthMethod {
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Session => "session",
            AuthMethod::Bearer => "bearer",
            AuthMethod::Introspection => "introspection",
            AuthMethod::Userinfo => "userinfo",
            AuthMethod::RefreshToken => "refresh_token",
            AuthMethod::Password => "password",
            AuthMethod::ClientCredentials => "client_credentials",
            AuthMethod::AuthorizationCode => "authorization_code",
        }
    }

    /// Methods this build implements.
    pub const SUPPORTED: [AuthMethod; 8] = [
        AuthMethod::Session,
        AuthMethod::Bearer,
        AuthMethod::Introspection,
        AuthMethod::Userinfo,
        AuthMethod::RefreshToken,
        AuthMethod::Password,
        AuthMethod::ClientCredentials,
        AuthMethod::AuthorizationCode,
    ];

    /// Methods whose credential is a bearer access token.
    pub fn takes_bearer(self) -> bool {
        matches!(self, AuthMethod::Bearer | AuthMethod::Introspection | AuthMethod::Userinfo)
    }
}

/// How the access token is handed upstream (`upstream_access_token_header`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    /// Lowercase header name.
    pub name: String,
    /// Prefix the value with `Bearer `.
    pub bearer: bool,
}

impl TokenHeader {
    /// Parses Kong's `name[:bearer]` notation.
    fn parse(key: &str, spec: &str) -> Result<Self, ConfigError> {
        let (name, kind) = match spec.split_once(':') {
            Some((n, k)) => (n.trim(), Some(k.trim())),
            None => (spec.trim(), None),
        };
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return err(format!("`{key}`: `{spec}` is not a valid header name"));
        }
        let bearer = match kind.map(|k| k.to_ascii_lowercase()) {
            None => false,
            Some(k) if k == "bearer" => true,
            Some(k) => return err(format!("`{key}`: unknown value type `{k}` (only `bearer`)")),
        };
        Ok(TokenHeader { name: name.to_ascii_lowercase(), bearer })
    }

    pub fn value(&self, token: &str) -> String {
        if self.bearer {
            format!("Bearer {token}")
        } else {
            token.to_string()
        }
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The filter's own OAuth client.
pub struct Client {
    pub id: String,
    pub secret: Option<String>,
    /// Key for `private_key_jwt` / algorithm for `client_secret_jwt`.
    pub signer: Option<Signer>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Explicit RFC 8705 endpoint overrides (`mtls_*_endpoint`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MtlsOverrides {
    pub token: Option<Endpoint>,
    pub introspection: Option<Endpoint>,
    pub revocation: Option<Endpoint>,
}

/// Where bearer tokens are read from (`bearer_token_param_type`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BearerSources {
    pub header: bool,
    /// Query argument `access_token`.
    pub query: bool,
    /// `bearer_token_cookie_name`.
    pub cookie: Option<String>,
}

/// RFC 8705 section 3 certificate-bound access tokens (`proof_of_possession_mtls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pop {
    Off,
    Strict,
    Optional,
}

/// Headers the filter sets upstream (and removes when a client sends them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamHeaders {
    pub access_token: Option<TokenHeader>,
    pub id_token: Option<TokenHeader>,
    /// Base64 of the userinfo JSON.
    pub user_info: Option<String>,
    /// Base64 of the introspection JSON.
    pub introspection: Option<String>,
    /// (claim, header) pairs from `upstream_headers_claims` / `upstream_headers_names`.
    pub claims: Vec<(String, String)>,
}

impl UpstreamHeaders {
    /// Every header name the filter owns upstream.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.access_token
            .iter()
            .chain(self.id_token.iter())
            .map(|h| h.name.as_str())
            .chain(self.user_info.iter().map(String::as_str))
            .chain(self.introspection.iter().map(String::as_str))
            .chain(self.claims.iter().map(|(_, h)| h.as_str()))
    }
}

/// Browser sessions (`session`, `authorization_code`).
#[derive(Debug)]
pub struct Sessions {
    pub sealer: Sealer,
    pub cookie_name: String,
    pub authorization_cookie_name: String,
    pub attrs: CookieAttrs,
    pub timeouts: Timeouts,
    /// Lifetime of the authorization cookie (seconds).
    pub authorization_ttl: u64,
}

/// Logout (`logout_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logout {
    pub uri_suffix: Option<String>,
    pub query_arg: Option<String>,
    /// Upper-case methods.
    pub methods: Vec<String>,
    pub revoke: bool,
    pub revoke_access_token: bool,
    pub revoke_refresh_token: bool,
    pub redirect_uri: Option<String>,
}

/// The validated, immutable configuration.
#[derive(Debug)]
pub struct Plan {
    /// The issuer exactly as configured (compared with discovery's `issuer`).
    pub issuer: String,
    pub discovery: Endpoint,
    pub idp_cluster: String,
    pub tls_client_auth_cluster: Option<String>,
    pub client: Client,
    pub token_auth: ClientAuth,
    pub introspection_auth: ClientAuth,
    pub revocation_auth: ClientAuth,
    pub mtls: MtlsOverrides,
    /// Configured methods in Kong's order.
    pub auth_methods: Vec<AuthMethod>,
    /// Space-joined `scopes`.
    pub scope: String,
    pub timeout_ms: u64,
    pub cache_tokens: bool,
    pub upstream: UpstreamHeaders,
    pub bearer: BearerSources,
    /// Seconds of tolerance on `exp`, `nbf`, `iat`.
    pub leeway: u64,
    /// Non-empty `*_required` rules.
    pub rules: Vec<Rule>,
    pub introspection_check_active: bool,
    pub cache_introspection: bool,
    /// Request header that carries a refresh token (`refresh_token_param_name`).
    pub refresh_token_header: String,
    /// Response header for a rotated refresh token (`downstream_refresh_token_header`).
    pub downstream_refresh_token_header: String,
    pub hide_credentials: bool,
    pub pop: Pop,
    /// Present when `session` or `authorization_code` is configured.
    pub sessions: Option<Sessions>,
    /// `redirect_uri`: the first is sent to the IdP; the paths of all are callbacks.
    pub redirect_uris: Vec<Endpoint>,
    pub refresh_tokens: bool,
    pub logout: Logout,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn single(self, key: &str) -> Result<Option<String>, ConfigError> {
        match self {
            OneOrMany::One(s) => Ok(Some(s)),
            OneOrMany::Many(v) if v.len() <= 1 => Ok(v.into_iter().next()),
            OneOrMany::Many(_) => err(format!("`{key}`: one client is supported; give one value")),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    issuer: String,
    idp_cluster: String,
    tls_client_auth_cluster: Option<String>,
    client_id: Option<OneOrMany>,
    client_secret: Option<OneOrMany>,
    client_auth: Option<OneOrMany>,
    client_alg: Option<String>,
    client_private_key: Option<String>,
    client_private_key_id: Option<String>,
    token_endpoint_auth_method: Option<String>,
    introspection_endpoint_auth_method: Option<String>,
    revocation_endpoint_auth_method: Option<String>,
    mtls_token_endpoint: Option<String>,
    mtls_introspection_endpoint: Option<String>,
    mtls_revocation_endpoint: Option<String>,
    auth_methods: Option<Vec<String>>,
    scopes: Option<Vec<String>>,
    timeout: Option<u64>,
    cache_tokens: Option<bool>,
    upstream_access_token_header: Option<String>,
    upstream_id_token_header: Option<String>,
    upstream_user_info_header: Option<String>,
    upstream_introspection_header: Option<String>,
    upstream_headers_claims: Option<Vec<String>>,
    upstream_headers_names: Option<Vec<String>>,
    bearer_token_param_type: Option<Vec<String>>,
    bearer_token_cookie_name: Option<String>,
    leeway: Option<u64>,
    scopes_required: Option<Vec<String>>,
    scopes_claim: Option<Vec<String>>,
    audience_required: Option<Vec<String>>,
    audience_claim: Option<Vec<String>>,
    groups_required: Option<Vec<String>>,
    groups_claim: Option<Vec<String>>,
    roles_required: Option<Vec<String>>,
    roles_claim: Option<Vec<String>>,
    introspection_check_active: Option<bool>,
    cache_introspection: Option<bool>,
    refresh_token_param_name: Option<String>,
    downstream_refresh_token_header: Option<String>,
    hide_credentials: Option<bool>,
    proof_of_possession_mtls: Option<String>,
    redirect_uri: Option<OneOrMany>,
    session_secret: Option<String>,
    session_cookie_name: Option<String>,
    session_cookie_path: Option<String>,
    session_cookie_domain: Option<String>,
    session_cookie_same_site: Option<String>,
    session_cookie_http_only: Option<bool>,
    session_cookie_secure: Option<bool>,
    session_idling_timeout: Option<u64>,
    session_rolling_timeout: Option<u64>,
    session_absolute_timeout: Option<u64>,
    authorization_cookie_name: Option<String>,
    authorization_rolling_timeout: Option<u64>,
    refresh_tokens: Option<bool>,
    logout_uri_suffix: Option<String>,
    logout_query_arg: Option<String>,
    logout_post_arg: Option<String>,
    logout_methods: Option<Vec<String>>,
    logout_revoke: Option<bool>,
    logout_revoke_access_token: Option<bool>,
    logout_revoke_refresh_token: Option<bool>,
    logout_redirect_uri: Option<String>,
}

/// Default IdP call timeout, as Kong's `timeout`.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

impl Plan {
    /// Parses YAML or JSON bytes and validates them.
    pub fn parse(bytes: &[u8]) -> Result<Plan, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ConfigError("not UTF-8".into()))?;
        if text.trim().is_empty() {
            return err("the configuration is empty (`issuer` and `idp_cluster` are required)");
        }
        // serde_yaml_ng errors start with the path of the offending key (`timeout: invalid type…`).
        let raw: Raw = serde_yaml_ng::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        Plan::from_raw(raw)
    }

    fn from_raw(mut raw: Raw) -> Result<Plan, ConfigError> {
        // By default every method whose settings are present: sessions need a
        // `session_secret`, the authorization code flow also a `redirect_uri`.
        let has_secret = raw.session_secret.is_some();
        let has_redirect = raw.redirect_uri.is_some();
        let auth_methods = auth_methods(raw.auth_methods.take(), |m| match m {
            AuthMethod::Session => has_secret,
            AuthMethod::AuthorizationCode => has_secret && has_redirect,
            _ => true,
        })?;
        let uses_sessions = auth_methods.contains(&AuthMethod::Session) || auth_methods.contains(&AuthMethod::AuthorizationCode);
        let sessions = if uses_sessions { Some(sessions(&raw)?) } else { None };
        let issuer = raw.issuer.trim().to_string();
        Endpoint::parse(&issuer).map_err(|e| ConfigError(format!("`issuer`: {e}")))?;
        let discovery = Endpoint::parse(&format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ))
        .map_err(|e| ConfigError(format!("`issuer`: {e}")))?;

        let idp_cluster = non_empty("idp_cluster", raw.idp_cluster)?;
        let tls_client_auth_cluster = raw
            .tls_client_auth_cluster
            .map(|c| non_empty("tls_client_auth_cluster", c))
            .transpose()?;


        let client_id = match raw.client_id {
            Some(v) => v.single("client_id")?.map(|id| non_empty("client_id", id)).transpose()?,
            None => None,
        };
        let client_secret = match raw.client_secret {
            Some(v) => v.single("client_secret")?,
            None => None,
        }
        .filter(|s| !s.is_empty());
        let client_auth = match raw.client_auth {
            Some(v) => v.single("client_auth")?.map(|m| ClientAuth::parse("client_auth", &m)).transpose()?,
            None => None,
        };
        let token_auth = match raw.token_endpoint_auth_method {
            Some(m) => ClientAuth::parse("token_endpoint_auth_method", &m)?,
            None => client_auth.unwrap_or(if client_secret.is_some() {
                ClientAuth::ClientSecretBasic
            } else {
                ClientAuth::None
            }),
        };
        let introspection_auth = match raw.introspection_endpoint_auth_method {
            Some(m) => ClientAuth::parse("introspection_endpoint_auth_method", &m)?,
            None => token_auth,
        };
        let revocation_auth = match raw.revocation_endpoint_auth_method {
            Some(m) => ClientAuth::parse("revocation_endpoint_auth_method", &m)?,
            None => token_auth,
        };

        let needs_client = auth_methods.iter().any(|m| *m != AuthMethod::ClientCredentials);
        let client_id = match client_id {
            Some(id) => id,
            None if needs_client => {
                return err("`client_id` is required for the configured `auth_methods`")
            }
            None => String::new(),
        };

        let mut signer = None;
        for (key, method) in [
            ("token_endpoint_auth_method", token_auth),
            ("introspection_endpoint_auth_method", introspection_auth),
            ("revocation_endpoint_auth_method", revocation_auth),
        ] {
            if !needs_client {
                break;
            }
            if method.is_tls() && tls_client_auth_cluster.is_none() {
                return err(format!(
                    "`tls_client_auth_cluster` is required: `{key}` is {} (the Envoy cluster that presents the client certificate)",
                    method.name()
                ));
            }
            if method.needs_secret() && client_secret.is_none() {
                return err(format!("`client_secret` is required: `{key}` is {}", method.name()));
            }
            if method == ClientAuth::ClientSecretJwt && signer.is_none() {
                let secret = client_secret.as_deref().unwrap_or_default();
                signer = Some(Signer::hmac(raw.client_alg.as_deref(), secret)?);
            }
            if method == ClientAuth::PrivateKeyJwt {
                let Some(pem) = raw.client_private_key.as_deref() else {
                    return err(format!(
                        "`client_private_key` (PEM) is required: `{key}` is private_key_jwt"
                    ));
                };
                signer = Some(Signer::private_key(
                    raw.client_alg.as_deref(),
                    pem,
                    raw.client_private_key_id.as_deref(),
                )?);
            }
        }

        let mtls = MtlsOverrides {
            token: endpoint_opt("mtls_token_endpoint", raw.mtls_token_endpoint)?,
            introspection: endpoint_opt("mtls_introspection_endpoint", raw.mtls_introspection_endpoint)?,
            revocation: endpoint_opt("mtls_revocation_endpoint", raw.mtls_revocation_endpoint)?,
        };

        let scopes = raw.scopes.unwrap_or_else(|| vec!["openid".to_string()]);
        for s in &scopes {
            if s.is_empty() || !s.bytes().all(|b| b > 0x20 && b < 0x7f && b != b'"' && b != b'\\') {
                return err(format!("`scopes`: `{s}` is not a valid scope token"));
            }
        }

        let timeout_ms = raw.timeout.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=600_000).contains(&timeout_ms) {
            return err("`timeout`: must be between 1 and 600000 milliseconds");
        }

        let upstream = UpstreamHeaders {
            access_token: match raw.upstream_access_token_header {
                None => Some(TokenHeader { name: "authorization".into(), bearer: true }),
                Some(s) if s.trim().is_empty() => None,
                Some(s) => Some(TokenHeader::parse("upstream_access_token_header", &s)?),
            },
            id_token: optional_header("upstream_id_token_header", raw.upstream_id_token_header)?,
            user_info: optional_name("upstream_user_info_header", raw.upstream_user_info_header)?,
            introspection: optional_name("upstream_introspection_header", raw.upstream_introspection_header)?,
            claims: claim_headers(raw.upstream_headers_claims, raw.upstream_headers_names)?,
        };

        let bearer = bearer_sources(raw.bearer_token_param_type, raw.bearer_token_cookie_name)?;

        let rule = |name: &'static str, claim_key: &str, entries: Option<Vec<String>>, claim: Option<Vec<String>>, default: &[&str]| {
            let claim = claim.unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect());
            Rule::new(name, claim, entries.unwrap_or_default())
                .map_err(|e| ConfigError(format!("{} (`{claim_key}`)", e.0)))
        };
        let rules: Vec<Rule> = [
            rule("scopes_required", "scopes_claim", raw.scopes_required, raw.scopes_claim, &["scope"])?,
            rule("audience_required", "audience_claim", raw.audience_required, raw.audience_claim, &["aud"])?,
            rule("groups_required", "groups_claim", raw.groups_required, raw.groups_claim, &["groups"])?,
            rule("roles_required", "roles_claim", raw.roles_required, raw.roles_claim, &["roles"])?,
        ]
        .into_iter()
        .filter(|r| !r.any_of.is_empty())
        .collect();

        let pop = match raw.proof_of_possession_mtls.as_deref().map(str::trim) {
            None | Some("off") => Pop::Off,
            Some("strict") => Pop::Strict,
            Some("optional") => Pop::Optional,
            Some(other) => {
                return err(format!("`proof_of_possession_mtls`: `{other}` is not one of off, strict, optional"))
            }
        };

        let refresh_token_header = header_name(
            "refresh_token_param_name",
            raw.refresh_token_param_name.as_deref().unwrap_or("x-refresh-token"),
        )?;
        let downstream_refresh_token_header = header_name(
            "downstream_refresh_token_header",
            raw.downstream_refresh_token_header.as_deref().unwrap_or(&refresh_token_header),
        )?;
        let redirect_uris: Vec<Endpoint> = match raw.redirect_uri {
            None => Vec::new(),
            Some(OneOrMany::One(u)) => vec![u],
            Some(OneOrMany::Many(v)) => v,
        }
        .into_iter()
        .map(|u| Endpoint::parse(u.trim()).map_err(|e| ConfigError(format!("`redirect_uri`: {e}"))))
        .collect::<Result<_, _>>()?;
        if auth_methods.contains(&AuthMethod::AuthorizationCode) && redirect_uris.is_empty() {
            return err("`redirect_uri` is required with the authorization_code method");
        }
        if raw.logout_post_arg.is_some() {
            // Envoy pauses everything after the headers when a Wasm filter pauses them, so the
            // body cannot be read before the decision is made.
            return err("`logout_post_arg` is not supported: a proxy-wasm filter in Envoy cannot read the request body before deciding; use `logout_uri_suffix` or `logout_query_arg`");
        }
        let methods = match raw.logout_methods {
            None => vec!["POST".to_string(), "DELETE".to_string()],
            Some(m) => m.into_iter().map(|m| m.trim().to_ascii_uppercase()).collect(),
        };
        for m in &methods {
            if !["GET", "POST", "DELETE", "PUT", "PATCH"].contains(&m.as_str()) {
                return err(format!("`logout_methods`: `{m}` is not an HTTP method the filter can log out on"));
            }
        }
        let logout = Logout {
            uri_suffix: raw.logout_uri_suffix.filter(|s| !s.trim().is_empty()),
            query_arg: raw.logout_query_arg.filter(|s| !s.trim().is_empty()),
            methods,
            revoke: raw.logout_revoke.unwrap_or(false),
            revoke_access_token: raw.logout_revoke_access_token.unwrap_or(true),
            revoke_refresh_token: raw.logout_revoke_refresh_token.unwrap_or(true),
            redirect_uri: raw.logout_redirect_uri.filter(|s| !s.trim().is_empty()),
        };
        // It becomes a `Location` header as it is (when the IdP has no end_session_endpoint).
        if logout.redirect_uri.as_deref().is_some_and(|u| u.chars().any(char::is_control)) {
            return err("`logout_redirect_uri` must not contain control characters");
        }
        let leeway = raw.leeway.unwrap_or(0);
        if leeway > 3600 {
            return err("`leeway`: at most 3600 seconds");
        }

        Ok(Plan {
            issuer,
            discovery,
            idp_cluster,
            tls_client_auth_cluster,
            client: Client { id: client_id, secret: client_secret, signer },
            token_auth,
            introspection_auth,
            revocation_auth,
            mtls,
            auth_methods,
            scope: scopes.join(" "),
            timeout_ms,
            cache_tokens: raw.cache_tokens.unwrap_or(true),
            upstream,
            bearer,
            leeway,
            rules,
            introspection_check_active: raw.introspection_check_active.unwrap_or(true),
            cache_introspection: raw.cache_introspection.unwrap_or(true),
            refresh_token_header,
            downstream_refresh_token_header,
            hide_credentials: raw.hide_credentials.unwrap_or(false),
            pop,
            sessions,
            redirect_uris,
            refresh_tokens: raw.refresh_tokens.unwrap_or(true),
            logout,
        })
    }

    pub fn has(&self, method: AuthMethod) -> bool {
        self.auth_methods.contains(&method)
    }

    /// Whether any configured method takes a bearer token.
    pub fn takes_bearer(&self) -> bool {
        self.auth_methods.iter().any(|m| m.takes_bearer())
    }

    /// `WWW-Authenticate` challenges, one per credential kind accepted; `bearer_error` is
    /// the RFC 6750 `error` (and description) for the Bearer challenge.
    pub fn challenges(&self, bearer_error: Option<(&str, &str)>) -> Vec<String> {
        let mut out = Vec::new();
        if self.takes_bearer() || bearer_error.is_some() {
            out.push(match bearer_error {
                Some((e, d)) => format!("Bearer realm=\"oidc\", error=\"{e}\", error_description=\"{d}\""),
                None => "Bearer realm=\"oidc\"".to_string(),
            });
        }
        if self.has(AuthMethod::Password) || self.has(AuthMethod::ClientCredentials) {
            out.push("Basic realm=\"oidc\", charset=\"UTF-8\"".to_string());
        }
        out
    }

    /// The cluster for a call authenticated with `method`.
    pub fn cluster_for(&self, method: ClientAuth) -> &str {
        match (&self.tls_client_auth_cluster, method.is_tls()) {
            (Some(c), true) => c,
            _ => &self.idp_cluster,
        }
    }
}

fn non_empty(key: &str, v: String) -> Result<String, ConfigError> {
    let v = v.trim().to_string();
    if v.is_empty() {
        return err(format!("`{key}` must not be empty"));
    }
    Ok(v)
}

fn cookie_name(key: &str, name: &str) -> Result<String, ConfigError> {
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(is_token_char) {
        return err(format!("`{key}`: `{name}` is not a valid cookie name"));
    }
    Ok(name.to_string())
}

fn sessions(raw: &Raw) -> Result<Sessions, ConfigError> {
    let Some(secret) = raw.session_secret.as_deref().filter(|s| !s.is_empty()) else {
        return err("`session_secret` is required with the session and authorization_code methods (every worker and Envoy must share it)");
    };
    if secret.len() < 16 {
        return err("`session_secret` must be at least 16 characters");
    }
    let same_site = match raw.session_cookie_same_site.as_deref().map(str::trim) {
        None => Some("Lax".to_string()),
        Some("Strict") => Some("Strict".to_string()),
        Some("Lax") => Some("Lax".to_string()),
        Some("None") => Some("None".to_string()),
        Some("Default") | Some("off") => None,
        Some(other) => return err(format!("`session_cookie_same_site`: `{other}` is not one of Strict, Lax, None, Default")),
    };
    let path = raw.session_cookie_path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || path.contains(';') || path.chars().any(|c| c.is_control()) {
        return err("`session_cookie_path` must be a path starting with /");
    }
    let domain = raw.session_cookie_domain.clone().filter(|d| !d.is_empty());
    if domain.as_deref().is_some_and(|d| d.contains(';') || d.contains(' ') || d.chars().any(char::is_control)) {
        return err("`session_cookie_domain` is not a valid domain");
    }
    Ok(Sessions {
        sealer: Sealer::new(secret),
        cookie_name: cookie_name("session_cookie_name", raw.session_cookie_name.as_deref().unwrap_or("session"))?,
        authorization_cookie_name: cookie_name(
            "authorization_cookie_name",
            raw.authorization_cookie_name.as_deref().unwrap_or("authorization"),
        )?,
        attrs: CookieAttrs {
            path,
            domain,
            same_site,
            http_only: raw.session_cookie_http_only.unwrap_or(true),
            secure: raw.session_cookie_secure,
        },
        timeouts: Timeouts {
            idling: raw.session_idling_timeout.unwrap_or(900),
            rolling: raw.session_rolling_timeout.unwrap_or(3600),
            absolute: raw.session_absolute_timeout.unwrap_or(86400),
        },
        authorization_ttl: raw.authorization_rolling_timeout.unwrap_or(600).max(1),
    })
}

fn header_name(key: &str, name: &str) -> Result<String, ConfigError> {
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(is_token_char) {
        return err(format!("`{key}`: `{name}` is not a valid header name"));
    }
    Ok(name.to_ascii_lowercase())
}

fn optional_name(key: &str, v: Option<String>) -> Result<Option<String>, ConfigError> {
    v.filter(|s| !s.trim().is_empty()).map(|s| header_name(key, &s)).transpose()
}

fn optional_header(key: &str, v: Option<String>) -> Result<Option<TokenHeader>, ConfigError> {
    v.filter(|s| !s.trim().is_empty()).map(|s| TokenHeader::parse(key, &s)).transpose()
}

fn claim_headers(claims: Option<Vec<String>>, names: Option<Vec<String>>) -> Result<Vec<(String, String)>, ConfigError> {
    let claims = claims.unwrap_or_default();
    let names = names.unwrap_or_default();
    if claims.len() != names.len() {
        return err("`upstream_headers_claims` and `upstream_headers_names` must have the same length");
    }
    claims
        .into_iter()
        .zip(names)
        .map(|(c, n)| {
            if c.trim().is_empty() {
                return err("`upstream_headers_claims`: empty claim name");
            }
            Ok((c.trim().to_string(), header_name("upstream_headers_names", &n)?))
        })
        .collect()
}

fn bearer_sources(types: Option<Vec<String>>, cookie: Option<String>) -> Result<BearerSources, ConfigError> {
    let mut out = BearerSources::default();
    for t in types.unwrap_or_else(|| vec!["header".into()]) {
        match t.trim() {
            "header" => out.header = true,
            "query" => out.query = true,
            "cookie" => {
                let Some(name) = cookie.as_deref().map(str::trim).filter(|c| !c.is_empty()) else {
                    return err("`bearer_token_cookie_name` is required when `bearer_token_param_type` lists cookie");
                };
                out.cookie = Some(name.to_string());
            }
            other => {
                return err(format!("`bearer_token_param_type`: `{other}` is not one of header, query, cookie"))
            }
        }
    }
    Ok(out)
}

fn endpoint_opt(key: &str, v: Option<String>) -> Result<Option<Endpoint>, ConfigError> {
    v.map(|u| Endpoint::parse(u.trim()).map_err(|e| ConfigError(format!("`{key}`: {e}"))))
        .transpose()
}

fn auth_methods(raw: Option<Vec<String>>, default: impl Fn(AuthMethod) -> bool) -> Result<Vec<AuthMethod>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(AuthMethod::SUPPORTED.into_iter().filter(|m| default(*m)).collect());
    };
    if raw.is_empty() {
        return err("`auth_methods` must name at least one method");
    }
    let mut out = Vec::new();
    for name in raw {
        let m: AuthMethod = serde_json::from_value(serde_json::Value::String(name.clone()))
            .map_err(|_| {
                ConfigError(format!(
                    "`auth_methods`: unknown method `{name}` (session, bearer, introspection, userinfo, refresh_token, password, client_credentials, authorization_code)"
                ))
            })?;
        if !AuthMethod::SUPPORTED.contains(&m) {
            return err(format!(
                "`auth_methods`: `{name}` is not implemented in this version"
            ));
        }
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "issuer: https://idp.example.com\nidp_cluster: idp\n";

    fn parse(extra: &str) -> Result<Plan, ConfigError> {
        Plan::parse(format!("{MIN}{extra}").as_bytes())
    }

    fn msg(extra: &str) -> String {
        parse(extra).unwrap_err().0
    }

    #[test]
    fn kong_style_mtls_config() {
        let p = parse(
            "client_id: client-tls-auth\nclient_auth: tls_client_auth\ntls_client_auth_cluster: idp-mtls\nauth_methods: [password]\n",
        )
        .unwrap();
        assert_eq!(p.token_auth, ClientAuth::TlsClientAuth);
        assert_eq!(p.introspection_auth, ClientAuth::TlsClientAuth);
        assert_eq!(p.cluster_for(p.token_auth), "idp-mtls");
        assert_eq!(p.auth_methods, vec![AuthMethod::Password]);
        assert_eq!(p.scope, "openid");
        assert_eq!(p.timeout_ms, 10_000);
        assert!(p.cache_tokens);
        assert_eq!(p.discovery.path, "/.well-known/openid-configuration");
        assert_eq!(p.upstream.access_token, Some(TokenHeader { name: "authorization".into(), bearer: true }));
        assert_eq!(p.pop, Pop::Off);
        assert!(p.bearer.header && !p.bearer.query && p.bearer.cookie.is_none());
        assert_eq!(p.refresh_token_header, "x-refresh-token");
    }

    #[test]
    fn json_is_accepted() {
        let p = Plan::parse(
            br#"{"issuer":"https://idp/","idp_cluster":"idp","client_id":["c"],"client_auth":["none"],"scopes":["openid","profile"]}"#,
        )
        .unwrap();
        assert_eq!(p.scope, "openid profile");
        assert_eq!(p.discovery.url, "https://idp/.well-known/openid-configuration");
        assert_eq!(p.token_auth, ClientAuth::None);
    }

    #[test]
    fn tls_method_without_cluster_names_the_key() {
        let m = msg("client_id: c\nclient_auth: tls_client_auth\n");
        assert!(m.contains("tls_client_auth_cluster"), "{m}");
        let m = msg("client_id: c\nclient_secret: s\nintrospection_endpoint_auth_method: self_signed_tls_client_auth\n");
        assert!(m.contains("tls_client_auth_cluster") && m.contains("introspection_endpoint_auth_method"), "{m}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let m = msg("client_id: c\nclinet_secret: s\n");
        assert!(m.contains("clinet_secret"), "{m}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let m = msg("client_id: c\ntimeout: soon\n");
        assert!(m.contains("timeout"), "{m}");
        let m = msg("client_id: c\ncache_tokens: maybe\n");
        assert!(m.contains("cache_tokens"), "{m}");
        let m = msg("client_id: c\ntimeout: 0\n");
        assert!(m.contains("timeout"), "{m}");
    }

    #[test]
    fn required_keys() {
        let m = Plan::parse(b"idp_cluster: idp\n").unwrap_err().0;
        assert!(m.contains("issuer"), "{m}");
        let m = Plan::parse(b"issuer: https://i\n").unwrap_err().0;
        assert!(m.contains("idp_cluster"), "{m}");
        let m = msg("auth_methods: [password]\n");
        assert!(m.contains("client_id"), "{m}");
        let m = Plan::parse(b"").unwrap_err().0;
        assert!(m.contains("issuer"), "{m}");
        let m = msg("client_id: c\nclient_auth: client_secret_post\n");
        assert!(m.contains("client_secret"), "{m}");
        let m = msg("client_id: c\nclient_auth: private_key_jwt\n");
        assert!(m.contains("client_private_key"), "{m}");
    }

    #[test]
    fn bad_values_name_the_key() {
        assert!(msg("client_id: c\nclient_auth: tls\n").contains("client_auth"));
        assert!(msg("client_id: c\nauth_methods: [pasword]\n").contains("auth_methods"));
        assert!(msg("client_id: c\nauth_methods: [authorization_code]\nsession_secret: 0123456789abcdef\n").contains("redirect_uri"));
        assert!(msg("client_id: c\nauth_methods: [session]\n").contains("session_secret"));
        assert!(msg("client_id: c\nauth_methods: [session]\nsession_secret: short\n").contains("session_secret"));
        assert!(msg("client_id: c\nauth_methods: [session]\nsession_secret: 0123456789abcdef\nsession_cookie_same_site: lax\n").contains("session_cookie_same_site"));
        assert!(msg("client_id: c\nlogout_methods: [CONNECT]\n").contains("logout_methods"));
        assert!(msg("client_id: c\nlogout_post_arg: logout\n").contains("logout_post_arg"));
        assert!(msg("client_id: c\nmtls_token_endpoint: token\n").contains("mtls_token_endpoint"));
        assert!(msg("client_id: c\nupstream_access_token_header: 'x y'\n").contains("upstream_access_token_header"));
        assert!(msg("client_id: c\nscopes: ['a b']\n").contains("scopes"));
        // Caught by fuzz/ (corpus/config/cookie_domain_crlf, logout_redirect_crlf): both
        // went into headers as they were (Set-Cookie, Location), line breaks included.
        let sessions = "client_id: c\nauth_methods: [session]\nsession_secret: 0123456789abcdef\n";
        assert!(msg(&format!("{sessions}session_cookie_domain: \"example.com\\r\\nx:1\"\n")).contains("session_cookie_domain"));
        assert!(msg("client_id: c\nlogout_redirect_uri: \"http://x/\\r\\nx:1\"\n").contains("logout_redirect_uri"));
        let m = Plan::parse(b"issuer: idp.example.com\nidp_cluster: idp\nclient_id: c\n").unwrap_err().0;
        assert!(m.contains("issuer"), "{m}");
    }

    #[test]
    fn secret_defaults_to_basic_and_endpoints_inherit() {
        let p = parse("client_id: c\nclient_secret: s\nrevocation_endpoint_auth_method: client_secret_post\n").unwrap();
        assert_eq!(p.token_auth, ClientAuth::ClientSecretBasic);
        assert_eq!(p.introspection_auth, ClientAuth::ClientSecretBasic);
        assert_eq!(p.revocation_auth, ClientAuth::ClientSecretPost);
        assert_eq!(p.cluster_for(p.token_auth), "idp");
    }

    #[test]
    fn token_header_notation() {
        let p = parse("client_id: c\nupstream_access_token_header: X-Access-Token\n").unwrap();
        assert_eq!(p.upstream.access_token, Some(TokenHeader { name: "x-access-token".into(), bearer: false }));
        let p = parse("client_id: c\nupstream_access_token_header: ''\n").unwrap();
        assert_eq!(p.upstream.access_token, None);
    }

    #[test]
    fn client_credentials_alone_needs_no_client() {
        let p = parse("auth_methods: [client_credentials]\n").unwrap();
        assert_eq!(p.auth_methods, vec![AuthMethod::ClientCredentials]);
    }

    #[test]
    fn methods_are_tried_in_kong_order() {
        let p = parse("client_id: c\nauth_methods: [client_credentials, password]\n").unwrap();
        assert_eq!(p.auth_methods, vec![AuthMethod::Password, AuthMethod::ClientCredentials]);
    }

    #[test]
    fn api_token_keys() {
        let p = parse(
            "client_id: c\nauth_methods: [bearer, introspection]\nbearer_token_param_type: [header, query, cookie]\nbearer_token_cookie_name: at\nleeway: 30\nscopes_required: ['api:read api:write', admin]\nroles_claim: [realm_access, roles]\nroles_required: [writer]\nupstream_headers_claims: [sub, email]\nupstream_headers_names: [X-User, x-email]\nupstream_user_info_header: x-userinfo\nproof_of_possession_mtls: strict\nhide_credentials: true\n",
        )
        .unwrap();
        assert_eq!(p.bearer, BearerSources { header: true, query: true, cookie: Some("at".into()) });
        assert_eq!(p.leeway, 30);
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.rules[1].claim, vec!["realm_access".to_string(), "roles".to_string()]);
        assert_eq!(p.upstream.claims, vec![("sub".into(), "x-user".into()), ("email".into(), "x-email".into())]);
        assert_eq!(p.pop, Pop::Strict);
        assert!(p.hide_credentials);
        let names: Vec<&str> = p.upstream.names().collect();
        assert_eq!(names, vec!["authorization", "x-userinfo", "x-user", "x-email"]);
        assert!(p.challenges(None)[0].starts_with("Bearer realm"));
    }

    #[test]
    fn api_token_errors_name_the_key() {
        assert!(msg("client_id: c\nbearer_token_param_type: [cookie]\n").contains("bearer_token_cookie_name"));
        assert!(msg("client_id: c\nbearer_token_param_type: [body]\n").contains("bearer_token_param_type"));
        assert!(msg("client_id: c\nupstream_headers_claims: [sub]\n").contains("upstream_headers_names"));
        assert!(msg("client_id: c\nproof_of_possession_mtls: yes\n").contains("proof_of_possession_mtls"));
        assert!(msg("client_id: c\nroles_claim: []\nroles_required: [a]\n").contains("roles_claim"));
        assert!(msg("client_id: c\nscopes_required: ['']\n").contains("scopes_required"));
        assert!(msg("client_id: c\nleeway: 99999\n").contains("leeway"));
    }

    #[test]
    fn debug_redacts_secret() {
        let p = parse("client_id: c\nclient_secret: hunter2\n").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
