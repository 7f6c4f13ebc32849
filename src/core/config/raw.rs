//! The configuration as written: YAML or JSON with Kong's field names, defaults filled in
//! from [`super::keys::KEYS`], every field typed. Unknown keys are refused here.

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use crate::core::error::ConfigError;

use super::keys::KEYS;

/// A value or a one-element list (Kong writes `client_id: [x]`).
#[derive(Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The single value (Kong's multi-client lists are not supported yet).
    pub fn single(self, key: &str) -> Result<Option<String>, ConfigError> {
        match self {
            OneOrMany::One(s) => Ok(Some(s)),
            OneOrMany::Many(v) if v.len() <= 1 => Ok(v.into_iter().next()),
            OneOrMany::Many(_) => ConfigError::err(format!("`{key}`: one client is supported; give one value")),
        }
    }

    pub fn all(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Every key; those with a default in [`KEYS`] are always present.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub issuer: String,
    pub idp_cluster: String,
    pub tls_client_auth_cluster: Option<String>,
    pub client_id: Option<OneOrMany>,
    pub client_secret: Option<OneOrMany>,
    pub client_auth: Option<OneOrMany>,
    pub client_alg: Option<String>,
    pub client_private_key: Option<String>,
    pub client_private_key_id: Option<String>,
    pub token_endpoint_auth_method: Option<String>,
    pub introspection_endpoint_auth_method: Option<String>,
    pub revocation_endpoint_auth_method: Option<String>,
    pub mtls_token_endpoint: Option<String>,
    pub mtls_introspection_endpoint: Option<String>,
    pub mtls_revocation_endpoint: Option<String>,
    pub auth_methods: Option<Vec<String>>,
    pub scopes: Vec<String>,
    pub timeout: u64,
    pub cache_tokens: bool,
    pub upstream_access_token_header: String,
    pub upstream_id_token_header: Option<String>,
    pub upstream_user_info_header: Option<String>,
    pub upstream_introspection_header: Option<String>,
    pub upstream_headers_claims: Option<Vec<String>>,
    pub upstream_headers_names: Option<Vec<String>>,
    pub bearer_token_param_type: Vec<String>,
    pub bearer_token_cookie_name: Option<String>,
    pub leeway: u64,
    pub issuers_allowed: Option<Vec<String>>,
    pub extra_jwks_uris: Option<Vec<String>>,
    pub scopes_required: Option<Vec<String>>,
    pub scopes_claim: Vec<String>,
    pub audience_required: Option<Vec<String>>,
    pub audience_claim: Vec<String>,
    pub groups_required: Option<Vec<String>>,
    pub groups_claim: Vec<String>,
    pub roles_required: Option<Vec<String>>,
    pub roles_claim: Vec<String>,
    pub introspection_check_active: bool,
    pub cache_introspection: bool,
    pub refresh_token_param_name: String,
    pub downstream_refresh_token_header: Option<String>,
    pub hide_credentials: bool,
    pub proof_of_possession_mtls: String,
    pub redirect_uri: Option<OneOrMany>,
    pub session_secret: Option<String>,
    pub session_cookie_name: String,
    pub session_cookie_path: String,
    pub session_cookie_domain: Option<String>,
    pub session_cookie_same_site: String,
    pub session_cookie_http_only: bool,
    pub session_cookie_secure: Option<bool>,
    pub session_idling_timeout: u64,
    pub session_rolling_timeout: u64,
    pub session_absolute_timeout: u64,
    pub authorization_cookie_name: String,
    pub authorization_rolling_timeout: u64,
    pub refresh_tokens: bool,
    pub logout_uri_suffix: Option<String>,
    pub logout_query_arg: Option<String>,
    pub logout_post_arg: Option<String>,
    pub logout_methods: Vec<String>,
    pub logout_revoke: bool,
    pub logout_revoke_access_token: bool,
    pub logout_revoke_refresh_token: bool,
    pub logout_redirect_uri: Option<String>,
    pub audience: Option<Vec<String>>,
    pub authorization_query_args_names: Option<Vec<String>>,
    pub authorization_query_args_values: Option<Vec<String>>,
    pub token_post_args_names: Option<Vec<String>>,
    pub token_post_args_values: Option<Vec<String>>,
    pub token_headers_names: Option<Vec<String>>,
    pub token_headers_values: Option<Vec<String>>,
    pub introspection_post_args_names: Option<Vec<String>>,
    pub introspection_post_args_values: Option<Vec<String>>,
    pub introspection_headers_names: Option<Vec<String>>,
    pub introspection_headers_values: Option<Vec<String>>,
    pub introspection_hint: String,
    pub introspection_token_param_name: String,
    pub revocation_token_param_name: String,
    pub userinfo_query_args_names: Option<Vec<String>>,
    pub userinfo_query_args_values: Option<Vec<String>>,
    pub userinfo_headers_names: Option<Vec<String>>,
    pub userinfo_headers_values: Option<Vec<String>>,
    pub discovery_headers_names: Option<Vec<String>>,
    pub discovery_headers_values: Option<Vec<String>>,
    pub display_errors: bool,
    pub unauthorized_error_message: String,
    pub forbidden_error_message: String,
    pub claims_forbidden: Option<Vec<String>>,
    pub run_on_preflight: bool,
    pub downstream_access_token_header: Option<String>,
    pub downstream_id_token_header: Option<String>,
    pub downstream_user_info_header: Option<String>,
    pub downstream_introspection_header: Option<String>,
    pub downstream_headers_claims: Option<Vec<String>>,
    pub downstream_headers_names: Option<Vec<String>>,
    pub bearer_token_header_name: Option<String>,
    pub unauthorized_destroy_session: bool,
    pub forbidden_destroy_session: bool,
}

/// Parses YAML or JSON text into its top-level mapping; keys with `null` count as absent.
pub fn document(text: &str) -> Result<Mapping, ConfigError> {
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
    let Value::Mapping(mut map) = value else {
        return ConfigError::err("the configuration must be a mapping of keys (`issuer: …`)");
    };
    map.retain(|_, v| !v.is_null());
    Ok(map)
}

/// Types a policy's mapping: absent keys get their default. Errors start with the
/// offending key, after `prefix` (`policies.api.`).
pub fn typed(mut map: Mapping, prefix: &str) -> Result<Raw, ConfigError> {
    map.retain(|_, v| !v.is_null());
    for key in KEYS {
        let (Some(default), name) = (key.default, Value::String(key.name.to_string())) else { continue };
        if !map.contains_key(&name) {
            let v: Value = serde_yaml_ng::from_str(default).map_err(|e| ConfigError(e.to_string()))?;
            map.insert(name, v);
        }
    }
    serde_path_to_error::deserialize(Value::Mapping(map)).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." | "" if prefix.is_empty() => ConfigError(e.into_inner().to_string()),
            "." | "" => ConfigError(format!("{}: {}", prefix.trim_end_matches('.'), e.into_inner())),
            _ => ConfigError(format!("{prefix}{path}: {}", e.into_inner())),
        }
    })
}
