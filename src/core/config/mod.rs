//! The plugin configuration: parsed and validated once into an immutable [`Plan`].
//!
//! Field names follow Kong's `openid-connect` plugin wherever the meaning is the same; the
//! keys and their defaults are listed once in [`keys::KEYS`]. Everything is checked here, at
//! load: unknown keys, wrong types, missing companions (a TLS client auth method without
//! `tls_client_auth_cluster`, a secret method without `client_secret` …). The result is
//! split into the narrow settings each module takes ([`Policy`]'s fields), so nothing on
//! the request path reads the whole configuration. A [`Plan`] holds no `Rc`: it can be
//! shared by the threads of a native host.
//!
//! `issuers_allowed` and `extra_jwks_uris` become issuers of the plan too (see
//! [`Policy::trusted`]), linked once every policy is known: an allowed issuer is fetched
//! through the cluster of the policy that has it, if one does, else through the allowing
//! policy's `idp_cluster`; an extra key set always through the policy's `idp_cluster`.

pub mod keys;
mod raw;

use crate::core::challenge::ChallengeSettings;
use crate::core::claims::Rule;
use crate::core::client_auth::{Client, ClientAuth, ClientSettings, MtlsOverrides, Signer};
use crate::core::cookies::{self, CookieAttrs, SameSite};
use crate::core::credentials::BearerSources;
use crate::core::docs::DocsSettings;
use crate::core::error::ConfigError;
use crate::core::extras::{self, Extra, Extras};
use crate::core::header::{names, HeaderName, HeaderValue};
use crate::core::idp::Endpoint;
use crate::core::method::{AuthMethod, Methods};
use crate::core::oauth::authorize::LoginSettings;
use crate::core::oauth::logout::LogoutSettings;
use crate::core::pop::Pop;
use crate::core::session::{Sealer, SessionSettings, Timeouts};
use crate::core::upstream::{IdentityHeaders, TokenHeader, UpstreamSettings};

use raw::{OneOrMany, Raw};

/// The validated configuration: the policies that decide requests, the issuers whose
/// documents they use, and which route takes which policy.
///
/// The top-level keys are the default policy. Each entry of `policies` is layered over
/// them (its keys replace the top level's, as Kong layers a route's plugin over a
/// service's). `route_policies` names a policy per Envoy route name.
#[derive(Debug)]
pub struct Plan {
    /// The default policy's issuer (`issuers[0]`).
    pub issuer: DocsSettings,
    /// The default policy (the top-level keys).
    pub policy: Policy,
    /// The named policies (`policies`), in the order written.
    pub named: Vec<Policy>,
    /// Every distinct issuer (and how its documents are fetched), and every extra key set;
    /// policies refer to these by index, so each is fetched once however many policies use it.
    pub issuers: Vec<DocsSettings>,
    /// `route_policies`: route name → policy id.
    pub routes: Vec<(String, PolicyId)>,
}

/// A policy of a [`Plan`]: 0 is the default, `i + 1` is `named[i]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PolicyId(pub usize);

impl Plan {
    /// The policy with this id.
    pub fn get(&self, id: PolicyId) -> Option<&Policy> {
        match id.0 {
            0 => Some(&self.policy),
            i => self.named.get(i - 1),
        }
    }

    /// The id of the named policy `name`.
    pub fn find(&self, name: &str) -> Option<PolicyId> {
        self.named.iter().position(|p| p.name == name).map(|i| PolicyId(i + 1))
    }

    /// The policy `route_policies` gives route `name`.
    pub fn for_route(&self, name: &str) -> Option<PolicyId> {
        self.routes.iter().find(|(r, _)| r == name).map(|(_, id)| *id)
    }

    /// Whether requests choose among several policies (else every request takes the
    /// default, and nothing about the route is read).
    pub fn chooses(&self) -> bool {
        !self.named.is_empty()
    }

    /// Every policy with its id, the default first.
    pub fn policies(&self) -> impl Iterator<Item = (PolicyId, &Policy)> {
        std::iter::once(&self.policy).chain(&self.named).enumerate().map(|(i, p)| (PolicyId(i), p))
    }

    /// The line a host logs when it loads the plan (no secret in it).
    pub fn summary(&self) -> String {
        let p = &self.policy;
        let methods: Vec<&str> = p.methods.iter().map(|m| m.name()).collect();
        let named: Vec<&str> = self.named.iter().map(|p| p.name.as_str()).collect();
        format!(
            "configured issuer={} auth_methods={methods:?} token_endpoint_auth_method={} cluster={} policies={named:?}",
            self.issuer.issuer,
            p.client.token_auth.name(),
            p.client.cluster_for(p.client.token_auth)
        )
    }
}

/// How requests are authenticated.
#[derive(Debug)]
pub struct Policy {
    /// `""` for the default policy, else its key in `policies`.
    pub name: String,
    /// Index of its issuer in [`Plan::issuers`].
    pub issuer_id: usize,
    /// Configured methods (tried in Kong's order).
    pub methods: Methods,
    /// The issuer exactly as configured (`iss` of tokens, RFC 9207 `iss` of callbacks).
    pub issuer: String,
    /// The issuers of the bearer JWTs it accepts: its own first, then `issuers_allowed`.
    /// ID tokens are its own issuer's, checked with the discovered key set.
    pub trusted: Vec<Trusted>,
    pub client: ClientSettings,
    /// Space-joined `scopes`.
    pub scope: String,
    pub cache_tokens: bool,
    pub bearer: BearerSources,
    /// Seconds of tolerance on `exp`, `nbf`, `iat`.
    pub leeway: u64,
    /// Non-empty `*_required` rules.
    pub rules: Vec<Rule>,
    /// `claims_forbidden`: claims a token (or its introspection) must not carry.
    pub claims_forbidden: Vec<String>,
    /// `run_on_preflight`: `false` lets CORS preflights (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`) through unauthenticated.
    pub run_on_preflight: bool,
    pub introspection_check_active: bool,
    pub cache_introspection: bool,
    pub upstream: UpstreamSettings,
    pub pop: Pop,
    /// Present when `session` or `authorization_code` is configured.
    pub sessions: Option<SessionSettings>,
    pub login: LoginSettings,
    pub logout: LogoutSettings,
    pub challenge: ChallengeSettings,
    pub timeout_ms: u64,
}

impl Policy {
    pub fn has(&self, m: AuthMethod) -> bool {
        self.methods.has(m)
    }

    /// Whether a request reads many headers (sessions: up to nine), so that reading them
    /// all with one host call is cheaper than one call each.
    pub fn reads_many_headers(&self) -> bool {
        self.sessions.is_some()
    }
}

/// Default IdP call timeout, as Kong's `timeout`.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

impl Plan {
    /// Parses YAML or JSON bytes and validates them.
    pub fn parse(bytes: &[u8]) -> Result<Plan, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ConfigError("not UTF-8".into()))?;
        if text.trim().is_empty() {
            return ConfigError::err("the configuration is empty (`issuer` and `idp_cluster` are required)");
        }
        let mut top = raw::document(text)?;
        let named = top.remove("policies");
        let routes = top.remove("route_policies");
        let mut issuers = Vec::new();
        let (policy, first) = build(top.clone(), None, &mut issuers)?;
        let issuer = issuers.first().cloned().ok_or_else(|| ConfigError("no issuer".into()))?;
        let mut plan = Plan { issuer, policy, named: Vec::new(), issuers, routes: Vec::new() };
        let mut wanted = vec![first];
        for (name, own) in named_policies(named)? {
            let mut merged = top.clone();
            merged.extend(own.clone());
            let (mut p, w) = build(merged, Some((&name, &own)), &mut plan.issuers)?;
            p.name = name;
            plan.named.push(p);
            wanted.push(w);
        }
        plan.routes = route_policies(&plan, routes)?;
        plan.trust(wanted);
        Ok(plan)
    }

    /// Sets each policy's [`Policy::trusted`]: its own issuer with its key sets, then each
    /// allowed issuer, through the cluster of the first policy that has it when one does.
    fn trust(&mut self, wanted: Vec<KeySources>) {
        let mut owners = vec![(self.policy.issuer.clone(), self.policy.issuer_id)];
        for p in &self.named {
            owners.push((p.issuer.clone(), p.issuer_id));
        }
        for (i, w) in wanted.into_iter().enumerate() {
            let Some((issuer, own)) = owners.get(i) else { continue };
            let mut docs = vec![*own];
            for d in w.extra {
                docs.push(intern(&mut self.issuers, d));
            }
            let mut trusted = vec![Trusted { issuer: issuer.clone(), docs }];
            for d in w.allowed {
                let id = match owners.iter().find(|(i, _)| *i == d.issuer) {
                    Some((_, id)) => *id,
                    None => intern(&mut self.issuers, d.clone()),
                };
                trusted.push(Trusted { issuer: d.issuer, docs: vec![id] });
            }
            let p = if i == 0 { Some(&mut self.policy) } else { self.named.get_mut(i - 1) };
            if let Some(p) = p {
                p.trusted = trusted;
            }
        }
    }
}

/// The index of `d` in `issuers`, added unless an equal one is there.
fn intern(issuers: &mut Vec<DocsSettings>, d: DocsSettings) -> usize {
    match issuers.iter().position(|i| *i == d) {
        Some(i) => i,
        None => {
            issuers.push(d);
            issuers.len() - 1
        }
    }
}

/// A policy's `issuers_allowed` (other than its own issuer) and `extra_jwks_uris`, as
/// documents fetched through its own cluster, before [`Plan::trust`] links them.
struct KeySources {
    allowed: Vec<DocsSettings>,
    extra: Vec<DocsSettings>,
}

/// Whose bearer JWTs a policy accepts, and the key sets they are verified with.
#[derive(Debug)]
pub struct Trusted {
    /// The `iss` the token carries.
    pub issuer: String,
    /// Indices in [`Plan::issuers`]: the issuer's discovered key set, then (for the policy's
    /// own issuer) one per `extra_jwks_uris` entry. Never another issuer's.
    pub docs: Vec<usize>,
}

/// The entries of `policies`: names that are plain identifiers, each a mapping.
fn named_policies(v: Option<serde_yaml_ng::Value>) -> Result<Vec<(String, serde_yaml_ng::Mapping)>, ConfigError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let serde_yaml_ng::Value::Mapping(map) = v else { return ConfigError::err("`policies` must map policy names to their keys") };
    let mut out: Vec<(String, serde_yaml_ng::Mapping)> = Vec::new();
    for (k, v) in map {
        let Some(name) = k.as_str().map(str::to_string) else { return ConfigError::err("`policies`: a policy name must be a string") };
        let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok || name.len() > 64 {
            return ConfigError::err(format!(
                "`policies`: `{name}` is not a valid policy name (lowercase letters, digits, `-` and `_`, starting with a letter)"
            ));
        }
        let own = match v {
            serde_yaml_ng::Value::Mapping(m) => m,
            serde_yaml_ng::Value::Null => serde_yaml_ng::Mapping::new(),
            _ => return ConfigError::err(format!("`policies.{name}` must be a mapping of keys")),
        };
        for key in own.keys() {
            if matches!(key.as_str(), Some("policies" | "route_policies")) {
                return ConfigError::err(format!("`policies.{name}`: policies do not nest"));
            }
        }
        out.push((name, own));
    }
    Ok(out)
}

/// `route_policies`: each route name names a policy the plan has.
fn route_policies(plan: &Plan, v: Option<serde_yaml_ng::Value>) -> Result<Vec<(String, PolicyId)>, ConfigError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let serde_yaml_ng::Value::Mapping(map) = v else { return ConfigError::err("`route_policies` must map route names to policy names") };
    map.into_iter()
        .map(|(k, v)| {
            let (Some(route), Some(name)) = (k.as_str(), v.as_str()) else {
                return ConfigError::err("`route_policies`: route and policy names are strings");
            };
            match plan.find(name) {
                Some(id) => Ok((route.to_string(), id)),
                None => ConfigError::err(format!("`route_policies.{route}`: there is no policy `{name}` in `policies`")),
            }
        })
        .collect()
}

/// One policy from its mapping (`named`: its name and its own keys, for a named policy);
/// its issuer is added to `issuers` unless an equal one is there.
fn build(
    map: serde_yaml_ng::Mapping,
    named: Option<(&str, &serde_yaml_ng::Mapping)>,
    issuers: &mut Vec<DocsSettings>,
) -> Result<(Policy, KeySources), ConfigError> {
    let prefix = named.map(|(n, _)| format!("policies.{n}.")).unwrap_or_default();
    let in_policy = |e: ConfigError| match named {
        Some((n, _)) => ConfigError(format!("in `policies.{n}`: {}", e.0)),
        None => e,
    };
    let mut raw = raw::typed(map, &prefix)?;
    let docs = issuer(&raw).map_err(in_policy)?;
    let issuer_id = intern(issuers, docs.clone());
    let sources = key_sources(&mut raw, &docs).map_err(in_policy)?;
    let mut p = policy(raw, &docs, named.map(|(n, _)| n).unwrap_or("")).map_err(in_policy)?;
    p.issuer_id = issuer_id;
    if let (Some((name, own)), Some(s)) = (named, p.sessions.as_mut()) {
        // Each policy's cookies are its own, unless the policy names them itself.
        if !own.contains_key("session_cookie_name") {
            s.cookie_name = format!("{}-{name}", s.cookie_name);
        }
        if !own.contains_key("authorization_cookie_name") {
            s.authorization_cookie_name = format!("{}-{name}", s.authorization_cookie_name);
        }
    }
    Ok((p, sources))
}

/// The issuer and how its documents are fetched.
fn issuer(raw: &Raw) -> Result<DocsSettings, ConfigError> {
    let mut docs = discovered("issuer", raw.issuer.trim(), non_empty("idp_cluster", &raw.idp_cluster)?, timeout(raw)?)?;
    docs.discovery_headers =
        extras::headers("discovery_headers_names", raw.discovery_headers_names.clone(), raw.discovery_headers_values.clone())?;
    Ok(docs)
}

/// The documents of `issuer` (the value of `key`), discovered through `cluster`.
fn discovered(key: &str, issuer: &str, cluster: String, timeout_ms: u64) -> Result<DocsSettings, ConfigError> {
    let bad = |e: String| ConfigError(format!("`{key}`: {e}"));
    Endpoint::parse(issuer).map_err(bad)?;
    let discovery = Endpoint::parse(&format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))).map_err(bad)?;
    Ok(DocsSettings { issuer: issuer.to_string(), discovery, cluster, timeout_ms, jwks: None, discovery_headers: Vec::new() })
}

/// `issuers_allowed` (URLs like `issuer`; the policy's own issuer is always allowed) and
/// `extra_jwks_uris` (http(s) URLs, fetched through `idp_cluster`); none listed twice.
fn key_sources(raw: &mut Raw, own: &DocsSettings) -> Result<KeySources, ConfigError> {
    let mut out = KeySources { allowed: Vec::new(), extra: Vec::new() };
    for (key, list) in [("issuers_allowed", raw.issuers_allowed.take()), ("extra_jwks_uris", raw.extra_jwks_uris.take())] {
        let list = list.unwrap_or_default();
        for (i, u) in list.iter().enumerate() {
            let u = u.trim();
            if list.iter().take(i).any(|o| o.trim() == u) {
                return ConfigError::err(format!("`{key}`: `{u}` is listed twice"));
            }
            if key == "extra_jwks_uris" {
                let jwks = Endpoint::parse(u).map_err(|e| ConfigError(format!("`{key}`: {e}")))?;
                out.extra.push(DocsSettings { jwks: Some(jwks), ..own.clone() });
            } else if u != own.issuer {
                out.allowed.push(discovered(key, u, own.cluster.clone(), own.timeout_ms)?);
            }
        }
    }
    Ok(out)
}

fn timeout(raw: &Raw) -> Result<u64, ConfigError> {
    if !(1..=600_000).contains(&raw.timeout) {
        return ConfigError::err("`timeout`: must be between 1 and 600000 milliseconds");
    }
    Ok(raw.timeout)
}

fn policy(mut raw: Raw, docs: &DocsSettings, name: &str) -> Result<Policy, ConfigError> {
    let methods = methods(&mut raw)?;
    let client = client(&mut raw, methods, docs)?;
    let scopes = std::mem::take(&mut raw.scopes);
    for s in &scopes {
        if s.is_empty() || !s.bytes().all(|b| b > 0x20 && b < 0x7f && b != b'"' && b != b'\\') {
            return ConfigError::err(format!("`scopes`: `{s}` is not a valid scope token"));
        }
    }
    let scope = scopes.join(" ");
    if raw.leeway > 3600 {
        return ConfigError::err("`leeway`: at most 3600 seconds");
    }
    let sessions = if methods.uses_sessions() { Some(sessions(&raw, name)?) } else { None };
    let login = LoginSettings {
        redirect_uris: redirect_uris(&mut raw, methods)?,
        client_id: client.client.id.clone(),
        scope: scope.clone(),
        issuer: docs.issuer.clone(),
        leeway: raw.leeway,
        extra: client.extras.authorization.clone(),
        audience: client.extras.audience.clone(),
    };
    let bearer = bearer_sources(&raw)?;
    Ok(Policy {
        name: name.to_string(),
        issuer_id: 0,
        methods,
        issuer: docs.issuer.clone(),
        trusted: Vec::new(),
        scope,
        cache_tokens: raw.cache_tokens,
        upstream: upstream(&mut raw, &bearer)?,
        bearer,
        leeway: raw.leeway,
        rules: rules(&mut raw)?,
        claims_forbidden: claims_forbidden(raw.claims_forbidden.take())?,
        run_on_preflight: raw.run_on_preflight,
        introspection_check_active: raw.introspection_check_active,
        cache_introspection: raw.cache_introspection,
        pop: pop(&raw.proof_of_possession_mtls)?,
        sessions,
        login,
        logout: logout(&mut raw)?,
        challenge: ChallengeSettings {
            display_errors: raw.display_errors,
            unauthorized_message: std::mem::take(&mut raw.unauthorized_error_message),
            forbidden_message: std::mem::take(&mut raw.forbidden_error_message),
            ..ChallengeSettings::for_methods(methods)
        },
        timeout_ms: docs.timeout_ms,
        client,
    })
}

/// `auth_methods`; by default every method whose settings are present (sessions need a
/// `session_secret`, the authorization code flow also a `redirect_uri`).
fn methods(raw: &mut Raw) -> Result<Methods, ConfigError> {
    let Some(names) = raw.auth_methods.take() else {
        let (secret, redirect) = (raw.session_secret.is_some(), raw.redirect_uri.is_some());
        return Ok(AuthMethod::SUPPORTED
            .into_iter()
            .filter(|m| match m {
                AuthMethod::Session => secret,
                AuthMethod::AuthorizationCode => secret && redirect,
                _ => true,
            })
            .collect());
    };
    if names.is_empty() {
        return ConfigError::err("`auth_methods` must name at least one method");
    }
    names
        .iter()
        .map(|name| {
            AuthMethod::from_name(name.trim()).ok_or_else(|| {
                ConfigError(format!(
                    "`auth_methods`: unknown method `{name}` (session, bearer, introspection, userinfo, refresh_token, password, client_credentials, authorization_code)"
                ))
            })
        })
        .collect()
}

/// The filter's client, its authentication at each endpoint and its upstreams.
fn client(raw: &mut Raw, methods: Methods, docs: &DocsSettings) -> Result<ClientSettings, ConfigError> {
    let single = |v: Option<OneOrMany>, key: &str| v.map(|v| v.single(key)).transpose().map(Option::flatten);
    let id = single(raw.client_id.take(), "client_id")?.map(|id| non_empty("client_id", &id)).transpose()?;
    let secret = single(raw.client_secret.take(), "client_secret")?.filter(|s| !s.is_empty());
    let parse_auth = |key: &str, v: Option<String>| v.map(|m| ClientAuth::parse(key, &m)).transpose();
    let client_auth = parse_auth("client_auth", single(raw.client_auth.take(), "client_auth")?)?;
    let default = if secret.is_some() { ClientAuth::ClientSecretBasic } else { ClientAuth::None };
    let token_auth =
        parse_auth("token_endpoint_auth_method", raw.token_endpoint_auth_method.take())?.unwrap_or(client_auth.unwrap_or(default));
    let introspection_auth =
        parse_auth("introspection_endpoint_auth_method", raw.introspection_endpoint_auth_method.take())?.unwrap_or(token_auth);
    let revocation_auth = parse_auth("revocation_endpoint_auth_method", raw.revocation_endpoint_auth_method.take())?.unwrap_or(token_auth);
    let tls_client_auth_cluster = raw.tls_client_auth_cluster.take().map(|c| non_empty("tls_client_auth_cluster", &c)).transpose()?;
    let needs_client = methods.iter().any(|m| m != AuthMethod::ClientCredentials);
    let id = match id {
        Some(id) => id,
        None if needs_client => return ConfigError::err("`client_id` is required for the configured `auth_methods`"),
        None => String::new(),
    };
    let mut signer = None;
    if needs_client {
        let endpoints = [
            ("token_endpoint_auth_method", token_auth),
            ("introspection_endpoint_auth_method", introspection_auth),
            ("revocation_endpoint_auth_method", revocation_auth),
        ];
        for (key, method) in endpoints {
            check_method(raw, key, method, tls_client_auth_cluster.is_some(), secret.as_deref(), &mut signer)?;
        }
    }
    let endpoint = |key: &str, v: Option<String>| endpoint_opt(key, v);
    let mtls = MtlsOverrides {
        token: endpoint("mtls_token_endpoint", raw.mtls_token_endpoint.take())?,
        introspection: endpoint("mtls_introspection_endpoint", raw.mtls_introspection_endpoint.take())?,
        revocation: endpoint("mtls_revocation_endpoint", raw.mtls_revocation_endpoint.take())?,
    };
    Ok(ClientSettings {
        extras: extras(raw)?,
        client: Client { id, secret, signer },
        token_auth,
        introspection_auth,
        revocation_auth,
        idp_cluster: docs.cluster.clone(),
        tls_client_auth_cluster,
        mtls,
        timeout_ms: docs.timeout_ms,
    })
}

/// Extra arguments and headers of the IdP calls (see [`extras`]).
fn extras(raw: &mut Raw) -> Result<Extras, ConfigError> {
    let extra = |args: (&str, Option<Vec<String>>, Option<Vec<String>>), headers: (&str, Option<Vec<String>>, Option<Vec<String>>)| {
        Ok::<_, ConfigError>(Extra {
            args: extras::args(args.0, args.1, args.2)?,
            headers: extras::headers(headers.0, headers.1, headers.2)?,
        })
    };
    let audience = raw.audience.take().unwrap_or_default().into_iter().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
    Ok(Extras {
        authorization: Extra {
            args: extras::args(
                "authorization_query_args_names",
                raw.authorization_query_args_names.take(),
                raw.authorization_query_args_values.take(),
            )?,
            headers: Vec::new(),
        },
        token: extra(
            ("token_post_args_names", raw.token_post_args_names.take(), raw.token_post_args_values.take()),
            ("token_headers_names", raw.token_headers_names.take(), raw.token_headers_values.take()),
        )?,
        introspection: extra(
            ("introspection_post_args_names", raw.introspection_post_args_names.take(), raw.introspection_post_args_values.take()),
            ("introspection_headers_names", raw.introspection_headers_names.take(), raw.introspection_headers_values.take()),
        )?,
        userinfo: extra(
            ("userinfo_query_args_names", raw.userinfo_query_args_names.take(), raw.userinfo_query_args_values.take()),
            ("userinfo_headers_names", raw.userinfo_headers_names.take(), raw.userinfo_headers_values.take()),
        )?,
        audience,
        introspection_hint: extras::param_value("introspection_hint", &raw.introspection_hint)?,
        introspection_token_param: extras::param_name("introspection_token_param_name", &raw.introspection_token_param_name)?,
        revocation_token_param: extras::param_name("revocation_token_param_name", &raw.revocation_token_param_name)?,
    })
}

/// What `method` at endpoint `key` needs: the client-certificate upstream, the secret, a key.
fn check_method(
    raw: &Raw,
    key: &str,
    method: ClientAuth,
    has_tls_cluster: bool,
    secret: Option<&str>,
    signer: &mut Option<Signer>,
) -> Result<(), ConfigError> {
    if method.is_tls() && !has_tls_cluster {
        return ConfigError::err(format!(
            "`tls_client_auth_cluster` is required: `{key}` is {} (the Envoy cluster that presents the client certificate)",
            method.name()
        ));
    }
    if method.needs_secret() && secret.is_none() {
        return ConfigError::err(format!("`client_secret` is required: `{key}` is {}", method.name()));
    }
    if method == ClientAuth::ClientSecretJwt && signer.is_none() {
        *signer = Some(Signer::hmac(raw.client_alg.as_deref(), secret.unwrap_or_default())?);
    }
    if method == ClientAuth::PrivateKeyJwt {
        let Some(pem) = raw.client_private_key.as_deref() else {
            return ConfigError::err(format!("`client_private_key` (PEM) is required: `{key}` is private_key_jwt"));
        };
        *signer = Some(Signer::private_key(raw.client_alg.as_deref(), pem, raw.client_private_key_id.as_deref())?);
    }
    Ok(())
}

fn upstream(raw: &mut Raw, bearer: &BearerSources) -> Result<UpstreamSettings, ConfigError> {
    let spec = std::mem::take(&mut raw.upstream_access_token_header);
    let access_token = if spec.trim().is_empty() { None } else { Some(TokenHeader::parse("upstream_access_token_header", &spec)?) };
    let token_header = |key: &str, v: Option<String>| v.filter(|s| !s.trim().is_empty()).map(|s| TokenHeader::parse(key, &s)).transpose();
    let refresh_token_header = header_name("refresh_token_param_name", &raw.refresh_token_param_name)?;
    let downstream = match raw.downstream_refresh_token_header.take() {
        Some(n) => header_name("downstream_refresh_token_header", &n)?,
        None => refresh_token_header.clone(),
    };
    Ok(UpstreamSettings {
        headers: IdentityHeaders {
            access_token,
            id_token: token_header("upstream_id_token_header", raw.upstream_id_token_header.take())?,
            user_info: optional_name("upstream_user_info_header", raw.upstream_user_info_header.take())?,
            introspection: optional_name("upstream_introspection_header", raw.upstream_introspection_header.take())?,
            claims: claim_headers("upstream", raw.upstream_headers_claims.take(), raw.upstream_headers_names.take())?,
        },
        downstream: IdentityHeaders {
            access_token: token_header("downstream_access_token_header", raw.downstream_access_token_header.take())?,
            id_token: token_header("downstream_id_token_header", raw.downstream_id_token_header.take())?,
            user_info: optional_name("downstream_user_info_header", raw.downstream_user_info_header.take())?,
            introspection: optional_name("downstream_introspection_header", raw.downstream_introspection_header.take())?,
            claims: claim_headers("downstream", raw.downstream_headers_claims.take(), raw.downstream_headers_names.take())?,
        },
        hide_credentials: raw.hide_credentials,
        refresh_token_header,
        downstream_refresh_token_header: downstream,
        bearer_cookie: bearer.cookie.clone(),
        bearer_header: bearer.header_name.clone(),
    })
}

fn rules(raw: &mut Raw) -> Result<Vec<Rule>, ConfigError> {
    let rule = |name: &'static str, claim_key: &str, entries: Option<Vec<String>>, claim: Vec<String>| {
        Rule::new(name, claim, entries.unwrap_or_default()).map_err(|e| ConfigError(format!("{} (`{claim_key}`)", e.0)))
    };
    let all = [
        rule("scopes_required", "scopes_claim", raw.scopes_required.take(), std::mem::take(&mut raw.scopes_claim))?,
        rule("audience_required", "audience_claim", raw.audience_required.take(), std::mem::take(&mut raw.audience_claim))?,
        rule("groups_required", "groups_claim", raw.groups_required.take(), std::mem::take(&mut raw.groups_claim))?,
        rule("roles_required", "roles_claim", raw.roles_required.take(), std::mem::take(&mut raw.roles_claim))?,
    ];
    Ok(all.into_iter().filter(|r| !r.any_of.is_empty()).collect())
}

fn claims_forbidden(names: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let names: Vec<String> = names.unwrap_or_default().into_iter().map(|n| n.trim().to_string()).collect();
    if names.iter().any(String::is_empty) {
        return ConfigError::err("`claims_forbidden`: an empty claim name");
    }
    Ok(names)
}

fn pop(v: &str) -> Result<Pop, ConfigError> {
    match v.trim() {
        "off" => Ok(Pop::Off),
        "strict" => Ok(Pop::Strict),
        "optional" => Ok(Pop::Optional),
        other => ConfigError::err(format!("`proof_of_possession_mtls`: `{other}` is not one of off, strict, optional")),
    }
}

/// Sessions; `policy` (the policy's name) is bound into every sealed value, so a cookie of
/// one policy never opens in another.
fn sessions(raw: &Raw, policy: &str) -> Result<SessionSettings, ConfigError> {
    let Some(secret) = raw.session_secret.as_deref().filter(|s| !s.is_empty()) else {
        return ConfigError::err(
            "`session_secret` is required with the session and authorization_code methods (every worker and Envoy must share it)",
        );
    };
    if secret.len() < 16 {
        return ConfigError::err("`session_secret` must be at least 16 characters");
    }
    let same_site = match raw.session_cookie_same_site.trim() {
        "Strict" => SameSite::Strict,
        "Lax" => SameSite::Lax,
        "None" => SameSite::None,
        "Default" | "off" => SameSite::Default,
        other => return ConfigError::err(format!("`session_cookie_same_site`: `{other}` is not one of Strict, Lax, None, Default")),
    };
    let attrs = CookieAttrs::new(
        &raw.session_cookie_path,
        raw.session_cookie_domain.as_deref(),
        same_site,
        raw.session_cookie_http_only,
        raw.session_cookie_secure,
    )?;
    Ok(SessionSettings {
        sealer: Sealer::new(secret, policy),
        cookie_name: cookie_name("session_cookie_name", &raw.session_cookie_name)?,
        authorization_cookie_name: cookie_name("authorization_cookie_name", &raw.authorization_cookie_name)?,
        attrs,
        timeouts: Timeouts {
            idling: raw.session_idling_timeout,
            rolling: raw.session_rolling_timeout,
            absolute: raw.session_absolute_timeout,
        },
        authorization_ttl: raw.authorization_rolling_timeout.max(1),
        refresh_tokens: raw.refresh_tokens,
        unauthorized_destroy: raw.unauthorized_destroy_session,
        forbidden_destroy: raw.forbidden_destroy_session,
    })
}

fn redirect_uris(raw: &mut Raw, methods: Methods) -> Result<Vec<Endpoint>, ConfigError> {
    let uris: Vec<Endpoint> = raw
        .redirect_uri
        .take()
        .map(OneOrMany::all)
        .unwrap_or_default()
        .into_iter()
        .map(|u| Endpoint::parse(u.trim()).map_err(|e| ConfigError(format!("`redirect_uri`: {e}"))))
        .collect::<Result<_, _>>()?;
    if methods.has(AuthMethod::AuthorizationCode) && uris.is_empty() {
        return ConfigError::err("`redirect_uri` is required with the authorization_code method");
    }
    Ok(uris)
}

fn logout(raw: &mut Raw) -> Result<LogoutSettings, ConfigError> {
    if raw.logout_post_arg.is_some() {
        // Envoy pauses everything after the headers when a Wasm filter pauses them, so the
        // body cannot be read before the decision is made.
        return ConfigError::err("`logout_post_arg` is not supported: a proxy-wasm filter in Envoy cannot read the request body before deciding; use `logout_uri_suffix` or `logout_query_arg`");
    }
    let methods: Vec<String> = raw.logout_methods.iter().map(|m| m.trim().to_ascii_uppercase()).collect();
    if let Some(m) = methods.iter().find(|m| !["GET", "POST", "DELETE", "PUT", "PATCH"].contains(&m.as_str())) {
        return ConfigError::err(format!("`logout_methods`: `{m}` is not an HTTP method the filter can log out on"));
    }
    // It becomes a `Location` header as it is (when the IdP has no end_session_endpoint).
    let redirect_uri = raw
        .logout_redirect_uri
        .take()
        .filter(|s| !s.trim().is_empty())
        .map(HeaderValue::new)
        .transpose()
        .map_err(|_| ConfigError("`logout_redirect_uri` must not contain control characters".into()))?;
    Ok(LogoutSettings {
        uri_suffix: raw.logout_uri_suffix.take().filter(|s| !s.trim().is_empty()),
        query_arg: raw.logout_query_arg.take().filter(|s| !s.trim().is_empty()),
        methods,
        revoke: raw.logout_revoke,
        revoke_access_token: raw.logout_revoke_access_token,
        revoke_refresh_token: raw.logout_revoke_refresh_token,
        redirect_uri,
    })
}

fn bearer_sources(raw: &Raw) -> Result<BearerSources, ConfigError> {
    let mut out = BearerSources::default();
    if let Some(n) = raw.bearer_token_header_name.as_deref().filter(|n| !n.trim().is_empty()) {
        let name = header_name("bearer_token_header_name", n)?;
        if name.as_str().starts_with(':') {
            return ConfigError::err("`bearer_token_header_name`: a pseudo-header cannot carry a token");
        }
        // `authorization` is the default anyway.
        out.header_name = Some(name).filter(|n| *n != names::AUTHORIZATION);
    }
    for t in &raw.bearer_token_param_type {
        match t.trim() {
            "header" => out.header = true,
            "query" => out.query = true,
            "cookie" => {
                let Some(name) = raw.bearer_token_cookie_name.as_deref().map(str::trim).filter(|c| !c.is_empty()) else {
                    return ConfigError::err("`bearer_token_cookie_name` is required when `bearer_token_param_type` lists cookie");
                };
                out.cookie = Some(name.to_string());
            }
            other => return ConfigError::err(format!("`bearer_token_param_type`: `{other}` is not one of header, query, cookie")),
        }
    }
    Ok(out)
}

fn non_empty(key: &str, v: &str) -> Result<String, ConfigError> {
    let v = v.trim();
    if v.is_empty() {
        return ConfigError::err(format!("`{key}` must not be empty"));
    }
    Ok(v.to_string())
}

fn cookie_name(key: &str, name: &str) -> Result<String, ConfigError> {
    let name = name.trim();
    if !cookies::valid_name(name) {
        return ConfigError::err(format!("`{key}`: `{name}` is not a valid cookie name"));
    }
    Ok(name.to_string())
}

fn header_name(key: &str, name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::new(name).map_err(|_| ConfigError(format!("`{key}`: `{}` is not a valid header name", name.trim())))
}

fn optional_name(key: &str, v: Option<String>) -> Result<Option<HeaderName>, ConfigError> {
    v.filter(|s| !s.trim().is_empty()).map(|s| header_name(key, &s)).transpose()
}

/// `{side}_headers_claims` and `{side}_headers_names` (`side`: `upstream`, `downstream`).
fn claim_headers(side: &str, claims: Option<Vec<String>>, names: Option<Vec<String>>) -> Result<Vec<(String, HeaderName)>, ConfigError> {
    let (claims, names) = (claims.unwrap_or_default(), names.unwrap_or_default());
    if claims.len() != names.len() {
        return ConfigError::err(format!("`{side}_headers_claims` and `{side}_headers_names` must have the same length"));
    }
    claims
        .into_iter()
        .zip(names)
        .map(|(c, n)| {
            if c.trim().is_empty() {
                return ConfigError::err(format!("`{side}_headers_claims`: empty claim name"));
            }
            Ok((c.trim().to_string(), header_name(&format!("{side}_headers_names"), &n)?))
        })
        .collect()
}

fn endpoint_opt(key: &str, v: Option<String>) -> Result<Option<Endpoint>, ConfigError> {
    v.map(|u| Endpoint::parse(u.trim()).map_err(|e| ConfigError(format!("`{key}`: {e}")))).transpose()
}

#[cfg(test)]
mod tests;
