//! Every key the filter accepts, with its default: the one list the parser, the tests and
//! `oidc-envoy-config` (which translates Kong configurations) all read.

/// One configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    /// The default as JSON, or `None` when the key has none or the default depends on
    /// other keys or on the request (the README's table says how).
    pub default: Option<&'static str>,
}

const fn k(name: &'static str, default: Option<&'static str>) -> Key {
    Key { name, default }
}

/// The keys, in the README's order.
pub const KEYS: &[Key] = &[
    k("issuer", None),
    k("idp_cluster", None),
    k("tls_client_auth_cluster", None),
    k("client_id", None),
    k("client_secret", None),
    k("client_auth", None),
    k("token_endpoint_auth_method", None),
    k("introspection_endpoint_auth_method", None),
    k("revocation_endpoint_auth_method", None),
    k("mtls_token_endpoint", None),
    k("mtls_introspection_endpoint", None),
    k("mtls_revocation_endpoint", None),
    k("client_alg", None),
    k("client_private_key", None),
    k("client_private_key_id", None),
    k("auth_methods", None),
    k("scopes", Some(r#"["openid"]"#)),
    k("timeout", Some("10000")),
    k("cache_tokens", Some("true")),
    k("upstream_access_token_header", Some(r#""authorization:bearer""#)),
    k("upstream_id_token_header", None),
    k("upstream_user_info_header", None),
    k("upstream_introspection_header", None),
    k("upstream_headers_claims", None),
    k("upstream_headers_names", None),
    k("hide_credentials", Some("false")),
    k("bearer_token_param_type", Some(r#"["header"]"#)),
    k("bearer_token_cookie_name", None),
    k("leeway", Some("0")),
    k("issuers_allowed", None),
    k("extra_jwks_uris", None),
    k("scopes_required", None),
    k("audience_required", None),
    k("groups_required", None),
    k("roles_required", None),
    k("scopes_claim", Some(r#"["scope"]"#)),
    k("audience_claim", Some(r#"["aud"]"#)),
    k("groups_claim", Some(r#"["groups"]"#)),
    k("roles_claim", Some(r#"["roles"]"#)),
    k("introspection_check_active", Some("true")),
    k("cache_introspection", Some("true")),
    k("refresh_token_param_name", Some(r#""x-refresh-token""#)),
    k("downstream_refresh_token_header", None),
    k("redirect_uri", None),
    k("session_secret", None),
    k("session_cookie_name", Some(r#""session""#)),
    k("authorization_cookie_name", Some(r#""authorization""#)),
    k("session_cookie_path", Some(r#""/""#)),
    k("session_cookie_domain", None),
    k("session_cookie_same_site", Some(r#""Lax""#)),
    k("session_cookie_http_only", Some("true")),
    k("session_cookie_secure", None),
    k("session_idling_timeout", Some("900")),
    k("session_rolling_timeout", Some("3600")),
    k("session_absolute_timeout", Some("86400")),
    k("authorization_rolling_timeout", Some("600")),
    k("refresh_tokens", Some("true")),
    k("logout_uri_suffix", None),
    k("logout_query_arg", None),
    k("logout_post_arg", None),
    k("logout_methods", Some(r#"["POST","DELETE"]"#)),
    k("logout_revoke", Some("false")),
    k("logout_revoke_access_token", Some("true")),
    k("logout_revoke_refresh_token", Some("true")),
    k("logout_redirect_uri", None),
    k("proof_of_possession_mtls", Some(r#""off""#)),
    k("audience", None),
    k("authorization_query_args_names", None),
    k("authorization_query_args_values", None),
    k("token_post_args_names", None),
    k("token_post_args_values", None),
    k("token_headers_names", None),
    k("token_headers_values", None),
    k("introspection_post_args_names", None),
    k("introspection_post_args_values", None),
    k("introspection_headers_names", None),
    k("introspection_headers_values", None),
    k("introspection_hint", Some(r#""access_token""#)),
    k("introspection_token_param_name", Some(r#""token""#)),
    k("revocation_token_param_name", Some(r#""token""#)),
    k("userinfo_query_args_names", None),
    k("userinfo_query_args_values", None),
    k("userinfo_headers_names", None),
    k("userinfo_headers_values", None),
    k("discovery_headers_names", None),
    k("discovery_headers_values", None),
    k("display_errors", Some("false")),
    k("unauthorized_error_message", Some(r#""Unauthorized""#)),
    k("forbidden_error_message", Some(r#""Forbidden""#)),
    k("claims_forbidden", None),
    k("run_on_preflight", Some("true")),
    k("downstream_access_token_header", None),
    k("downstream_id_token_header", None),
    k("downstream_user_info_header", None),
    k("downstream_introspection_header", None),
    k("downstream_headers_claims", None),
    k("downstream_headers_names", None),
    k("bearer_token_header_name", None),
    k("unauthorized_destroy_session", Some("true")),
    k("forbidden_destroy_session", Some("true")),
];

/// The key of this name.
pub fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The default of key `name` as JSON (`None`: no default, or not a key).
pub fn default_of(name: &str) -> Option<&'static str> {
    key(name).and_then(|k| k.default)
}
