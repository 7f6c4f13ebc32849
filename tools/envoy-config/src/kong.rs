//! Kong's `openid-connect` plugin configuration → this filter's configuration.
//!
//! Kong shows a plugin through its Admin API (`GET /plugins/{id}`:
//! `{"name": "openid-connect", "config": {...}}`, or a `{"data": [...]}` list) and through
//! decK (`plugins:` at the top level or under services, routes and consumers). Either way
//! `config` carries every field of the schema, most of them `null` or at Kong's default.
//!
//! Fields this filter has (its keys and their defaults come from
//! `envoy_oidc::core::config::keys`) are copied, Kong's lists becoming one value where the
//! filter takes one; `null`s and values equal to the filter's default are dropped silently.
//! `FILTER_KEYS` lists the filter's keys translated otherwise. Fields the filter does not
//! have are dropped and listed, with the reason, unless they are at Kong's default (then
//! only `--verbose` lists them).

use envoy_oidc::core::client_auth::ClientAuth;
use envoy_oidc::core::config::keys;
use serde_json::Value as Json;

use crate::plugin::{client_auths, SSL_VERIFY_KEY};
use serde_yaml_ng::{Mapping, Value};

pub const PLUGIN_NAME: &str = "openid-connect";

/// A Kong `openid-connect` plugin found in the input.
#[derive(Debug, Clone)]
pub struct Found {
    /// Where it was found, for messages: `plugin 0a1b… (route r1)`.
    pub label: String,
    /// The plugin object (`name`, `config`, `id`, `route`, …).
    pub plugin: Mapping,
}

/// What the input file is.
#[derive(Debug)]
pub enum Input {
    /// This filter's own configuration.
    Ours(Mapping),
    /// One or more Kong plugins.
    Kong(Vec<Found>),
}

/// Decides whether `doc` is our configuration or a Kong one (`force_kong`: a bare Kong
/// `config` object is Kong's too).
pub fn classify(doc: Value, force_kong: bool) -> Result<Input, String> {
    let Value::Mapping(map) = doc else {
        return Err("the plugin configuration must be a YAML or JSON mapping".into());
    };
    let found = if let Some(name) = map.get("name").and_then(Value::as_str) {
        if map.get("config").is_some_and(Value::is_mapping) {
            if name != PLUGIN_NAME {
                return Err(format!("this is Kong's `{name}` plugin, not `{PLUGIN_NAME}`"));
            }
            vec![Found { label: label(&map, "Admin API"), plugin: map.clone() }]
        } else {
            Vec::new()
        }
    } else if let Some(Value::Sequence(data)) = map.get("data") {
        // GET /plugins: {"data": [...], "next": null}
        data.iter()
            .filter_map(Value::as_mapping)
            .filter(|p| is_oidc(p))
            .map(|p| Found { label: label(p, "Admin API"), plugin: p.clone() })
            .collect()
    } else if ["_format_version", "plugins", "services", "routes", "consumers", "consumer_groups"].iter().any(|k| map.contains_key(*k)) {
        let mut out = Vec::new();
        deck_walk(&map, "", &mut out);
        if out.is_empty() {
            return Err(format!("a Kong declarative configuration without an `{PLUGIN_NAME}` plugin"));
        }
        out
    } else if force_kong {
        let mut plugin = Mapping::new();
        plugin.insert("name".into(), PLUGIN_NAME.into());
        plugin.insert("config".into(), Value::Mapping(map));
        return Ok(Input::Kong(vec![Found { label: "Kong `config`".into(), plugin }]));
    } else {
        return Ok(Input::Ours(map));
    };
    if found.is_empty() {
        return Err(format!("no Kong `{PLUGIN_NAME}` plugin in the input"));
    }
    Ok(Input::Kong(found))
}

pub(crate) fn is_oidc(p: &Mapping) -> bool {
    p.get("name").and_then(Value::as_str) == Some(PLUGIN_NAME)
}

/// `openid-connect plugin ID (origin)`, for messages.
pub(crate) fn label(p: &Mapping, origin: &str) -> String {
    let id = ["instance_name", "id"].iter().find_map(|k| p.get(*k).and_then(Value::as_str)).map(|s| format!(" {s}")).unwrap_or_default();
    format!("{PLUGIN_NAME} plugin{id} ({origin})")
}

/// decK: plugins at the top level and nested in services, routes, consumers, consumer groups.
fn deck_walk(map: &Mapping, scope: &str, out: &mut Vec<Found>) {
    if let Some(Value::Sequence(plugins)) = map.get("plugins") {
        for p in plugins.iter().filter_map(Value::as_mapping).filter(|p| is_oidc(p)) {
            let origin = if scope.is_empty() { "decK".to_string() } else { format!("decK, {scope}") };
            out.push(Found { label: label(p, &origin), plugin: p.clone() });
        }
    }
    for kind in ["services", "routes", "consumers", "consumer_groups"] {
        if let Some(Value::Sequence(items)) = map.get(kind) {
            for (i, item) in items.iter().filter_map(Value::as_mapping).enumerate() {
                let name = ["name", "username", "id"]
                    .iter()
                    .find_map(|k| item.get(*k).and_then(Value::as_str))
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("#{}", i + 1));
                let singular = kind.trim_end_matches('s');
                let inner = if scope.is_empty() { format!("{singular} {name}") } else { format!("{scope} / {singular} {name}") };
                deck_walk(item, &inner, out);
            }
        }
    }
}

/// Picks one plugin: by `selector` (its `id`, `instance_name` or 1-based position), or the
/// only one.
pub fn pick(found: Vec<Found>, selector: Option<&str>) -> Result<Found, String> {
    let listing = |f: &[Found]| f.iter().enumerate().map(|(i, p)| format!("\n  {}: {}", i + 1, p.label)).collect::<String>();
    match selector {
        Some(sel) => {
            let by_position = sel.parse::<usize>().ok().and_then(|n| n.checked_sub(1)).and_then(|n| found.get(n));
            let by_name =
                found.iter().find(|f| ["id", "instance_name"].iter().any(|k| f.plugin.get(*k).and_then(Value::as_str) == Some(sel)));
            match by_name.or(by_position) {
                Some(f) => Ok(f.clone()),
                None => Err(format!("no {PLUGIN_NAME} plugin matches `{sel}`; found:{}", listing(&found))),
            }
        }
        None if found.len() == 1 => found.into_iter().next().ok_or_else(|| "no plugin".to_string()),
        None => Err(format!(
            "{} {PLUGIN_NAME} plugins in the input; choose one with --kong-plugin (id, instance_name or number):{}",
            found.len(),
            listing(&found)
        )),
    }
}

/// The result of a translation.
#[derive(Debug, Default)]
pub struct Translation {
    /// This filter's configuration.
    pub config: Mapping,
    /// Fields translated with a change of meaning: `field: what happened`.
    pub adjusted: Vec<String>,
    /// Fields with a value this filter cannot honour: `field: reason`.
    pub unsupported: Vec<String>,
    /// Fields dropped silently (null, or at a default): for `--verbose`.
    pub defaults: Vec<String>,
    /// About the plugin as a whole (disabled, scoped to a route …).
    pub context: Vec<String>,
}

/// What happens to one Kong field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// A key of the filter ([`keys::key`]) with Kong's name and meaning: copied unless null,
    /// or equal to the filter's default ([`keys::default_of`]; lists compared as sets), or
    /// empty when the key has no default.
    Copy,
    /// A Kong list where this filter takes one value.
    First,
    /// Not supported: (Kong's default as JSON, reason).
    Ignore(&'static str, &'static str),
    /// Generated by Kong or only meaningful with another field that is reported itself.
    Silent,
    /// Handled in `translate`.
    Special,
}

const CONSUMERS: &str = "Kong consumers, consumer groups and credentials do not exist in Envoy";
const ENDPOINTS: &str = "the filter uses the endpoints from discovery (only `mtls_*_endpoint` can be set)";
const EXTRA_CLIENT: &str =
    "arguments and headers taken from the client's request for IdP calls are not supported (the fixed `*_names`/`*_values` are)";
const SESSIONS: &str = "sessions are AES-256-GCM encrypted cookies; server-side session storage and its options do not apply";
const ANSWERS: &str = "401/403 answers are short fixed JSON with WWW-Authenticate, never a redirect";
const LOGIN: &str = "after a login the browser is redirected to the URL it first asked for";
const PROXY: &str = "IdP calls go through Envoy clusters (configure a proxy in the cluster instead)";
const DPOP: &str = "DPoP is not supported (certificate-bound tokens are: proof_of_possession_mtls)";
const DOWNSTREAM: &str =
    "the JWK, JWT and session-id variants of the downstream headers, and the token endpoint's response headers, are not supported";
const UPSTREAM_JWK: &str = "JWK and JWT variants of the upstream headers are not supported";
const VERIFY: &str = "tokens are always fully verified (signature, standard claims, nonce)";
const CACHE: &str = "caches follow the tokens' own lifetimes (exp, expires_in) per Envoy worker";
const INTROSPECTION: &str = "introspection requests are plain RFC 7662 (token, token_type_hint)";
const USERINFO: &str = "userinfo requests are plain (Bearer token, JSON answer)";
const NOT_HERE: &str = "no counterpart in this filter";

/// Reason for fields neither Kong's schema (as this translator knows it) nor a key of the
/// filter it copies.
const UNKNOWN: &str = "unknown to this translator";

/// The filter's keys ([`keys::KEYS`]) that are not simply copied ([`Rule::Copy`]). Every
/// other key of the filter is copied; a key here that the filter no longer has fails the
/// tests.
const FILTER_KEYS: &[(&str, Rule)] = &[
    // Kong's issuer may be the discovery URL.
    ("issuer", Rule::Special),
    // Narrowed to the methods this filter has and can run with the configuration at hand.
    ("auth_methods", Rule::Special),
    // An explicit [] is kept.
    ("scopes", Rule::Special),
    // `body` is dropped; only meaningful with a bearer method.
    ("bearer_token_param_type", Rule::Special),
    // Kong's lists (several clients); the filter has one.
    ("client_id", Rule::First),
    ("client_secret", Rule::First),
    ("client_auth", Rule::First),
    ("client_alg", Rule::First),
    ("logout_redirect_uri", Rule::First),
    // The filter has the key only to refuse it with this reason.
    (
        "logout_post_arg",
        Rule::Ignore("null", "Envoy gives a Wasm filter no request body before it decides; use logout_uri_suffix or logout_query_arg"),
    ),
    // Not in Kong's schema: Envoy cluster names (filled in by the renderer) and the PEM key
    // that replaces Kong's client_jwk.
    ("idp_cluster", Rule::Ignore("null", UNKNOWN)),
    ("tls_client_auth_cluster", Rule::Ignore("null", UNKNOWN)),
    ("client_private_key", Rule::Ignore("null", UNKNOWN)),
    ("client_private_key_id", Rule::Ignore("null", UNKNOWN)),
];

fn rule(name: &str) -> Rule {
    if let Some((_, rule)) = FILTER_KEYS.iter().find(|(key, _)| *key == name) {
        return *rule;
    }
    if keys::key(name).is_some() {
        return Rule::Copy;
    }
    kong_only(name).unwrap_or(Rule::Ignore("null", UNKNOWN))
}

/// Kong fields the filter has no key for (`None`: not a Kong field this translator knows).
fn kong_only(name: &str) -> Option<Rule> {
    use Rule::*;
    Some(match name {
        "password_param_type"
        | "client_credentials_param_type"
        | "refresh_token_param_type"
        | "tls_client_auth_cert_id"
        | "tls_client_auth_ssl_verify"
        | "ssl_verify"
        | "upstream_headers"
        | "client_jwk"
        | "principals"
        | "token_exchange"
        | "proof_of_possession_mtls_from_header" => Special,

        "cache_tokens_salt" | "redis" | "cluster_cache_redis" => Silent,

        "anonymous" => Ignore("null", "no anonymous consumer: a request that fails authentication gets 401/403"),
        "authenticated_groups_claim"
        | "by_username_ignore_case"
        | "consumer_by"
        | "consumer_claim"
        | "consumer_claims"
        | "consumer_groups_claim"
        | "consumer_groups_optional"
        | "consumer_optional"
        | "credential_claim" => match name {
            "by_username_ignore_case" | "consumer_groups_optional" | "consumer_optional" => Ignore("false", CONSUMERS),
            "consumer_by" => Ignore(r#"["username","custom_id"]"#, CONSUMERS),
            "credential_claim" => Ignore(r#"["sub"]"#, CONSUMERS),
            _ => Ignore("null", CONSUMERS),
        },
        "authorization_cookie_domain" | "authorization_cookie_secure" => {
            Ignore("null", "the login-state cookie takes the session cookie's attributes")
        }
        "authorization_cookie_http_only" => Ignore("true", "the login-state cookie takes the session cookie's attributes"),
        "authorization_cookie_path" => Ignore(r#""/""#, "the login-state cookie takes the session cookie's attributes"),
        "authorization_cookie_same_site" => Ignore(r#""Default""#, "the login-state cookie takes the session cookie's attributes"),
        "authorization_endpoint"
        | "end_session_endpoint"
        | "introspection_endpoint"
        | "jwks_endpoint"
        | "revocation_endpoint"
        | "token_endpoint"
        | "userinfo_endpoint" => Ignore("null", ENDPOINTS),
        "authorization_query_args_client" | "token_headers_client" | "token_post_args_client" => Ignore("null", EXTRA_CLIENT),
        "token_headers_grants" | "token_headers_prefix" | "token_headers_replay" => Ignore("null", DOWNSTREAM),
        "cache_token_exchange" => Ignore("true", "token exchange is not supported"),
        "token_exchange_endpoint" => Ignore("null", "token exchange is not supported"),
        "cache_ttl" => Ignore("3600", CACHE),
        "cache_ttl_max" | "cache_ttl_min" | "cache_ttl_neg" | "cache_ttl_resurrect" => Ignore("null", CACHE),
        "cache_user_info" => Ignore("true", NOT_HERE),
        "token_cache_key_include_scope" => Ignore("false", NOT_HERE),
        "domains" | "max_age" => Ignore("null", NOT_HERE),
        "client_arg" => Ignore(r#""client_id""#, "one client: Kong's choice among several clients does not apply"),
        "cluster_cache_items" => Ignore(r#"["introspection"]"#, CACHE),
        "cluster_cache_strategy" => Ignore(r#""off""#, CACHE),
        "disable_session" => Ignore("null", "sessions are created by the authorization code login only"),
        "expose_error_code" => Ignore("true", "errors are always in WWW-Authenticate (RFC 6750)"),
        "forbidden_redirect_uri" | "unauthorized_redirect_uri" | "unexpected_redirect_uri" => Ignore("null", ANSWERS),
        "downstream_access_token_jwk_header"
        | "downstream_headers"
        | "downstream_id_token_jwk_header"
        | "downstream_introspection_jwt_header"
        | "downstream_session_id_header"
        | "downstream_user_info_jwt_header" => Ignore("null", DOWNSTREAM),
        "dpop_proof_lifetime" => Ignore("300", DPOP),
        "dpop_use_nonce" => Ignore("false", DPOP),
        "proof_of_possession_dpop" => Ignore(r#""off""#, DPOP),
        "proof_of_possession_auth_methods_validation" => Ignore("true", NOT_HERE),
        "enable_hs_signatures" => Ignore("false", "HMAC-signed tokens are always refused"),
        "http_proxy" | "http_proxy_authorization" | "https_proxy" | "https_proxy_authorization" | "no_proxy" => Ignore("null", PROXY),
        "http_version" => Ignore("1.1", "the cluster decides the HTTP version of IdP calls"),
        "keepalive" => Ignore("true", "Envoy keeps IdP connections alive"),
        "id_token_param_name" => Ignore("null", "ID tokens are not accepted from clients"),
        "id_token_param_type" => Ignore(r#"["body","header","query"]"#, "ID tokens are not accepted from clients"),
        "ignore_signature" => Ignore("[]", VERIFY),
        "verify_claims" | "verify_nonce" | "verify_signature" => Ignore("true", VERIFY),
        "verify_parameters" => Ignore("false", NOT_HERE),
        "introspect_jwt_tokens" => Ignore("false", "JWT access tokens are verified locally with the JWKS"),
        "introspection_accept" => Ignore(r#""application/json""#, INTROSPECTION),
        "introspection_headers_client" | "introspection_post_args_client" | "introspection_post_args_client_headers" => {
            Ignore("null", EXTRA_CLIENT)
        }
        "jwt_session_claim" => Ignore(r#""sid""#, "JWT session cookies are not supported"),
        "jwt_session_cookie" => Ignore("null", "JWT session cookies are not supported"),
        "login_action" => Ignore(r#""upstream""#, LOGIN),
        "login_methods" => Ignore(r#"["authorization_code"]"#, LOGIN),
        "login_redirect_mode" => Ignore(r#""fragment""#, LOGIN),
        "login_redirect_uri" => Ignore("null", LOGIN),
        "login_tokens" => Ignore(r#"["id_token"]"#, LOGIN),
        "preserve_query_args" => Ignore("false", LOGIN),
        "pushed_authorization_request_endpoint"
        | "pushed_authorization_request_endpoint_auth_method"
        | "require_pushed_authorization_requests" => Ignore("null", "pushed authorization requests are not supported"),
        "require_proof_key_for_code_exchange" => Ignore("null", "PKCE (S256) is always used"),
        "require_signed_request_object" => Ignore("null", "request objects are not supported"),
        "rediscovery_lifetime" => Ignore("30", "discovery is shared by all workers, refreshed hourly and retried with backoff"),
        "resolve_distributed_claims" | "reverify" | "search_user_info" => Ignore("false", NOT_HERE),
        "response_mode" => Ignore(r#""query""#, "the authorization code flow uses response_mode=query"),
        "response_type" => Ignore(r#"["code"]"#, "the authorization code flow uses response_type=code"),
        "session_audience" => Ignore(r#""default""#, SESSIONS),
        "session_bind"
        | "session_memcached_prefix"
        | "session_memcached_socket"
        | "session_request_headers"
        | "session_response_headers" => Ignore("null", SESSIONS),
        "session_enforce_same_subject"
        | "session_hash_storage_key"
        | "session_hash_subject"
        | "session_memcached_ssl"
        | "session_memcached_ssl_verify"
        | "session_remember"
        | "session_store_metadata" => Ignore("false", SESSIONS),
        "session_memcached_host" => Ignore(r#""127.0.0.1""#, SESSIONS),
        "session_memcached_port" => Ignore("11211", SESSIONS),
        "session_remember_absolute_timeout" => Ignore("2592000", SESSIONS),
        "session_remember_cookie_name" => Ignore(r#""remember""#, SESSIONS),
        "session_remember_rolling_timeout" => Ignore("604800", SESSIONS),
        "session_storage" => Ignore(r#""cookie""#, SESSIONS),
        "upstream_access_token_jwk_header"
        | "upstream_id_token_jwk_header"
        | "upstream_introspection_jwt_header"
        | "upstream_user_info_jwt_header" => Ignore("null", UPSTREAM_JWK),
        "upstream_refresh_token_header" | "upstream_session_id_header" => Ignore("null", NOT_HERE),
        "userinfo_accept" => Ignore(r#""application/json""#, USERINFO),
        "userinfo_headers_client" | "userinfo_query_args_client" => Ignore("null", EXTRA_CLIENT),
        "using_pseudo_issuer" => Ignore("false", "discovery at the issuer is required"),
        _ => return None,
    })
}

/// Kong's default `auth_methods`.
const KONG_AUTH_METHODS: [&str; 9] = [
    "authorization_code",
    "bearer",
    "client_credentials",
    "introspection",
    "kong_oauth2",
    "password",
    "refresh_token",
    "session",
    "userinfo",
];

/// Translates one Kong plugin (the object with `name` and `config`) that is rendered for
/// every request: `context` says what Kong would have done otherwise.
pub fn translate(plugin: &Mapping) -> Result<Translation, String> {
    let mut t = translate_config(plugin)?;
    let mut context_lines = Translation::default();
    context(plugin, &mut context_lines);
    t.context = context_lines.context;
    Ok(t)
}

/// Translates the `config` of one Kong plugin (the object with `name` and `config`).
pub fn translate_config(plugin: &Mapping) -> Result<Translation, String> {
    let Some(Value::Mapping(kong)) = plugin.get("config") else {
        return Err(format!("the {PLUGIN_NAME} plugin has no `config` object"));
    };
    let mut t = Translation::default();

    // `issuer` first, as in every example of this filter.
    match kong.get("issuer").and_then(Value::as_str).map(str::trim) {
        Some(issuer) if !issuer.is_empty() => {
            let suffix = "/.well-known/openid-configuration";
            let bare = issuer.strip_suffix(suffix).unwrap_or(issuer);
            if bare.len() != issuer.len() {
                t.adjusted.push(format!(
                    "issuer: Kong's discovery URL `{issuer}` becomes the issuer `{bare}` (discovery is `{{issuer}}{suffix}` here)"
                ));
            }
            t.config.insert("issuer".into(), bare.into());
        }
        _ => return Err("Kong's `config.issuer` is missing".into()),
    }

    for (key, value) in kong {
        let Some(name) = key.as_str() else { continue };
        let value = clean(value);
        match rule(name) {
            Rule::Special => {}
            Rule::Silent => t.defaults.push(name.to_string()),
            Rule::Copy => {
                let dropped = match keys::default_of(name) {
                    Some(default) => value.is_null() || same(&value, default),
                    None => nothing(&value),
                };
                if dropped {
                    t.defaults.push(name.to_string());
                } else {
                    t.config.insert(name.into(), value);
                }
            }
            Rule::First => match value {
                Value::Sequence(items) if items.len() > 1 => {
                    let first = items.into_iter().next().unwrap_or(Value::Null);
                    t.adjusted.push(format!(
                        "{name}: {} values; this filter has one client, so the first is used{}",
                        kong_len(kong, name),
                        if name == "client_id" { " (Kong picks among several with client_arg)" } else { "" }
                    ));
                    t.config.insert(name.into(), first);
                }
                Value::Sequence(items) if items.len() == 1 => {
                    t.config.insert(name.into(), items.into_iter().next().unwrap_or(Value::Null));
                }
                v if nothing(&v) => t.defaults.push(name.to_string()),
                v => {
                    t.config.insert(name.into(), v);
                }
            },
            Rule::Ignore(default, reason) => {
                if nothing(&value) || same(&value, default) {
                    t.defaults.push(name.to_string());
                } else {
                    t.unsupported.push(format!("{name}{}: {reason}", show(name, &value)));
                }
            }
        }
    }

    special(kong, &mut t)?;
    Ok(t)
}

fn kong_len(kong: &Mapping, name: &str) -> usize {
    kong.get(name).and_then(Value::as_sequence).map_or(0, Vec::len)
}

fn context(plugin: &Mapping, t: &mut Translation) {
    if plugin.get("enabled").and_then(Value::as_bool) == Some(false) {
        t.context.push("the plugin is disabled in Kong (`enabled: false`); the rendered filter is active".into());
    }
    for scope in ["route", "service", "consumer", "consumer_group"] {
        if let Some(v) = plugin.get(scope).filter(|v| !nothing(v)) {
            let id = v
                .as_mapping()
                .and_then(|m| m.get("id").or_else(|| m.get("name")))
                .and_then(Value::as_str)
                .or_else(|| v.as_str())
                .unwrap_or("?");
            t.context.push(format!("the plugin is scoped to {scope} {id} in Kong; the rendered listener runs the filter on every request"));
        }
    }
}

fn special(kong: &Mapping, t: &mut Translation) -> Result<(), String> {
    let get = |k: &str| kong.get(k).map(clean).filter(|v| !v.is_null());
    let strings = |v: &Value| -> Vec<String> {
        match v {
            Value::Sequence(s) => s.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        }
    };

    // scopes: Kong's default (["openid"]) is ours; an explicit [] is kept (no scope is
    // requested).
    match get("scopes") {
        Some(v) if at_default("scopes", &v) => t.defaults.push("scopes".into()),
        Some(v @ Value::Sequence(_)) => {
            t.config.insert("scopes".into(), v);
        }
        Some(_) => t.unsupported.push("scopes: not a list".into()),
        None => t.defaults.push("scopes".into()),
    }

    // auth_methods: Kong's default list means "every method" there and here (where sessions
    // and the authorization code flow need their settings); an explicit list is narrowed to
    // what this filter can do with the configuration at hand.
    let has_secret = t.config.get("session_secret").is_some();
    let has_redirect = t.config.get("redirect_uri").is_some();
    let supported: Vec<&str> = envoy_oidc::core::method::AuthMethod::SUPPORTED.iter().map(|m| m.name()).collect();
    let mut methods: Vec<String> = Vec::new();
    match get("auth_methods") {
        None => t.defaults.push("auth_methods".into()),
        Some(v) => {
            let listed = strings(&v);
            let mut sorted = listed.clone();
            sorted.sort();
            sorted.dedup();
            if sorted == KONG_AUTH_METHODS {
                t.defaults.push("auth_methods".into());
                if !(has_secret && has_redirect) {
                    t.adjusted.push(format!(
                        "auth_methods: Kong's default (every method); here {} need session_secret{} (Kong generates a secret and derives the redirect URI itself)",
                        if has_secret { "authorization_code would" } else { "session and authorization_code would" },
                        if has_redirect { "" } else { " and redirect_uri" },
                    ));
                }
                methods = supported
                    .iter()
                    .filter(|m| match **m {
                        "session" => has_secret,
                        "authorization_code" => has_secret && has_redirect,
                        _ => true,
                    })
                    .map(|m| m.to_string())
                    .collect();
            } else {
                for m in listed {
                    if m == "kong_oauth2" {
                        t.adjusted
                            .push("auth_methods: kong_oauth2 dropped (tokens of Kong's OAuth 2.0 plugin do not exist in Envoy)".into());
                    } else if !supported.contains(&m.as_str()) {
                        t.adjusted.push(format!("auth_methods: `{m}` dropped (not a method of this filter)"));
                    } else if (m == "session" || m == "authorization_code") && !has_secret {
                        t.adjusted.push(format!(
                            "auth_methods: `{m}` dropped: it needs session_secret here (Kong generates one; set the same secret on every Envoy)"
                        ));
                    } else if m == "authorization_code" && !has_redirect {
                        t.adjusted.push(
                            "auth_methods: `authorization_code` dropped: it needs redirect_uri here (Kong derives one from the request)"
                                .into(),
                        );
                    } else if !methods.contains(&m) {
                        methods.push(m);
                    }
                }
                if methods.is_empty() {
                    return Err("Kong's `auth_methods` has no method this filter can use".into());
                }
                t.config.insert("auth_methods".into(), Value::Sequence(methods.iter().map(|m| m.as_str().into()).collect()));
            }
        }
    }
    let method_on = |m: &str| methods.is_empty() || methods.iter().any(|x| x == m);

    // bearer_token_param_type: header, query and cookie; not the body.
    let bearer_on = method_on("bearer") || method_on("introspection") || method_on("userinfo");
    match get("bearer_token_param_type") {
        Some(v) if bearer_on => {
            let listed = strings(&v);
            let kept: Vec<String> = listed.iter().filter(|s| s.as_str() != "body").cloned().collect();
            if kept.len() != listed.len() {
                t.adjusted.push(
                    "bearer_token_param_type: `body` dropped (a Wasm filter in Envoy decides on the request headers, before any body)"
                        .into(),
                );
            }
            let kept = Value::Sequence(kept.iter().map(|s| s.as_str().into()).collect());
            if nothing(&kept) || at_default("bearer_token_param_type", &kept) {
                t.defaults.push("bearer_token_param_type".into());
            } else {
                t.config.insert("bearer_token_param_type".into(), kept);
            }
        }
        // no bearer token is read: where from does not matter
        _ => t.defaults.push("bearer_token_param_type".into()),
    }

    // Where credentials are read: this filter reads them from headers only.
    for (field, method, what) in [
        ("password_param_type", "password", "the username and password come from `Authorization: Basic` only"),
        ("client_credentials_param_type", "client_credentials", "the client id and secret come from `Authorization: Basic` only"),
        ("refresh_token_param_type", "refresh_token", "the refresh token comes from the `refresh_token_param_name` header only"),
    ] {
        match get(field) {
            Some(v) if method_on(method) && strings(&v).iter().any(|s| s != "header") => {
                t.adjusted.push(format!("{field}: {what}"));
            }
            _ => t.defaults.push(field.into()),
        }
    }

    // The client certificate and the IdP's server certificate belong to the Envoy clusters.
    if let Some(id) = get("tls_client_auth_cert_id").as_ref().and_then(Value::as_str) {
        t.adjusted.push(format!(
            "tls_client_auth_cert_id: Kong certificate {id}: give its certificate and key as --client-cert and --client-key"
        ));
    } else {
        t.defaults.push("tls_client_auth_cert_id".into());
    }
    match get(SSL_VERIFY_KEY).as_ref().and_then(Value::as_bool) {
        Some(false) => {
            t.config.insert(SSL_VERIFY_KEY.into(), false.into());
        }
        _ => t.defaults.push(SSL_VERIFY_KEY.into()),
    }
    match get("ssl_verify").as_ref().and_then(Value::as_bool) {
        Some(false) => t.adjusted.push(
            "ssl_verify: false (Kong's default) is not carried over: the rendered clusters verify the IdP's certificate (--idp-ca)".into(),
        ),
        _ => t.defaults.push("ssl_verify".into()),
    }

    // upstream_headers: [{header, path}] → upstream_headers_claims / _names for top-level claims.
    match get("upstream_headers") {
        Some(Value::Sequence(items)) if !items.is_empty() => {
            let mut claims = t.config.get("upstream_headers_claims").map(&strings).unwrap_or_default();
            let mut names = t.config.get("upstream_headers_names").map(&strings).unwrap_or_default();
            for item in items.iter().filter_map(Value::as_mapping) {
                let header = item.get("header").and_then(Value::as_str).unwrap_or("");
                let path = item.get("path").map(&strings).unwrap_or_default();
                if path.len() == 1 && !header.is_empty() {
                    claims.push(path[0].clone());
                    names.push(header.to_string());
                } else {
                    t.unsupported.push(format!("upstream_headers ({header}): only top-level claims become headers here (path {path:?})"));
                }
            }
            if !claims.is_empty() {
                t.adjusted.push("upstream_headers: merged into upstream_headers_claims / upstream_headers_names".into());
                let list = |v: Vec<String>| Value::Sequence(v.into_iter().map(Value::String).collect());
                t.config.insert("upstream_headers_claims".into(), list(claims));
                t.config.insert("upstream_headers_names".into(), list(names));
            }
        }
        _ => t.defaults.push("upstream_headers".into()),
    }

    // client_jwk: Kong's key for private_key_jwt. This filter takes a PEM.
    let uses_pkjwt = client_auths(&t.config).contains(&ClientAuth::PrivateKeyJwt);
    match get("client_jwk") {
        Some(v) if !nothing(&v) && uses_pkjwt => t
            .unsupported
            .push("client_jwk: give the private key as PEM in client_private_key (and its kid in client_private_key_id)".into()),
        _ => t.defaults.push("client_jwk".into()),
    }

    // issuers_allowed and extra_jwks_uris are copied; what works otherwise than in Kong is said.
    let issuer = t.config.get("issuer").and_then(Value::as_str).unwrap_or_default().to_string();
    let listed = |k: &str| get(k).map(|v| strings(&v)).unwrap_or_default();
    let others: Vec<String> = listed("issuers_allowed").into_iter().filter(|i| i.trim() != issuer).collect();
    if !others.is_empty() {
        t.adjusted.push(format!(
            "issuers_allowed: {}: each is discovered at its own /.well-known/openid-configuration, and its tokens are verified with its key set only (Kong verifies the tokens of every allowed issuer with the keys of `issuer` and extra_jwks_uris)",
            others.join(", ")
        ));
    }
    let host = |u: &str| envoy_oidc::core::idp::Endpoint::parse(u.trim()).ok().map(|e| e.authority);
    for (field, urls) in [("issuers_allowed", others), ("extra_jwks_uris", listed("extra_jwks_uris"))] {
        for u in urls.iter().filter(|u| host(u) != host(&issuer)) {
            t.adjusted.push(format!(
                "{field}: `{u}` is fetched through idp_cluster{}, which connects to the issuer's host: give it a cluster that reaches this one",
                if field == "issuers_allowed" { " (unless a policy has that issuer)" } else { "" }
            ));
        }
    }

    // Objects that are defaults unless switched on inside.
    let on = |k: &str, inner: &str| {
        get(k).and_then(|v| v.as_mapping().and_then(|m| m.get(inner)).map(clean)).filter(|v| !nothing(v) && v.as_bool() != Some(false))
    };
    for (field, inner, reason) in [
        ("principals", "enabled", "Kong Identity principals do not exist in Envoy"),
        ("token_exchange", "subject_token_issuers", "token exchange is not supported"),
        (
            "proof_of_possession_mtls_from_header",
            "certificate_header_name",
            "the downstream certificate comes from the TLS connection only",
        ),
    ] {
        if on(field, inner).is_some() {
            t.unsupported.push(format!("{field}: {reason}"));
        } else {
            t.defaults.push(field.into());
        }
    }
    Ok(())
}

/// Integral floats become integers (Kong's JSON may carry `10000.0`); recursively.
fn clean(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && (0.0..9.0e15).contains(&f) => Value::Number((f as u64).into()),
            _ => v.clone(),
        },
        Value::Sequence(s) => Value::Sequence(s.iter().map(clean).collect()),
        Value::Mapping(m) => Value::Mapping(m.iter().map(|(k, v)| (k.clone(), clean(v))).collect()),
        _ => v.clone(),
    }
}

/// Null, an empty string, list or object.
fn nothing(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.is_empty(),
        _ => false,
    }
}

/// `v` equals the JSON `default`, lists compared as sets, numbers by value.
fn same(v: &Value, default: &str) -> bool {
    let Ok(d) = serde_json::from_str::<Json>(default) else {
        return false;
    };
    let Ok(v) = serde_json::to_value(v) else {
        return false;
    };
    norm(&v) == norm(&d)
}

/// `v` equals the filter's default for key `name` (false when it has none).
fn at_default(name: &str, v: &Value) -> bool {
    keys::default_of(name).is_some_and(|default| same(v, default))
}

fn norm(v: &Json) -> Json {
    match v {
        Json::Array(a) => {
            let mut items: Vec<Json> = a.iter().map(norm).collect();
            items.sort_by_key(|x| x.to_string());
            items.dedup();
            Json::Array(items)
        }
        Json::Number(n) => n.as_f64().map_or_else(|| v.clone(), Json::from),
        Json::Object(o) => Json::Object(o.iter().map(|(k, v)| (k.clone(), norm(v))).collect()),
        _ => v.clone(),
    }
}

/// ` = value` for messages, only for values that cannot be secrets.
fn show(name: &str, v: &Value) -> String {
    let secretish = ["secret", "password", "authorization", "key", "jwk", "salt", "token_exchange"].iter().any(|s| name.contains(s));
    if secretish {
        return String::new();
    }
    let short = |s: &str| s.len() <= 60 && !s.chars().any(char::is_control);
    let shown = match v {
        Value::Bool(_) | Value::Number(_) => serde_json::to_string(v).ok(),
        Value::String(s) if short(s) => serde_json::to_string(s).ok(),
        Value::Sequence(items) if items.iter().all(|i| i.as_str().is_some_and(short)) => {
            serde_json::to_string(v).ok().filter(|s| s.len() <= 100)
        }
        _ => None,
    };
    shown.map(|s| format!(" = {s}")).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_yaml_ng::from_str(s).unwrap()
    }

    fn kong_of(doc: &str) -> Found {
        match classify(yaml(doc), false).unwrap() {
            Input::Kong(found) => pick(found, None).unwrap(),
            Input::Ours(_) => panic!("not detected as Kong"),
        }
    }

    /// What Kong's Admin API shows for a plugin created with a few fields: every other field
    /// is there too, null or at its default.
    pub(crate) const ADMIN_API: &str = r#"{
      "id": "3f0e0b5c-8c1b-4b7e-9a8e-6f1e2d3c4b5a",
      "name": "openid-connect",
      "instance_name": null,
      "enabled": true,
      "route": null, "service": null, "consumer": null,
      "protocols": ["grpc", "grpcs", "http", "https"],
      "tags": null,
      "config": {
        "issuer": "https://idp.example.com/.well-known/openid-configuration",
        "client_id": ["client-tls-auth"],
        "client_secret": null,
        "client_auth": ["tls_client_auth"],
        "client_alg": null,
        "client_arg": "client_id",
        "client_jwk": null,
        "auth_methods": ["password", "kong_oauth2"],
        "tls_client_auth_cert_id": "6a3c3f5e-1111-2222-3333-444455556666",
        "tls_client_auth_ssl_verify": true,
        "ssl_verify": false,
        "scopes": ["openid"],
        "scopes_claim": ["scope"],
        "audience_claim": ["aud"],
        "groups_claim": ["groups"],
        "roles_claim": ["roles"],
        "scopes_required": ["api:read"],
        "audience_required": null,
        "timeout": 10000,
        "leeway": 0,
        "cache_tokens": true,
        "cache_tokens_salt": "q1w2e3r4t5y6u7i8o9p0",
        "cache_ttl": 3600,
        "cache_introspection": true,
        "introspection_check_active": true,
        "hide_credentials": false,
        "upstream_access_token_header": "authorization:bearer",
        "upstream_id_token_header": null,
        "upstream_user_info_header": null,
        "upstream_headers_claims": null,
        "upstream_headers_names": null,
        "bearer_token_param_type": ["header", "query", "body"],
        "bearer_token_cookie_name": null,
        "password_param_type": ["header", "query", "body"],
        "client_credentials_param_type": ["header", "query", "body"],
        "refresh_token_param_type": ["header", "query", "body"],
        "consumer_claim": ["sub"],
        "consumer_by": ["username", "custom_id"],
        "consumer_optional": false,
        "credential_claim": ["sub"],
        "session_secret": null,
        "session_cookie_name": "session",
        "session_cookie_same_site": "Lax",
        "session_idling_timeout": 900,
        "session_rolling_timeout": 3600,
        "session_absolute_timeout": 86400,
        "session_storage": "cookie",
        "session_memcached_host": "127.0.0.1",
        "session_memcached_port": 11211,
        "authorization_cookie_same_site": "Default",
        "logout_methods": ["DELETE", "POST"],
        "logout_revoke": false,
        "logout_post_arg": null,
        "proof_of_possession_mtls": "off",
        "proof_of_possession_dpop": "off",
        "http_version": 1.1,
        "keepalive": true,
        "verify_signature": true,
        "verify_claims": true,
        "run_on_preflight": true,
        "response_mode": "query",
        "response_type": ["code"],
        "rediscovery_lifetime": 30,
        "display_errors": false,
        "token_endpoint": null,
        "http_proxy": null,
        "redis": {"host": "127.0.0.1", "port": 6379, "password": null, "ssl": false},
        "principals": {"enabled": false, "directory": "default"},
        "token_exchange": {"subject_token_issuers": null, "cache": {"enabled": true, "ttl": 10}},
        "some_future_field": null
      }
    }"#;

    #[test]
    fn admin_api_json_translates_supported_fields() {
        let found = kong_of(ADMIN_API);
        assert!(found.label.contains("3f0e0b5c"), "{}", found.label);
        let t = translate(&found.plugin).unwrap();
        let c = &t.config;
        assert_eq!(c.get("issuer").and_then(Value::as_str), Some("https://idp.example.com"));
        // Kong lists become one value
        assert_eq!(c.get("client_id").and_then(Value::as_str), Some("client-tls-auth"));
        assert_eq!(c.get("client_auth").and_then(Value::as_str), Some("tls_client_auth"));
        // kong_oauth2 is not a method here
        assert_eq!(c.get("auth_methods"), Some(&yaml("[password]")));
        assert_eq!(c.get("scopes_required"), Some(&yaml("['api:read']")));
        // no bearer method: where bearer tokens are read does not matter
        assert!(c.get("bearer_token_param_type").is_none());
        // defaults equal to ours and nulls are gone
        for gone in [
            "client_secret",
            "scopes",
            "timeout",
            "leeway",
            "cache_tokens",
            "upstream_access_token_header",
            "scopes_claim",
            "logout_methods",
            "session_cookie_name",
            "audience_required",
            "tls_client_auth_ssl_verify",
            "cache_tokens_salt",
            "redis",
            "some_future_field",
        ] {
            assert!(c.get(gone).is_none(), "{gone} should be dropped: {c:?}");
        }
        // the result is a configuration the filter accepts (with the Envoy-side cluster names)
        let mut ours = c.clone();
        ours.insert("idp_cluster".into(), "idp".into());
        ours.insert("tls_client_auth_cluster".into(), "idp-mtls".into());
        let text = serde_yaml_ng::to_string(&Value::Mapping(ours)).unwrap();
        envoy_oidc::core::config::Plan::parse(text.as_bytes()).unwrap();
    }

    #[test]
    fn unsupported_fields_are_listed_with_reasons_and_defaults_are_silent() {
        let t = translate(&kong_of(ADMIN_API).plugin).unwrap();
        let unsupported = t.unsupported.join("\n");
        // consumer_claim is set (Kong's default is null): listed
        assert!(unsupported.contains("consumer_claim = [\"sub\"]: Kong consumers"), "{unsupported}");
        // at Kong's defaults: silent, but known
        for silent in ["consumer_by", "credential_claim", "session_storage", "http_version", "client_arg", "redis", "principals"] {
            assert!(!unsupported.contains(silent), "{silent} listed: {unsupported}");
            assert!(t.defaults.iter().any(|d| d == silent), "{silent} not in defaults");
        }
        let adjusted = t.adjusted.join("\n");
        assert!(adjusted.contains("issuer: Kong's discovery URL"), "{adjusted}");
        assert!(adjusted.contains("kong_oauth2 dropped"), "{adjusted}");
        // no bearer method is enabled: nothing to say about where bearer tokens are read
        assert!(!adjusted.contains("bearer_token_param_type"), "{adjusted}");
        assert!(adjusted.contains("password_param_type: "), "{adjusted}");
        // client_credentials / refresh_token are not enabled: no note
        assert!(!adjusted.contains("client_credentials_param_type"), "{adjusted}");
        assert!(adjusted.contains("tls_client_auth_cert_id: Kong certificate 6a3c3f5e"), "{adjusted}");
        assert!(adjusted.contains("ssl_verify: false"), "{adjusted}");
    }

    #[test]
    fn non_default_unsupported_values_are_listed() {
        let t = translate(
            &kong_of(
                r#"{"name":"openid-connect","config":{"issuer":"https://idp","client_id":["a","b"],"session_storage":"redis",
                "token_endpoint":"https://idp/t","logout_post_arg":"logout","verify_signature":false,
                "http_proxy_authorization":"Basic c2VjcmV0","brand_new":"x","principals":{"enabled":true},
                "bearer_token_param_type":["body","header"],
                "upstream_headers":[{"header":"x-sub","path":["sub"]},{"header":"x-r","path":["realm","roles"]}]}}"#,
            )
            .plugin,
        )
        .unwrap();
        let u = t.unsupported.join("\n");
        for field in [
            "session_storage = \"redis\"",
            "token_endpoint",
            "logout_post_arg",
            "verify_signature = false",
            "brand_new = \"x\": unknown",
            "principals",
            "upstream_headers (x-r)",
        ] {
            assert!(u.contains(field), "{field} missing in:\n{u}");
        }
        // no secret values in messages
        assert!(!u.contains("c2VjcmV0"), "{u}");
        assert!(u.contains("http_proxy_authorization: "), "{u}");
        assert_eq!(t.config.get("client_id").and_then(Value::as_str), Some("a"));
        let adjusted = t.adjusted.join("\n");
        assert!(adjusted.contains("client_id: 2 values"), "{adjusted}");
        // every method is on by default: `body` is worth a word; [header] is our default
        assert!(adjusted.contains("bearer_token_param_type: `body` dropped"), "{adjusted}");
        assert!(t.config.get("bearer_token_param_type").is_none());
        assert_eq!(t.config.get("upstream_headers_claims"), Some(&yaml("[sub]")));
        assert_eq!(t.config.get("upstream_headers_names"), Some(&yaml("[x-sub]")));
    }

    #[test]
    fn deck_yaml_is_found_at_any_level() {
        let doc = r#"
_format_version: "3.0"
services:
- name: api
  url: http://upstream:8080
  routes:
  - name: api-route
    paths: [/]
    plugins:
    - name: openid-connect
      config:
        issuer: https://idp.example.com
        client_id: [c1]
        client_secret: [s1]
        auth_methods: [bearer, password]
        scopes: [openid, profile]
        tls_client_auth_ssl_verify: false
plugins:
- name: rate-limiting
  config: {minute: 5}
"#;
        let found = kong_of(doc);
        assert!(found.label.contains("service api / route api-route"), "{}", found.label);
        let t = translate(&found.plugin).unwrap();
        assert_eq!(t.config.get("client_secret").and_then(Value::as_str), Some("s1"));
        assert_eq!(t.config.get("scopes"), Some(&yaml("[openid, profile]")));
        assert_eq!(t.config.get("auth_methods"), Some(&yaml("[bearer, password]")));
        assert!(t.config.get("bearer_token_param_type").is_none());
        // kept for the renderer (the mTLS cluster without validation_context)
        assert_eq!(t.config.get("tls_client_auth_ssl_verify"), Some(&Value::Bool(false)));
        assert!(t.context.is_empty());
    }

    #[test]
    fn several_plugins_need_a_choice() {
        let doc = r#"{"data":[
            {"id":"p1","name":"openid-connect","config":{"issuer":"https://a"},"route":{"id":"r1"}},
            {"id":"p2","name":"key-auth","config":{}},
            {"id":"p3","name":"openid-connect","instance_name":"second","config":{"issuer":"https://b"}}]}"#;
        let Input::Kong(found) = classify(yaml(doc), false).unwrap() else { panic!() };
        assert_eq!(found.len(), 2);
        let e = pick(found.clone(), None).unwrap_err();
        assert!(e.contains("--kong-plugin") && e.contains("p1") && e.contains("second"), "{e}");
        assert_eq!(pick(found.clone(), Some("second")).unwrap().plugin.get("id").unwrap().as_str(), Some("p3"));
        let first = pick(found.clone(), Some("1")).unwrap();
        let t = translate(&first.plugin).unwrap();
        assert!(t.context[0].contains("scoped to route r1"), "{:?}", t.context);
        assert!(pick(found, Some("nope")).is_err());
    }

    #[test]
    fn ours_is_not_mistaken_for_kong_and_bare_config_with_flag() {
        let ours = "issuer: https://idp\nidp_cluster: idp\nclient_id: c\n";
        assert!(matches!(classify(yaml(ours), false).unwrap(), Input::Ours(_)));
        let Input::Kong(found) = classify(yaml("issuer: https://idp\nclient_id: [c]\n"), true).unwrap() else { panic!() };
        let t = translate(&found[0].plugin).unwrap();
        assert_eq!(t.config.get("client_id").and_then(Value::as_str), Some("c"));
        assert!(classify(yaml(r#"{"name":"key-auth","config":{}}"#), false).unwrap_err().contains("key-auth"));
    }

    #[test]
    fn default_auth_methods_follow_the_settings() {
        let all = r#"["authorization_code","bearer","client_credentials","introspection","kong_oauth2","password","refresh_token","session","userinfo"]"#;
        let t = translate(
            &kong_of(&format!(r#"{{"name":"openid-connect","config":{{"issuer":"https://i","client_id":["c"],"auth_methods":{all}}}}}"#))
                .plugin,
        )
        .unwrap();
        assert!(t.config.get("auth_methods").is_none());
        assert!(t.adjusted.join("\n").contains("session and authorization_code would need session_secret"), "{:?}", t.adjusted);
        // an explicit session without a secret is dropped with a note
        let t = translate(
            &kong_of(r#"{"name":"openid-connect","config":{"issuer":"https://i","client_id":["c"],"auth_methods":["session","bearer"]}}"#)
                .plugin,
        )
        .unwrap();
        assert_eq!(t.config.get("auth_methods"), Some(&yaml("[bearer]")));
        assert!(t.adjusted.join("\n").contains("`session` dropped"));
        let e = translate(&kong_of(r#"{"name":"openid-connect","config":{"issuer":"https://i","auth_methods":["kong_oauth2"]}}"#).plugin)
            .unwrap_err();
        assert!(e.contains("auth_methods"), "{e}");
    }

    #[test]
    fn issuers_allowed_and_extra_jwks_uris_are_carried_over() {
        let t = translate(
            &kong_of(
                r#"{"name":"openid-connect","config":{"issuer":"https://kc.example.com/realms/a","client_id":["c"],
                "auth_methods":["bearer"],
                "issuers_allowed":["https://kc.example.com/realms/a","https://kc.example.com/realms/b","https://other.example.com"],
                "extra_jwks_uris":["https://kc.example.com/realms/a/extra","https://keys.example.net/jwks.json"]}}"#,
            )
            .plugin,
        )
        .unwrap();
        assert_eq!(
            t.config.get("issuers_allowed"),
            Some(&yaml("[https://kc.example.com/realms/a, https://kc.example.com/realms/b, https://other.example.com]"))
        );
        assert_eq!(
            t.config.get("extra_jwks_uris"),
            Some(&yaml("[https://kc.example.com/realms/a/extra, https://keys.example.net/jwks.json]"))
        );
        assert!(t.unsupported.is_empty(), "{:?}", t.unsupported);
        let adjusted = t.adjusted.join("\n");
        assert!(
            adjusted.contains("issuers_allowed: https://kc.example.com/realms/b, https://other.example.com: each is discovered"),
            "{adjusted}"
        );
        // the realm on the issuer's host needs nothing; the other hosts need a cluster
        assert!(adjusted.contains("`https://other.example.com` is fetched through idp_cluster (unless"), "{adjusted}");
        assert!(adjusted.contains("extra_jwks_uris: `https://keys.example.net/jwks.json` is fetched"), "{adjusted}");
        assert!(!adjusted.contains("`https://kc.example.com/realms/b` is fetched") && !adjusted.contains("a/extra` is"), "{adjusted}");
        // the filter takes the result
        let mut ours = t.config.clone();
        ours.insert("idp_cluster".into(), "idp".into());
        let plan = envoy_oidc::core::config::Plan::parse(serde_yaml_ng::to_string(&Value::Mapping(ours)).unwrap().as_bytes()).unwrap();
        assert_eq!(plan.policy.trusted.len(), 3);
        assert_eq!(plan.policy.trusted[0].docs.len(), 3);
        // only the own issuer: nothing to say; unset: dropped as a default
        let t = translate_one("issuers_allowed", r#"["https://i"]"#).unwrap();
        assert!(t.adjusted.iter().all(|a| !a.contains("issuers_allowed")), "{:?}", t.adjusted);
        let t = translate_one("extra_jwks_uris", "[]").unwrap();
        assert!(t.config.get("extra_jwks_uris").is_none() && t.defaults.iter().any(|d| d == "extra_jwks_uris"));
    }

    #[test]
    fn numbers_and_lists_compare_by_value() {
        assert!(same(&yaml("10000.0"), "10000"));
        assert!(same(&yaml("[DELETE, POST]"), r#"["POST","DELETE"]"#));
        assert!(!same(&yaml("[GET, POST]"), r#"["POST","DELETE"]"#));
        assert_eq!(clean(&yaml("{a: 900.0, b: [1.5]}")), yaml("{a: 900, b: [1.5]}"));
    }

    fn translate_one(name: &str, value: &str) -> Result<Translation, String> {
        let mut config: Mapping = serde_yaml_ng::from_str(r#"{"issuer": "https://i", "client_id": ["c"]}"#).unwrap();
        config.insert(name.into(), serde_yaml_ng::from_str(value).unwrap());
        let mut plugin = Mapping::new();
        plugin.insert("name".into(), PLUGIN_NAME.into());
        plugin.insert("config".into(), Value::Mapping(config));
        translate(&plugin)
    }

    /// Every key of the filter is either copied or special-cased in `FILTER_KEYS`, and then
    /// handled; the Kong-only table claims none of them.
    #[test]
    fn every_filter_key_is_classified_and_handled() {
        for (name, _) in FILTER_KEYS {
            assert!(keys::key(name).is_some(), "`{name}` in FILTER_KEYS is no longer a key of the filter");
        }
        for key in keys::KEYS {
            let name = key.name;
            let listed = FILTER_KEYS.iter().find(|(k, _)| *k == name).map(|(_, r)| *r);
            let rule = rule(name);
            assert!(
                listed == Some(rule) || (listed.is_none() && rule == Rule::Copy),
                "`{name}` is a key of the filter but neither copied nor in FILTER_KEYS: {rule:?}"
            );
            assert_eq!(kong_only(name), None, "`{name}` is a key of the filter: take it out of kong_only (or list it in FILTER_KEYS)");
            if let Some(default) = key.default {
                serde_json::from_str::<Json>(default).unwrap_or_else(|e| panic!("`{name}`: default {default}: {e}"));
            }
            if name == "issuer" {
                assert!(translate_one(name, "null").unwrap_err().contains("issuer"));
                continue;
            }
            // null: handled, as a default
            let t = translate_one(name, "null").unwrap();
            assert!(t.defaults.iter().any(|d| d == name), "`{name}`: null not dropped: {t:?}");
            assert!(t.config.get(name).is_none() && t.unsupported.is_empty(), "`{name}`: {t:?}");
            // the filter's default: dropped
            if let Some(default) = key.default {
                let t = translate_one(name, default).unwrap();
                assert!(t.config.get(name).is_none(), "`{name}`: its default {default} is kept: {t:?}");
                assert!(t.defaults.iter().any(|d| d == name), "`{name}`: {t:?}");
            }
            let t = translate_one(name, "[__v]");
            match rule {
                Rule::Copy => assert_eq!(t.unwrap().config.get(name), Some(&yaml("[__v]")), "`{name}`"),
                Rule::First => assert_eq!(t.unwrap().config.get(name), Some(&yaml("__v")), "`{name}`"),
                Rule::Ignore(_, reason) => {
                    let t = t.unwrap();
                    assert!(t.config.get(name).is_none(), "`{name}`: {t:?}");
                    assert!(t.unsupported.iter().any(|u| u.starts_with(name) && u.ends_with(reason)), "`{name}`: {t:?}");
                }
                Rule::Special | Rule::Silent => {}
            }
        }
    }
}
