//! The Envoy bootstrap: a listener with the Wasm filter, the clusters the plugin
//! configuration names, and the upstream.
//!
//! The filter sends discovery and JWKS, and every call it does not authenticate with TLS,
//! to `idp_cluster`; every call authenticated with `tls_client_auth` or
//! `self_signed_tls_client_auth` to `tls_client_auth_cluster`, with `:authority` set to
//! the endpoint's host (`envoy_oidc::core::client_auth::ClientSettings::route`). A cluster connects
//! to one host, so `idp_cluster` is the issuer's host and `tls_client_auth_cluster` the
//! host of the TLS-authenticated endpoints: the configured `mtls_*_endpoint`, else the
//! discovered `mtls_endpoint_aliases` (`--discovery`), else the plain endpoint, assumed on
//! the issuer's host when no discovery document is given.

use envoy_oidc::core::client_auth::ClientAuth;
use envoy_oidc::core::config::{Plan, Policy};
use envoy_oidc::core::discovery::{Metadata, Which};
use envoy_oidc::core::docs::DocsSettings;
use envoy_oidc::core::idp::Endpoint;
use envoy_oidc::core::method::AuthMethod;

/// The system's CA bundle (Debian, Ubuntu, Alpine, the Envoy images) when `--idp-ca` is
/// not given.
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Name of the client certificate's SDS secret.
pub const SDS_SECRET: &str = "oidc_client_certificate";

/// `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub host: String,
    pub port: u16,
}

impl Addr {
    /// `host:port` or `[v6]:port`.
    pub fn parse(s: &str) -> Result<Addr, String> {
        let bad = || format!("`{s}` is not host:port");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad());
        }
        let port = port.parse::<u16>().map_err(|_| bad())?;
        Ok(Addr { host: host.to_string(), port })
    }

    fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

/// Rendering options (the command line).
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the plugin configuration came from (for the header comment).
    pub source: String,
    pub listen: Addr,
    pub upstream: Addr,
    /// Admin port on 127.0.0.1; None: no admin interface.
    pub admin: Option<u16>,
    pub wasm: String,
    /// (certificate chain, private key) files.
    pub client_cert: Option<(String, String)>,
    /// Trusted CA for the IdP's server certificate (default: the system bundle).
    pub idp_ca: Option<String>,
    pub verify_depth: u32,
    /// Path of the SDS file that carries the client certificate (`--sds`).
    pub sds_path: Option<String>,
}

/// One IdP cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    pub target: Addr,
    pub tls: bool,
    pub client_cert: bool,
    /// Verify the IdP's server certificate (validation_context).
    pub verify: bool,
    /// What goes through it, for the comment.
    pub carries: Vec<String>,
}

/// Host and port of an endpoint URL.
fn target(ep: &Endpoint) -> Result<(Addr, bool), String> {
    let uri: http::Uri = ep.url.parse().map_err(|_| format!("`{}` is not a URL", ep.url))?;
    let tls = uri.scheme_str() != Some("http");
    let host = uri.host().ok_or_else(|| format!("`{}` has no host", ep.url))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((Addr { host: host.to_string(), port }, tls))
}

/// The IdP clusters for every policy of `plan` (merged by name); `meta` is the discovery
/// document of one of its issuers (`--discovery`), `mtls_verify` each policy's
/// `tls_client_auth_ssl_verify` by `PolicyId`; `notes` and `warnings` get what the operator
/// should know.
pub fn clusters(
    plan: &Plan,
    meta: Option<&Metadata>,
    mtls_verify: &[bool],
    has_client_cert: bool,
    notes: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Cluster>, String> {
    let mut out: Vec<(Cluster, String)> = Vec::new();
    let mut assumed = false;
    for (id, policy) in plan.policies() {
        let docs = plan.issuers.get(policy.issuer_id).unwrap_or(&plan.issuer);
        let meta = meta.filter(|m| m.issuer.trim_end_matches('/') == docs.issuer.trim_end_matches('/'));
        let verify = mtls_verify.get(id.0).copied().unwrap_or(true);
        let whose = match (plan.chooses(), policy.name.as_str()) {
            (false, _) => String::new(),
            (true, "") => "the default policy".to_string(),
            (true, name) => format!("policy `{name}`"),
        };
        let mut ctx = Ctx { whose: &whose, assumed: &mut assumed, warnings };
        for c in policy_clusters(docs, policy, meta, verify, &mut ctx)? {
            merge(&mut out, c, &whose, warnings)?;
        }
    }
    if assumed {
        notes.push(
            "the client-certificate cluster connects to the issuer's host; if the IdP publishes mtls_endpoint_aliases on another host, pass its discovery document (--discovery) to follow them"
                .into(),
        );
    }
    let out: Vec<Cluster> = out.into_iter().map(|(c, _)| c).collect();
    match out.iter().find(|c| c.client_cert) {
        None if has_client_cert => {
            warnings.push("--client-cert is not used: no call is authenticated with tls_client_auth or self_signed_tls_client_auth".into())
        }
        Some(c) if !has_client_cert => {
            return Err(format!(
                "`tls_client_auth_cluster` ({}) presents the client certificate: give --client-cert and --client-key",
                c.name
            ))
        }
        _ => {}
    }
    Ok(out)
}

/// Adds `c` to `out`, or merges it into the cluster of the same name (which must connect
/// to the same place).
fn merge(out: &mut Vec<(Cluster, String)>, c: Cluster, whose: &str, warnings: &mut Vec<String>) -> Result<(), String> {
    let Some((have, first)) = out.iter_mut().find(|(h, _)| h.name == c.name) else {
        out.push((c, whose.to_string()));
        return Ok(());
    };
    if (&have.target, have.tls) != (&c.target, c.tls) {
        return Err(format!(
            "cluster `{}` would connect to {}:{} for {first} and to {}:{} for {whose}: give them clusters of their own (idp_cluster, tls_client_auth_cluster)",
            c.name, have.target.host, have.target.port, c.target.host, c.target.port
        ));
    }
    if have.client_cert && c.client_cert && have.verify != c.verify {
        warnings.push(format!(
            "cluster `{}`: {first} and {whose} differ in tls_client_auth_ssl_verify; the cluster does not verify the IdP's certificate",
            c.name
        ));
    }
    have.client_cert |= c.client_cert;
    have.verify &= c.verify;
    for what in c.carries {
        if !have.carries.contains(&what) {
            have.carries.push(what);
        }
    }
    Ok(())
}

/// What the clusters of one policy report into.
struct Ctx<'a> {
    /// `policy `x``, or empty when the plan has one policy.
    whose: &'a str,
    /// A client-certificate cluster was assumed on the issuer's host.
    assumed: &'a mut bool,
    warnings: &'a mut Vec<String>,
}

impl Ctx<'_> {
    fn of(&self, what: String) -> String {
        if self.whose.is_empty() {
            what
        } else {
            format!("{what} for {}", self.whose)
        }
    }

    fn warn(&mut self, w: String) {
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }
}

/// The IdP clusters one policy names: its `idp_cluster` and, if it has one, its
/// `tls_client_auth_cluster`.
fn policy_clusters(
    docs: &DocsSettings,
    policy: &Policy,
    meta: Option<&Metadata>,
    mtls_verify: bool,
    ctx: &mut Ctx,
) -> Result<Vec<Cluster>, String> {
    let (issuer, issuer_tls) = target(&docs.discovery)?;
    let client = &policy.client;
    if !issuer_tls {
        ctx.warn(format!("the issuer `{}` is plain http: the IdP clusters have no TLS", docs.issuer));
    }
    let has = |m: AuthMethod| policy.has(m);
    let calls: [(Which, ClientAuth, Option<&Endpoint>, bool); 3] = [
        (
            Which::Token,
            client.token_auth,
            client.mtls.token.as_ref(),
            has(AuthMethod::Password) || has(AuthMethod::RefreshToken) || has(AuthMethod::AuthorizationCode) || has(AuthMethod::Session),
        ),
        (Which::Introspection, client.introspection_auth, client.mtls.introspection.as_ref(), has(AuthMethod::Introspection)),
        (Which::Revocation, client.revocation_auth, client.mtls.revocation.as_ref(), policy.logout.revoke),
    ];

    let mut idp_carries = vec!["discovery".to_string(), "JWKS".to_string()];
    let mut mtls: Vec<(Addr, bool, String)> = Vec::new();
    for (which, auth, configured, used) in calls {
        if !used {
            continue;
        }
        let call = which.name().trim_end_matches("_endpoint");
        if auth.is_tls() {
            let (ep, how) = match (configured, meta) {
                (Some(ep), _) => (Some(ep), "configured mtls_"),
                (None, Some(m)) => (client.route(m, which, auth).map(|(_, ep)| ep), "discovered "),
                (None, None) => (None, ""),
            };
            let (addr, tls) = match ep {
                Some(ep) => target(ep)?,
                None => {
                    *ctx.assumed |= meta.is_none();
                    (issuer.clone(), issuer_tls)
                }
            };
            let what = match ep {
                Some(ep) => format!("{call} ({}, {how}{})", auth.name(), ep.url),
                None => format!("{call} ({})", auth.name()),
            };
            mtls.push((addr, tls, ctx.of(what)));
        } else {
            idp_carries.push(ctx.of(format!("{call} ({})", auth.name())));
            if let Some(ep) = meta.and_then(|m| client.route(m, which, auth)).map(|(_, ep)| ep) {
                off_issuer(ep, &issuer, "idp_cluster", ctx.warnings)?;
            }
        }
    }
    if let Some(m) = meta {
        if let Some(jwks) = &m.jwks_uri {
            off_issuer(jwks, &issuer, "idp_cluster", ctx.warnings)?;
        }
        if has(AuthMethod::Userinfo) {
            if let Some(ui) = &m.userinfo_endpoint {
                off_issuer(ui, &issuer, "idp_cluster", ctx.warnings)?;
                idp_carries.push(ctx.of("userinfo".into()));
            }
        }
    } else if has(AuthMethod::Userinfo) {
        idp_carries.push(ctx.of("userinfo".into()));
    }

    let mut distinct: Vec<(Addr, bool)> = Vec::new();
    for (addr, tls, _) in &mtls {
        if !distinct.contains(&(addr.clone(), *tls)) {
            distinct.push((addr.clone(), *tls));
        }
    }
    if distinct.len() > 1 {
        let list: Vec<String> = mtls.iter().map(|(a, _, w)| format!("{w} on {}:{}", a.host, a.port)).collect();
        return Err(format!(
            "the TLS-authenticated calls go to {} different hosts, but the filter sends all of them through the one `tls_client_auth_cluster`: {}",
            distinct.len(),
            list.join("; ")
        ));
    }

    let mut out = vec![Cluster {
        name: docs.cluster.clone(),
        target: issuer.clone(),
        tls: issuer_tls,
        client_cert: false,
        verify: true,
        carries: idp_carries,
    }];
    if let Some(name) = &client.tls_client_auth_cluster {
        let (addr, tls) = distinct.into_iter().next().unwrap_or((issuer.clone(), issuer_tls));
        if !tls {
            return Err("tls_client_auth needs https endpoints".into());
        }
        let carries: Vec<String> = if mtls.is_empty() {
            vec![ctx.of("no call in the configured methods; kept because the configuration names it".into())]
        } else {
            mtls.into_iter().map(|(_, _, w)| w).collect()
        };
        if *name == docs.cluster {
            if addr != issuer {
                return Err(format!(
                    "`idp_cluster` and `tls_client_auth_cluster` are both `{name}`, but the TLS-authenticated calls go to {}:{}, not the issuer's {}:{}: name two clusters",
                    addr.host, addr.port, issuer.host, issuer.port
                ));
            }
            out[0].client_cert = true;
            out[0].verify = mtls_verify;
            out[0].carries.extend(carries);
        } else {
            out.push(Cluster { name: name.clone(), target: addr, tls, client_cert: true, verify: mtls_verify, carries });
        }
    }
    Ok(out)
}

fn off_issuer(ep: &Endpoint, issuer: &Addr, cluster: &str, warnings: &mut Vec<String>) -> Result<(), String> {
    let (addr, _) = target(ep)?;
    if &addr != issuer {
        warnings.push(format!(
            "{} is on {}:{}, but `{cluster}` connects to the issuer's {}:{}: that call would reach the issuer's host",
            ep.url, addr.host, addr.port, issuer.host, issuer.port
        ));
    }
    Ok(())
}

/// YAML double-quoted scalar (JSON string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

struct Out(String);

impl Out {
    fn line(&mut self, indent: usize, text: &str) {
        if text.is_empty() {
            self.0.push('\n');
            return;
        }
        for _ in 0..indent {
            self.0.push(' ');
        }
        self.0.push_str(text);
        self.0.push('\n');
    }

    /// Comment lines, wrapped at the given width.
    fn comment(&mut self, indent: usize, text: &str) {
        let width = 96usize.saturating_sub(indent + 2);
        let mut cur = String::new();
        for word in text.split_whitespace() {
            if !cur.is_empty() && cur.len() + 1 + word.len() > width {
                self.line(indent, &format!("# {cur}"));
                cur.clear();
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
        self.line(indent, format!("# {cur}").trim_end());
    }
}

fn socket_address(out: &mut Out, indent: usize, addr: &Addr) {
    out.line(indent, &format!("socket_address: {{address: {}, port_value: {}}}", q(&addr.host), addr.port));
}

fn endpoints(out: &mut Out, indent: usize, name: &str, addr: &Addr) {
    out.line(indent, "load_assignment:");
    out.line(indent + 2, &format!("cluster_name: {}", q(name)));
    out.line(indent + 2, "endpoints:");
    out.line(indent + 2, "- lb_endpoints:");
    out.line(indent + 4, "- endpoint:");
    out.line(indent + 8, "address:");
    socket_address(out, indent + 10, addr);
}

fn discovery_type(out: &mut Out, indent: usize, addr: &Addr, dns: &str) {
    if addr.is_ip() {
        out.line(indent, "type: STATIC");
    } else {
        out.line(indent, &format!("type: {dns}"));
        out.line(indent, "dns_lookup_family: V4_PREFERRED");
    }
}

/// Which policy a rendered route takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutePolicy {
    /// No metadata: the default policy (or `route_policies` by the route's name).
    Default,
    /// `metadata: {filter_metadata: {envoy-oidc: {policy: NAME}}}`.
    Named(String),
    /// The filter is off on this route (`FilterConfig {disabled: true}`).
    Off,
}

/// How a rendered route matches the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    /// An RE2 regex for the whole path.
    Regex(String),
}

/// What a rendered route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// To `cluster`, the path rewritten by `(RE2 pattern, substitution)` if given.
    Forward { cluster: String, rewrite: Option<(String, String)> },
    /// `404` with this JSON body, the filter off (Kong's answer when no route matches).
    NotFound(String),
}

/// A route of the rendered route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub name: Option<String>,
    /// The comment above it.
    pub comment: String,
    pub path: PathMatch,
    /// Header matchers: (name, RE2 regex for the whole value).
    pub headers: Vec<(String, String)>,
    pub action: Action,
    pub policy: RoutePolicy,
}

const FILTER_OFF: &str = "envoy.filters.http.wasm: {\"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true}";

fn routes(o: &mut Out, indent: usize, routes: &[Route]) {
    if routes.is_empty() {
        o.line(indent, "- match: {prefix: \"/\"}");
        o.line(indent + 2, "route: {cluster: upstream}");
        return;
    }
    for r in routes {
        o.comment(indent, &r.comment);
        let first = match &r.name {
            Some(n) => {
                o.line(indent, &format!("- name: {}", q(n)));
                "  match:"
            }
            None => "- match:",
        };
        o.line(indent, first);
        match &r.path {
            PathMatch::Prefix(p) => o.line(indent + 4, &format!("prefix: {}", q(p))),
            PathMatch::Regex(re) => o.line(indent + 4, &format!("safe_regex: {{regex: {}}}", q(re))),
        }
        if !r.headers.is_empty() {
            o.line(indent + 4, "headers:");
            for (name, re) in &r.headers {
                o.line(indent + 4, &format!("- name: {}", q(name)));
                o.line(indent + 6, &format!("string_match: {{safe_regex: {{regex: {}}}}}", q(re)));
            }
        }
        match &r.action {
            Action::Forward { cluster, rewrite: None } => o.line(indent + 2, &format!("route: {{cluster: {}}}", q(cluster))),
            Action::Forward { cluster, rewrite: Some((pattern, substitution)) } => {
                o.line(indent + 2, "route:");
                o.line(indent + 4, &format!("cluster: {}", q(cluster)));
                o.line(indent + 4, &format!("regex_rewrite: {{pattern: {{regex: {}}}, substitution: {}}}", q(pattern), q(substitution)));
            }
            Action::NotFound(body) => {
                o.line(indent + 2, &format!("direct_response: {{status: 404, body: {{inline_string: {}}}}}", q(body)));
                o.line(indent + 2, "response_headers_to_add:");
                o.line(indent + 2, "- header: {key: content-type, value: \"application/json; charset=utf-8\"}");
                o.line(indent + 4, "append_action: OVERWRITE_IF_EXISTS_OR_ADD");
            }
        }
        match &r.policy {
            RoutePolicy::Default => {}
            RoutePolicy::Named(p) => o.line(
                indent + 2,
                &format!("metadata: {{filter_metadata: {{{}: {{policy: {}}}}}}}", envoy_oidc::core::route::NAMESPACE, q(p)),
            ),
            RoutePolicy::Off => {
                o.line(indent + 2, "typed_per_filter_config:");
                o.line(indent + 4, FILTER_OFF);
            }
        }
    }
}

/// The complete bootstrap; `table` is the route table (empty: one route to `upstream` for
/// every request).
pub fn bootstrap(plan: &Plan, plugin_text: &str, clusters: &[Cluster], table: &[Route], opts: &Options, notes: &[String]) -> String {
    let mut o = Out(String::new());
    let ca = opts.idp_ca.as_deref().unwrap_or(SYSTEM_CA);

    o.line(0, &format!("# Envoy bootstrap for the envoy-oidc filter, rendered by oidc-envoy-config {}", env!("CARGO_PKG_VERSION")));
    o.line(0, &format!("# from the plugin configuration in {}.", opts.source));
    o.line(0, "#");
    o.line(
        0,
        &format!(
            "#   listener {}:{} -> oidc Wasm filter -> cluster \"upstream\" ({}:{})",
            opts.listen.host, opts.listen.port, opts.upstream.host, opts.upstream.port
        ),
    );
    if let Some(port) = opts.admin {
        o.line(0, &format!("#   admin    127.0.0.1:{port}"));
    }
    let mut issuers: Vec<&str> = Vec::new();
    for docs in &plan.issuers {
        if !issuers.contains(&docs.issuer.as_str()) {
            issuers.push(&docs.issuer);
        }
    }
    for (i, issuer) in issuers.iter().enumerate() {
        o.line(0, &format!("#   {}{issuer} (issuer)", if i == 0 { "IdP      " } else { "         " }));
    }
    for c in clusters {
        o.line(
            0,
            &format!(
                "#            cluster {:<18} {}:{}{}",
                q(&c.name),
                c.target.host,
                c.target.port,
                if c.client_cert { ", presents the client certificate" } else { "" }
            ),
        );
    }
    if plan.chooses() {
        let names: Vec<&str> = plan.named.iter().map(|p| p.name.as_str()).collect();
        o.line(0, &format!("#   policies the default (the top-level keys), {}", names.join(", ")));
    }
    if !table.is_empty() {
        let off = table.iter().filter(|r| r.policy == RoutePolicy::Off && matches!(r.action, Action::Forward { .. })).count();
        o.line(
            0,
            &format!(
                "#   routes   {} to the upstream ({off} without the filter), then 404 for any other request",
                table.iter().filter(|r| matches!(r.action, Action::Forward { .. })).count()
            ),
        );
    }
    if !notes.is_empty() {
        o.line(0, "#");
        o.line(0, "# Notes from rendering:");
        for n in notes {
            o.comment(0, &format!("- {n}"));
        }
    }
    o.line(0, "");

    o.comment(0, "The node's identity (file-based SDS requires one; change it to name this Envoy in logs and stats).");
    o.line(0, "node: {id: oidc-gateway, cluster: oidc-gateway}");
    o.line(0, "");

    if let Some(port) = opts.admin {
        o.line(0, "admin:");
        o.line(2, "address:");
        socket_address(&mut o, 4, &Addr { host: "127.0.0.1".into(), port });
        o.line(0, "");
    }

    o.line(0, "static_resources:");
    o.line(2, "listeners:");
    o.line(2, "- name: main");
    o.line(4, "address:");
    socket_address(&mut o, 6, &opts.listen);
    o.line(4, "filter_chains:");
    o.line(4, "- filters:");
    o.line(6, "- name: envoy.filters.network.http_connection_manager");
    o.line(8, "typed_config:");
    o.line(10, "\"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager");
    o.line(10, "stat_prefix: ingress_http");
    o.line(10, "codec_type: AUTO");
    if !table.is_empty() {
        o.comment(
            10,
            "The routes choose the policy, and some turn the filter off: match on the normalized path (dot segments removed, slashes merged, escaped slashes unescaped with a redirect), as Kong does, so that /open/../private is /private.",
        );
        o.line(10, "normalize_path: true");
        o.line(10, "merge_slashes: true");
        o.line(10, "path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT");
    }
    o.line(10, "route_config:");
    o.line(12, "name: local_route");
    o.line(12, "virtual_hosts:");
    o.line(12, "- name: upstream");
    o.line(14, "domains: [\"*\"]");
    o.line(14, "routes:");
    routes(&mut o, 14, table);
    o.line(10, "http_filters:");
    o.comment(10, "The OpenID Connect filter. Its configuration (below) was validated by the filter's own configuration code (envoy_oidc::core::config) when this file was rendered.");
    o.line(10, "- name: envoy.filters.http.wasm");
    o.line(12, "typed_config:");
    o.line(14, "\"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm");
    o.line(14, "config:");
    o.line(16, "name: oidc");
    o.line(16, "root_id: oidc");
    o.line(16, "vm_config:");
    o.line(18, "vm_id: oidc");
    o.line(18, "runtime: envoy.wasm.runtime.v8");
    o.line(18, &format!("code: {{local: {{filename: {}}}}}", q(&opts.wasm)));
    o.line(16, "configuration:");
    o.line(18, "\"@type\": type.googleapis.com/google.protobuf.StringValue");
    o.line(18, "value: |");
    for l in plugin_text.lines() {
        if l.trim().is_empty() {
            o.line(0, "");
        } else {
            o.line(20, l);
        }
    }
    o.line(10, "- name: envoy.filters.http.router");
    o.line(12, "typed_config:");
    o.line(14, "\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router");
    o.line(0, "");

    o.line(2, "clusters:");
    for c in clusters {
        idp_cluster(&mut o, c, ca, opts);
        o.line(0, "");
    }

    o.comment(2, "The protected application.");
    o.line(2, "- name: upstream");
    discovery_type(&mut o, 4, &opts.upstream, "STRICT_DNS");
    o.line(4, "connect_timeout: 5s");
    o.line(4, "lb_policy: ROUND_ROBIN");
    endpoints(&mut o, 4, "upstream", &opts.upstream);
    o.0
}

fn idp_cluster(o: &mut Out, c: &Cluster, ca: &str, opts: &Options) {
    let role = if c.client_cert {
        format!("presents the filter's client certificate (RFC 8705 mutual TLS) for: {}.", c.carries.join(", "))
    } else {
        format!("server-authenticated TLS only, for: {}.", c.carries.join(", "))
    };
    o.comment(2, &format!("\"{}\": the IdP at {}:{}, {role}", c.name, c.target.host, c.target.port));
    o.line(2, &format!("- name: {}", q(&c.name)));
    discovery_type(o, 4, &c.target, "LOGICAL_DNS");
    o.line(4, "connect_timeout: 5s");
    o.line(4, "lb_policy: ROUND_ROBIN");
    endpoints(o, 4, &c.name, &c.target);
    if !c.tls {
        o.comment(4, "Plain HTTP: the issuer is an http:// URL.");
        return;
    }
    o.line(4, "transport_socket:");
    o.line(6, "name: envoy.transport_sockets.tls");
    o.line(6, "typed_config:");
    o.line(8, "\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
    if !c.target.is_ip() {
        o.line(8, &format!("sni: {}", q(&c.target.host)));
    }
    o.line(8, "common_tls_context:");
    if c.client_cert {
        match (&opts.sds_path, &opts.client_cert) {
            (Some(path), _) => {
                o.comment(
                    10,
                    "The client certificate, through file-based SDS: Envoy reloads it when the SDS file is replaced, without a restart.",
                );
                o.line(10, "tls_certificate_sds_secret_configs:");
                o.line(10, &format!("- name: {SDS_SECRET}"));
                o.line(12, "sds_config:");
                o.line(14, &format!("path_config_source: {{path: {}}}", q(path)));
                o.line(14, "resource_api_version: V3");
            }
            (None, Some((crt, key))) => {
                o.comment(10, "The client certificate the IdP authenticates the filter with (tls_client_auth).");
                o.line(10, "tls_certificates:");
                o.line(10, &format!("- certificate_chain: {{filename: {}}}", q(crt)));
                o.line(12, &format!("private_key: {{filename: {}}}", q(key)));
            }
            (None, None) => {}
        }
    }
    if c.verify {
        o.comment(
            10,
            &format!(
                "The IdP's server certificate: signed by the trusted CA{}, at most {} intermediate certificates deep, and naming {}.",
                if opts.idp_ca.is_none() { " (the system bundle; --idp-ca for a private CA)" } else { "" },
                opts.verify_depth,
                c.target.host
            ),
        );
        o.line(10, "validation_context:");
        o.line(12, &format!("trusted_ca: {{filename: {}}}", q(ca)));
        o.line(12, &format!("max_verify_depth: {}", opts.verify_depth));
        o.line(12, "match_typed_subject_alt_names:");
        let san = if c.target.is_ip() { "IP_ADDRESS" } else { "DNS" };
        o.line(12, &format!("- san_type: {san}"));
        o.line(14, &format!("matcher: {{exact: {}}}", q(&c.target.host)));
    } else {
        o.comment(
            10,
            "tls_client_auth_ssl_verify: false -- the IdP's server certificate is NOT verified on this cluster (no validation_context).",
        );
    }
}

/// The file-based SDS resource for the client certificate.
pub fn sds_file(cert: &str, key: &str) -> String {
    let mut o = Out(String::new());
    o.line(
        0,
        &format!("# File-based SDS for the filter's client certificate, rendered by oidc-envoy-config {}.", env!("CARGO_PKG_VERSION")),
    );
    o.comment(0, "Envoy watches this file: to rotate the certificate, write the new certificate and key files, then move a new version of this file over this one (a rename, so that Envoy never reads a half-written file).");
    o.line(0, "resources:");
    o.line(0, "- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret");
    o.line(2, &format!("name: {SDS_SECRET}"));
    o.line(2, "tls_certificate:");
    o.line(4, &format!("certificate_chain: {{filename: {}}}", q(cert)));
    o.line(4, &format!("private_key: {{filename: {}}}", q(key)));
    o.0
}

/// Options for tests: the demo's certificate names, `app.internal:8080` behind `0.0.0.0:8000`.
#[cfg(test)]
pub(crate) fn test_options() -> Options {
    Options {
        source: "plugin.yaml".into(),
        listen: Addr::parse("0.0.0.0:8000").unwrap(),
        upstream: Addr::parse("app.internal:8080").unwrap(),
        admin: Some(9901),
        wasm: "dist/oidc.wasm".into(),
        client_cert: Some(("client.crt".into(), "client.key".into())),
        idp_ca: Some("ca.crt".into()),
        verify_depth: 4,
        sds_path: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml_ng::Value;

    fn plan(extra: &str) -> Plan {
        Plan::parse(format!("issuer: https://idp.example.com\nidp_cluster: idp\nclient_id: c\n{extra}").as_bytes()).unwrap()
    }

    const MTLS: &str = "client_auth: tls_client_auth\ntls_client_auth_cluster: idp-mtls\nauth_methods: [password, introspection]\n";

    fn meta(p: &Plan, aliases: &str) -> Metadata {
        let doc = format!(
            r#"{{"issuer":"https://idp.example.com","token_endpoint":"https://idp.example.com/token","introspection_endpoint":"https://idp.example.com/introspect","jwks_uri":"https://idp.example.com/jwks"{aliases}}}"#
        );
        Metadata::parse(&p.issuer.issuer, doc.as_bytes()).unwrap()
    }

    fn opts() -> Options {
        test_options()
    }

    #[test]
    fn issuer_host_for_both_without_discovery() {
        let p = plan(MTLS);
        let (mut n, mut w) = (Vec::new(), Vec::new());
        let cs = clusters(&p, None, &[true], true, &mut n, &mut w).unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(
            (cs[0].name.as_str(), cs[0].target.host.as_str(), cs[0].target.port, cs[0].client_cert),
            ("idp", "idp.example.com", 443, false)
        );
        assert_eq!((cs[1].name.as_str(), cs[1].target.host.as_str(), cs[1].client_cert), ("idp-mtls", "idp.example.com", true));
        assert!(n.iter().any(|x| x.contains("--discovery")), "{n:?}");
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn mtls_aliases_give_the_client_certificate_cluster_its_host() {
        let p = plan(MTLS);
        let m = meta(
            &p,
            r#","mtls_endpoint_aliases":{"token_endpoint":"https://mtls.idp.example.com:8443/token","introspection_endpoint":"https://mtls.idp.example.com:8443/introspect"}"#,
        );
        let (mut n, mut w) = (Vec::new(), Vec::new());
        let cs = clusters(&p, Some(&m), &[true], true, &mut n, &mut w).unwrap();
        assert!(w.is_empty() && n.is_empty(), "{w:?} {n:?}");
        assert_eq!(cs[0].target, Addr { host: "idp.example.com".into(), port: 443 });
        assert_eq!(cs[1].target, Addr { host: "mtls.idp.example.com".into(), port: 8443 });
        assert!(cs[1].carries.iter().any(|c| c.contains("discovered https://mtls.idp.example.com:8443/token")), "{:?}", cs[1].carries);
        // an alias for the token endpoint only: introspection goes to the plain endpoint, on
        // another host, through the same cluster: impossible with one cluster
        let m = meta(&p, r#","mtls_endpoint_aliases":{"token_endpoint":"https://mtls.idp.example.com/token"}"#);
        let e = clusters(&p, Some(&m), &[true], true, &mut n, &mut w).unwrap_err();
        assert!(e.contains("2 different hosts") && e.contains("tls_client_auth_cluster"), "{e}");
    }

    #[test]
    fn configured_mtls_endpoints_win() {
        let p =
            plan(&format!("{MTLS}mtls_token_endpoint: https://m.example.com/t\nmtls_introspection_endpoint: https://m.example.com/i\n"));
        let cs = clusters(&p, None, &[true], true, &mut Vec::new(), &mut Vec::new()).unwrap();
        assert_eq!(cs[1].target.host, "m.example.com");
    }

    #[test]
    fn certificate_is_required_and_same_cluster_name_is_one_cluster() {
        let p = plan(MTLS);
        assert!(clusters(&p, None, &[true], false, &mut Vec::new(), &mut Vec::new()).unwrap_err().contains("--client-cert"));
        let p = plan("client_auth: tls_client_auth\ntls_client_auth_cluster: idp\nauth_methods: [password]\n");
        let cs = clusters(&p, None, &[true], true, &mut Vec::new(), &mut Vec::new()).unwrap();
        assert_eq!(cs.len(), 1);
        assert!(cs[0].client_cert);
        let p = plan("client_secret: s\nauth_methods: [password]\n");
        let mut w = Vec::new();
        let cs = clusters(&p, None, &[true], true, &mut Vec::new(), &mut w).unwrap();
        assert_eq!(cs.len(), 1);
        assert!(w[0].contains("not used"), "{w:?}");
    }

    #[test]
    fn bootstrap_is_valid_yaml_with_the_expected_parts() {
        let text = format!("issuer: https://idp.example.com\nidp_cluster: idp\nclient_id: c\n{MTLS}");
        let p = Plan::parse(text.as_bytes()).unwrap();
        let cs = clusters(&p, None, &[true], true, &mut Vec::new(), &mut Vec::new()).unwrap();
        let y = bootstrap(&p, &text, &cs, &[], &opts(), &["a note".into()]);
        let v: Value = serde_yaml_ng::from_str(&y).unwrap();
        let hcm = &v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let wasm = &hcm["http_filters"][0]["typed_config"]["config"];
        assert_eq!(wasm["configuration"]["value"].as_str(), Some(text.as_str()));
        assert_eq!(wasm["vm_config"]["code"]["local"]["filename"].as_str(), Some("dist/oidc.wasm"));
        let clusters = v["static_resources"]["clusters"].as_sequence().unwrap();
        assert_eq!(clusters.len(), 3);
        let mtls = &clusters[1];
        assert_eq!(mtls["name"].as_str(), Some("idp-mtls"));
        assert_eq!(mtls["type"].as_str(), Some("LOGICAL_DNS"));
        let tls = &mtls["transport_socket"]["typed_config"];
        assert_eq!(tls["sni"].as_str(), Some("idp.example.com"));
        assert_eq!(tls["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"].as_str(), Some("client.crt"));
        let vc = &tls["common_tls_context"]["validation_context"];
        assert_eq!(vc["trusted_ca"]["filename"].as_str(), Some("ca.crt"));
        assert_eq!(vc["max_verify_depth"].as_u64(), Some(4));
        assert_eq!(vc["match_typed_subject_alt_names"][0]["matcher"]["exact"].as_str(), Some("idp.example.com"));
        // the plain cluster has no client certificate
        assert!(clusters[0]["transport_socket"]["typed_config"]["common_tls_context"].get("tls_certificates").is_none());
        assert_eq!(clusters[2]["type"].as_str(), Some("STRICT_DNS"));
        assert_eq!(v["admin"]["address"]["socket_address"]["port_value"].as_u64(), Some(9901));
        assert!(y.contains("# - a note"));
    }

    #[test]
    fn ssl_verify_false_means_no_validation_context_and_sds_references_the_file() {
        let text = format!("issuer: https://10.0.0.5:9443\nidp_cluster: idp\nclient_id: c\n{MTLS}");
        let p = Plan::parse(text.as_bytes()).unwrap();
        let cs = clusters(&p, None, &[false], true, &mut Vec::new(), &mut Vec::new()).unwrap();
        let mut o = opts();
        o.sds_path = Some("/etc/envoy/client-cert-sds.yaml".into());
        o.admin = None;
        let y = bootstrap(&p, &text, &cs, &[], &o, &[]);
        let v: Value = serde_yaml_ng::from_str(&y).unwrap();
        assert!(v.get("admin").is_none());
        let clusters = v["static_resources"]["clusters"].as_sequence().unwrap();
        let mtls = &clusters[1]["transport_socket"]["typed_config"];
        assert!(mtls["common_tls_context"].get("validation_context").is_none(), "{y}");
        // an IP: STATIC, no SNI, SAN of type IP_ADDRESS on the verified cluster
        assert_eq!(clusters[1]["type"].as_str(), Some("STATIC"));
        assert!(mtls.get("sni").is_none());
        let plain = &clusters[0]["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"];
        assert_eq!(plain["match_typed_subject_alt_names"][0]["san_type"].as_str(), Some("IP_ADDRESS"));
        let sds = &mtls["common_tls_context"]["tls_certificate_sds_secret_configs"][0];
        assert_eq!(sds["name"].as_str(), Some(SDS_SECRET));
        assert_eq!(sds["sds_config"]["path_config_source"]["path"].as_str(), Some("/etc/envoy/client-cert-sds.yaml"));
        let s: Value = serde_yaml_ng::from_str(&sds_file("c.crt", "c.key")).unwrap();
        assert_eq!(s["resources"][0]["name"].as_str(), Some(SDS_SECRET));
        assert_eq!(s["resources"][0]["tls_certificate"]["private_key"]["filename"].as_str(), Some("c.key"));
    }

    #[test]
    fn addresses() {
        assert_eq!(Addr::parse("[::1]:80").unwrap(), Addr { host: "::1".into(), port: 80 });
        assert!(Addr::parse("host").is_err());
        assert!(Addr::parse("host:99999").is_err());
    }
}
