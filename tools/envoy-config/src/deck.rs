//! A decK file with services, routes and `openid-connect` plugins on them → one filter
//! configuration with a policy per plugin, and the Envoy route table that chooses them.
//!
//! Kong runs, for a request, the plugin of its route, else its service's, else the global
//! one. Here:
//! - the global plugin (without one: the first plugin found that a route takes) is the
//!   default policy, the top-level keys;
//! - every other plugin is a named policy, named after its route or service, written as the
//!   keys that differ from the default policy's (`null` for a key the default sets and the
//!   plugin leaves at its default: the filter layers a policy over the top level);
//! - every Kong route becomes one Envoy route per path, in Kong's order of priority, whose
//!   metadata names its policy; a route no plugin applies to turns the filter off;
//! - a request that matches no route gets Kong's 404, without the filter.

use serde_yaml_ng::{Mapping, Value};

use crate::kong::{self, Found, Translation, PLUGIN_NAME};
use crate::render::{Action, PathMatch, Route, RoutePolicy};

/// Kong's answer when no route matches (with status 404).
pub const NO_ROUTE: &str = r#"{"message":"no Route matched with those values"}"#;

/// The cluster every route goes to (`--upstream`).
pub const UPSTREAM: &str = "upstream";

/// Where a plugin is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Service(usize),
    Route(usize),
}

/// An `openid-connect` plugin of the file.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub found: Found,
    pub scope: Scope,
}

/// A Kong service.
#[derive(Debug, Clone, Default)]
pub struct Service {
    pub name: Option<String>,
    pub id: Option<String>,
    /// The path of its `url` (or its `path`), when not `/`: Kong puts it before the path
    /// that goes upstream.
    pub path: Option<String>,
    /// Where it points (`url`, or `protocol://host:port`), for the report.
    pub url: Option<String>,
    /// Its plugin (an index in [`Deck::plugins`]).
    pub plugin: Option<usize>,
}

/// A Kong route.
#[derive(Debug, Clone, Default)]
pub struct KongRoute {
    pub name: Option<String>,
    pub id: Option<String>,
    pub service: Option<usize>,
    pub paths: Vec<String>,
    pub methods: Vec<String>,
    pub hosts: Vec<String>,
    pub headers: Vec<(String, Vec<String>)>,
    pub strip_path: bool,
    pub regex_priority: i64,
    /// Its plugin (an index in [`Deck::plugins`]).
    pub plugin: Option<usize>,
    /// Why it is not rendered (it has no condition that an Envoy route can match on).
    pub unrendered: Option<String>,
}

/// What the file holds that the rendering uses.
#[derive(Debug, Clone, Default)]
pub struct Deck {
    pub services: Vec<Service>,
    pub routes: Vec<KongRoute>,
    /// The enabled `openid-connect` plugins on the global, service and route levels, in the
    /// order found (the top-level `plugins:` first).
    pub plugins: Vec<Plugin>,
    /// What was left out (disabled plugins, plugins scoped to consumers, routes that cannot
    /// be rendered …), for the report.
    pub skipped: Vec<String>,
    /// Route fields not rendered, for the report.
    pub ignored: Vec<String>,
}

impl Deck {
    /// The global plugin.
    pub fn global(&self) -> Option<usize> {
        self.plugins.iter().position(|p| p.scope == Scope::Global)
    }

    /// The plugin Kong runs for route `j`: its own, else its service's, else the global one.
    pub fn plugin_of(&self, j: usize) -> Option<usize> {
        let r = &self.routes[j];
        if r.unrendered.is_some() {
            return None;
        }
        r.plugin.or_else(|| r.service.and_then(|i| self.services[i].plugin)).or_else(|| self.global())
    }
}

fn seq<'a>(map: &'a Mapping, key: &str) -> impl Iterator<Item = &'a Mapping> {
    map.get(key).and_then(Value::as_sequence).into_iter().flatten().filter_map(Value::as_mapping)
}

fn text<'a>(map: &'a Mapping, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn strings(map: &Mapping, key: &str) -> Vec<String> {
    match map.get(key) {
        Some(Value::Sequence(s)) => s.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Whether `doc` is a decK file with routes (then it is rendered with them).
pub fn routed(doc: &Value) -> bool {
    let Some(map) = doc.as_mapping() else { return false };
    seq(map, "routes").next().is_some() || seq(map, "services").any(|s| seq(s, "routes").next().is_some())
}

/// `name`, else `id`, else `kind #n`: for messages.
fn shown(name: &Option<String>, id: &Option<String>, kind: &str, i: usize) -> String {
    match (name, id) {
        (Some(n), _) => format!("{kind} {n}"),
        (None, Some(id)) => format!("{kind} {id}"),
        (None, None) => format!("{kind} #{}", i + 1),
    }
}

/// A reference to a service, route or consumer: its name or id, or `{name: …}` / `{id: …}`.
fn reference(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Mapping(m) => text(m, "name").or_else(|| text(m, "id")).map(str::to_string),
        _ => None,
    }
}

fn service(s: &Mapping) -> Service {
    let url = text(s, "url").map(str::to_string).or_else(|| {
        let host = text(s, "host")?;
        let protocol = text(s, "protocol").unwrap_or("http");
        let port = s.get("port").and_then(Value::as_u64).map(|p| format!(":{p}")).unwrap_or_default();
        Some(format!("{protocol}://{host}{port}{}", text(s, "path").unwrap_or("")))
    });
    let path = url
        .as_deref()
        .and_then(|u| u.parse::<http::Uri>().ok())
        .map(|u| u.path().to_string())
        .or_else(|| text(s, "path").map(str::to_string))
        .filter(|p| p != "/" && !p.is_empty());
    Service { name: text(s, "name").map(str::to_string), id: text(s, "id").map(str::to_string), path, url, plugin: None }
}

/// Kong's route fields that have no counterpart in the rendered route, when set.
fn ignored_route_fields(r: &Mapping, what: &str, out: &mut Vec<String>) {
    for (field, default) in [
        ("protocols", r#"["http","https"]"#),
        ("snis", "null"),
        ("sources", "null"),
        ("destinations", "null"),
        ("path_handling", r#""v0""#),
        ("request_buffering", "true"),
        ("response_buffering", "true"),
    ] {
        let Some(v) = r.get(field).filter(|v| !v.is_null()) else { continue };
        let shown = serde_json::to_string(v).unwrap_or_default();
        let at_default = serde_json::from_str::<serde_json::Value>(default).ok() == serde_json::to_value(v).ok()
            || (field == "protocols" && ["http", "https"].iter().all(|p| shown.contains(&format!("\"{p}\""))));
        if !at_default && !(v.as_sequence().is_some_and(Vec::is_empty)) {
            out.push(format!("{what}: {field} = {shown} is not rendered"));
        }
    }
}

fn route(r: &Mapping, service: Option<usize>) -> KongRoute {
    let headers = match r.get("headers") {
        Some(Value::Mapping(h)) => h
            .iter()
            .filter_map(|(k, v)| {
                let values = match v {
                    Value::Sequence(s) => s.iter().filter_map(Value::as_str).map(str::to_string).collect(),
                    Value::String(s) => vec![s.clone()],
                    _ => Vec::new(),
                };
                Some((k.as_str()?.to_ascii_lowercase(), values))
            })
            .collect(),
        _ => Vec::new(),
    };
    KongRoute {
        name: text(r, "name").map(str::to_string),
        id: text(r, "id").map(str::to_string),
        service,
        paths: strings(r, "paths"),
        methods: strings(r, "methods").into_iter().map(|m| m.to_ascii_uppercase()).collect(),
        hosts: strings(r, "hosts"),
        headers,
        strip_path: r.get("strip_path").and_then(Value::as_bool).unwrap_or(true),
        regex_priority: r.get("regex_priority").and_then(Value::as_i64).unwrap_or(0),
        plugin: None,
        unrendered: None,
    }
    .checked(r)
}

impl KongRoute {
    /// Marks a route that only the expressions router, SNIs, sources or destinations pick as
    /// not rendered (it would otherwise match every request).
    fn checked(mut self, r: &Mapping) -> KongRoute {
        if self.paths.is_empty() && self.hosts.is_empty() && self.methods.is_empty() && self.headers.is_empty() {
            self.unrendered = Some(if text(r, "expression").is_some() {
                "it uses Kong's expressions router (`expression`): write its Envoy route by hand".into()
            } else {
                "it has no paths, hosts, methods or headers".into()
            });
        }
        self
    }
}

/// A plugin as found, before its scope is checked.
struct Pending {
    plugin: Mapping,
    scope: Scope,
    origin: String,
}

/// Reads the services, routes and `openid-connect` plugins of a decK file.
pub fn parse(doc: &Value) -> Result<Deck, String> {
    let map = doc.as_mapping().ok_or("the decK file must be a mapping")?;
    let mut d = Deck::default();
    let mut nested: Vec<Pending> = Vec::new();
    let mut routes: Vec<(Mapping, String)> = Vec::new();
    for s in seq(map, "services") {
        let i = d.services.len();
        d.services.push(service(s));
        let at = shown(&d.services[i].name, &d.services[i].id, "service", i);
        nested.extend(oidc(s).map(|p| Pending { plugin: p.clone(), scope: Scope::Service(i), origin: format!("decK, {at}") }));
        for r in seq(s, "routes") {
            routes.push((r.clone(), format!("{at} / ")));
            let j = d.routes.len();
            d.routes.push(route(r, Some(i)));
            let rt = shown(&d.routes[j].name, &d.routes[j].id, "route", j);
            nested.extend(oidc(r).map(|p| Pending { plugin: p.clone(), scope: Scope::Route(j), origin: format!("decK, {at} / {rt}") }));
        }
    }
    for r in seq(map, "routes") {
        let service = match reference(r.get("service")) {
            None => None,
            Some(s) => Some(find_service(&d, &s).ok_or_else(|| format!("a route names service `{s}`, which the file does not have"))?),
        };
        routes.push((r.clone(), String::new()));
        let j = d.routes.len();
        d.routes.push(route(r, service));
        let rt = shown(&d.routes[j].name, &d.routes[j].id, "route", j);
        nested.extend(oidc(r).map(|p| Pending { plugin: p.clone(), scope: Scope::Route(j), origin: format!("decK, {rt}") }));
    }
    for (j, (r, at)) in routes.iter().enumerate() {
        let what = format!("{at}{}", shown(&d.routes[j].name, &d.routes[j].id, "route", j));
        ignored_route_fields(r, &what, &mut d.ignored);
    }

    let mut pending = Vec::new();
    for p in oidc(map) {
        let (scope, origin) = if let Some(r) = reference(p.get("route")) {
            let j = find_route(&d, &r).ok_or_else(|| format!("an {PLUGIN_NAME} plugin names route `{r}`, which the file does not have"))?;
            (Scope::Route(j), format!("decK, route {r}"))
        } else if let Some(s) = reference(p.get("service")) {
            let i =
                find_service(&d, &s).ok_or_else(|| format!("an {PLUGIN_NAME} plugin names service `{s}`, which the file does not have"))?;
            (Scope::Service(i), format!("decK, service {s}"))
        } else {
            (Scope::Global, "decK".to_string())
        };
        pending.push(Pending { plugin: p.clone(), scope, origin });
    }
    pending.extend(nested);
    for kind in ["consumers", "consumer_groups"] {
        for (i, c) in seq(map, kind).enumerate() {
            let name = text(c, "username").or_else(|| text(c, "name")).or_else(|| text(c, "id")).map(str::to_string);
            for p in oidc(c) {
                let at = format!("{} {}", kind.trim_end_matches('s'), name.clone().unwrap_or_else(|| format!("#{}", i + 1)));
                d.skipped.push(format!("{}: scoped to a Kong consumer, which Envoy does not have", kong::label(p, &format!("decK, {at}"))));
            }
        }
    }
    for p in pending {
        add(&mut d, p)?;
    }
    if d.plugins.is_empty() {
        return Err(format!(
            "a Kong declarative configuration without an enabled `{PLUGIN_NAME}` plugin on its routes, services or globally"
        ));
    }
    Ok(d)
}

fn oidc(map: &Mapping) -> impl Iterator<Item = &Mapping> {
    seq(map, "plugins").filter(|p| kong::is_oidc(p))
}

fn find_service(d: &Deck, r: &str) -> Option<usize> {
    d.services.iter().position(|s| s.name.as_deref() == Some(r) || s.id.as_deref() == Some(r))
}

fn find_route(d: &Deck, r: &str) -> Option<usize> {
    d.routes.iter().position(|x| x.name.as_deref() == Some(r) || x.id.as_deref() == Some(r))
}

fn add(d: &mut Deck, p: Pending) -> Result<(), String> {
    let label = kong::label(&p.plugin, &p.origin);
    if p.plugin.get("enabled").and_then(Value::as_bool) == Some(false) {
        d.skipped.push(format!("{label}: disabled in Kong (`enabled: false`)"));
        return Ok(());
    }
    if ["consumer", "consumer_group"].iter().any(|k| reference(p.plugin.get(*k)).is_some()) {
        d.skipped.push(format!("{label}: scoped to a Kong consumer, which Envoy does not have"));
        return Ok(());
    }
    let index = d.plugins.len();
    let slot = match p.scope {
        Scope::Global => {
            if let Some(g) = d.global() {
                return Err(format!("two global {PLUGIN_NAME} plugins: {} and {label}", d.plugins[g].found.label));
            }
            None
        }
        Scope::Service(i) => Some(&mut d.services[i].plugin),
        Scope::Route(j) => Some(&mut d.routes[j].plugin),
    };
    if let Some(slot) = slot {
        if let Some(other) = slot.replace(index) {
            return Err(format!(
                "two {PLUGIN_NAME} plugins in the same place: {} and {label} (Kong runs one plugin of a name per route or service)",
                d.plugins[other].found.label
            ));
        }
    }
    d.plugins.push(Plugin { found: Found { label, plugin: p.plugin }, scope: p.scope });
    Ok(())
}

/// The decK file translated.
#[derive(Debug)]
pub struct Translated {
    /// The filter's configuration: the default policy's keys and `policies`.
    pub config: Mapping,
    /// The route table, the 404 route last.
    pub routes: Vec<Route>,
    /// Each plugin: as found, translated, and what it became (`the default policy`,
    /// `policy `x``, or why it is not used).
    pub plugins: Vec<(Found, Translation, String)>,
    /// Lines for the report (routes, what was left out).
    pub report: Vec<String>,
    /// For the notes in the bootstrap.
    pub summary: String,
}

/// A policy name the filter accepts: lowercase letters, digits, `-` and `_`, starting with a
/// letter, at most 64 bytes; not one of `taken`.
pub fn policy_name(raw: &str, taken: &[String]) -> String {
    let mut name: String =
        raw.chars().map(|c| c.to_ascii_lowercase()).map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    name = name.trim_start_matches(|c: char| !c.is_ascii_lowercase()).to_string();
    if name.is_empty() {
        name = "policy".into();
    }
    name.truncate(56);
    let mut candidate = name.clone();
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{name}-{n}");
        n += 1;
    }
    candidate
}

/// The named policy's own keys: those of `plugin` that differ from `top`, and `null` for
/// the keys `top` has and `plugin` leaves at the filter's default.
pub fn layered(top: &Mapping, plugin: &Mapping) -> Mapping {
    let mut own = Mapping::new();
    for (k, v) in plugin {
        if top.get(k) != Some(v) {
            own.insert(k.clone(), v.clone());
        }
    }
    for k in top.keys() {
        if !plugin.contains_key(k) {
            own.insert(k.clone(), Value::Null);
        }
    }
    own
}

/// Translates every plugin and renders the route table.
pub fn translate(d: &Deck) -> Result<Translated, String> {
    let mut translations = Vec::new();
    for p in &d.plugins {
        translations.push(kong::translate_config(&p.found.plugin).map_err(|e| format!("{}: {e}", p.found.label))?);
    }
    let taken_by_routes: Vec<bool> = (0..d.plugins.len()).map(|i| (0..d.routes.len()).any(|j| d.plugin_of(j) == Some(i))).collect();
    // the global plugin, else the first that a route takes
    let default = d.global().or_else(|| taken_by_routes.iter().position(|t| *t)).unwrap_or(0);
    let used: Vec<bool> = taken_by_routes.iter().enumerate().map(|(i, t)| *t || i == default).collect();
    let mut names: Vec<Option<String>> = vec![None; d.plugins.len()];
    let mut taken = Vec::new();
    for (i, p) in d.plugins.iter().enumerate() {
        if i == default || !used[i] {
            continue;
        }
        let raw = match p.scope {
            Scope::Route(j) => d.routes[j].name.clone().or_else(|| d.routes[j].id.clone()).unwrap_or_else(|| format!("route-{}", j + 1)),
            Scope::Service(s) => {
                d.services[s].name.clone().or_else(|| d.services[s].id.clone()).unwrap_or_else(|| format!("service-{}", s + 1))
            }
            Scope::Global => "global".into(),
        };
        let name = policy_name(&raw, &taken);
        taken.push(name.clone());
        names[i] = Some(name);
    }

    let top = translations[default].config.clone();
    let mut config = top.clone();
    let mut policies = Mapping::new();
    for (i, t) in translations.iter().enumerate() {
        if let Some(name) = &names[i] {
            policies.insert(name.as_str().into(), Value::Mapping(layered(&top, &t.config)));
        }
    }
    if !policies.is_empty() {
        config.insert("policies".into(), Value::Mapping(policies));
    }

    let mut report = Vec::new();
    let routes = route_table(d, default, &names, &mut report);
    for s in &d.skipped {
        report.push(format!("not translated: {s}"));
    }
    if !d.ignored.is_empty() {
        report.push("Kong route fields not rendered:".into());
        report.extend(d.ignored.iter().map(|i| format!("  {i}")));
    }
    let urls: Vec<String> = d
        .services
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.url.as_ref().map(|u| format!("{} → {u}", shown(&s.name, &s.id, "service", i))))
        .collect();
    if !urls.is_empty() {
        report.push(format!(
            "every route goes to the cluster `{UPSTREAM}` (--upstream), with the client's Host; the Kong services point at: {}",
            urls.join(", ")
        ));
    }
    let mut certs: Vec<&str> = Vec::new();
    for (i, p) in d.plugins.iter().enumerate() {
        let id = p.found.plugin.get("config").and_then(|c| c.get("tls_client_auth_cert_id")).and_then(Value::as_str);
        if let Some(id) = id.filter(|id| used[i] && !certs.contains(id)) {
            certs.push(id);
        }
    }
    if certs.len() > 1 {
        report.push(format!(
            "warning: the plugins name {} Kong certificates (tls_client_auth_cert_id {}), but every client-certificate cluster presents the one --client-cert",
            certs.len(),
            certs.join(", ")
        ));
    }
    let policy_names: Vec<&str> = names.iter().flatten().map(String::as_str).collect();
    let summary = format!(
        "translated from a decK file: {} {PLUGIN_NAME} plugin(s) → the default policy{}; {} Kong route(s) → {} Envoy route(s); a request that matches no route gets Kong's 404",
        d.plugins.len(),
        if policy_names.is_empty() { String::new() } else { format!(" and the policies {}", policy_names.join(", ")) },
        d.routes.len(),
        routes.len().saturating_sub(1),
    );
    let plugins = d
        .plugins
        .iter()
        .zip(translations)
        .enumerate()
        .map(|(i, (p, t))| {
            let role = match (&names[i], i == default) {
                (_, true) => "as the default policy (the top-level keys)".to_string(),
                (Some(n), _) => format!("as policy `{n}`"),
                (None, _) => "not used: no rendered route takes it".to_string(),
            };
            (p.found.clone(), t, role)
        })
        .collect();
    Ok(Translated { config, routes, plugins, report, summary })
}

/// RE2 syntax for `s` taken literally.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `(?:a|b)`.
fn any_of(items: impl Iterator<Item = String>) -> String {
    format!("(?:{})", items.collect::<Vec<_>>().join("|"))
}

/// The `:authority` regex for Kong's `hosts` (a leading or trailing `*` label, an optional
/// port unless the host names one, case-insensitive).
fn hosts_regex(hosts: &[String]) -> String {
    let one = |h: &String| {
        let (h, wild_start, wild_end) = match (h.strip_prefix("*."), h.strip_suffix(".*")) {
            (Some(rest), _) => (rest.to_string(), true, false),
            (None, Some(rest)) => (rest.to_string(), false, true),
            _ => (h.clone(), false, false),
        };
        let mut re = regex_escape(&h);
        if wild_start {
            re = format!(".+\\.{re}");
        }
        if wild_end {
            re = format!("{re}\\.[^:]+");
        }
        if !h.contains(':') || wild_end {
            re.push_str("(?::[0-9]+)?");
        }
        re
    };
    format!("(?i){}", any_of(hosts.iter().map(one)))
}

/// One Envoy route of a Kong route, with what orders it.
struct Entry {
    route: Route,
    /// Its line in the report.
    line: String,
    /// Kong's priority (its traditional router), more first: the fields the route has
    /// (paths, hosts, methods, headers), no wildcard host, the number of headers, a regex
    /// path (then its regex_priority), the path's length.
    key: (usize, bool, usize, bool, i64, usize),
}

fn route_table(d: &Deck, default: usize, names: &[Option<String>], report: &mut Vec<String>) -> Vec<Route> {
    let mut entries: Vec<Entry> = Vec::new();
    for (j, r) in d.routes.iter().enumerate() {
        let what = shown(&r.name, &r.id, "route", j);
        if let Some(why) = &r.unrendered {
            report.push(format!("not rendered: {what}: {why}; its requests get the 404"));
            continue;
        }
        let (policy, why) = match d.plugin_of(j) {
            None => (
                RoutePolicy::Off,
                "no openid-connect plugin applies (none on the route, its service or globally): the filter is off".to_string(),
            ),
            Some(i) => {
                let whose = match d.plugins[i].scope {
                    Scope::Route(_) => "its own plugin",
                    Scope::Service(_) => "its service's plugin",
                    Scope::Global => "the global plugin",
                };
                match &names[i] {
                    Some(n) if i != default => (RoutePolicy::Named(n.clone()), format!("policy `{n}` ({whose})")),
                    _ => (RoutePolicy::Default, format!("the default policy ({whose})")),
                }
            }
        };
        let of_service =
            r.service.map(|i| format!(" of {}", shown(&d.services[i].name, &d.services[i].id, "service", i))).unwrap_or_default();
        let mut headers = Vec::new();
        if !r.methods.is_empty() {
            headers.push((":method".to_string(), any_of(r.methods.iter().map(|m| regex_escape(m)))));
        }
        if !r.hosts.is_empty() {
            headers.push((":authority".to_string(), hosts_regex(&r.hosts)));
        }
        for (name, values) in &r.headers {
            let values = values.iter().map(|v| match v.strip_prefix("~*") {
                Some(re) => format!("(?:{re})"),
                None => regex_escape(v),
            });
            headers.push((name.clone(), format!("(?i){}", any_of(values))));
        }
        let categories =
            [!r.paths.is_empty(), !r.hosts.is_empty(), !r.methods.is_empty(), !r.headers.is_empty()].iter().filter(|b| **b).count();
        let wildcard = r.hosts.iter().any(|h| h.contains('*'));
        let service_path = r.service.and_then(|i| d.services[i].path.as_deref());
        let paths: Vec<Option<&String>> = if r.paths.is_empty() { vec![None] } else { r.paths.iter().map(Some).collect() };
        for path in paths {
            let (matcher, base, regex) = match path.map(String::as_str) {
                None => (PathMatch::Prefix("/".into()), None, false),
                Some(p) => match p.strip_prefix('~') {
                    Some(re) => (PathMatch::Regex(format!("(?:{re}).*")), Some(format!("(?:{re})")), true),
                    None => {
                        (PathMatch::Prefix(p.to_string()), Some(regex_escape(p.trim_end_matches('/'))).filter(|b| !b.is_empty()), false)
                    }
                },
            };
            let rewrite = rewrite(if r.strip_path { base } else { None }, service_path);
            let shown_path = path.cloned().unwrap_or_else(|| "any path".into());
            let comment = format!("Kong {what}{of_service}, {shown_path}: {why}");
            let len = path.map_or(0, String::len);
            entries.push(Entry {
                route: Route {
                    name: r.name.clone().or_else(|| r.id.clone()),
                    comment,
                    path: matcher,
                    headers: headers.clone(),
                    action: Action::Forward { cluster: UPSTREAM.into(), rewrite },
                    policy: policy.clone(),
                },
                line: format!("  {what}{of_service}, {shown_path}: {why}"),
                key: (categories, !wildcard, r.headers.len(), regex, if regex { r.regex_priority } else { 0 }, len),
            });
        }
    }
    // stable: routes of equal priority stay in the file's order
    entries.sort_by_key(|e| std::cmp::Reverse(e.key));
    report.push("routes, in Kong's order of priority (the first that matches a request takes it):".into());
    report.extend(entries.iter().map(|e| e.line.clone()));
    report.push("  any other request: 404 (Kong's `no Route matched`), without the filter".into());
    let mut routes: Vec<Route> = entries.into_iter().map(|e| e.route).collect();
    routes.push(Route {
        name: Some("no-route-matched".into()),
        comment: "No Kong route matches: Kong's 404, without the filter (Kong runs no plugin then).".into(),
        path: PathMatch::Prefix("/".into()),
        headers: Vec::new(),
        action: Action::NotFound(NO_ROUTE.into()),
        policy: RoutePolicy::Off,
    });
    routes
}

/// The path rewrite of Kong's `strip_path` (`strip`: the matched path as a regex, when it is
/// stripped) and the service's path (put first).
fn rewrite(strip: Option<String>, service_path: Option<&str>) -> Option<(String, String)> {
    let service = service_path.map(|p| p.trim_end_matches('/')).filter(|p| !p.is_empty());
    match (strip, service) {
        (None, None) => None,
        (Some(base), None) => Some((format!("^{base}/?"), "/".into())),
        (Some(base), Some(s)) => Some((format!("^{base}"), s.to_string())),
        (None, Some(s)) => Some(("^/".into(), format!("{s}/"))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_yaml_ng::from_str(s).unwrap()
    }

    /// A global plugin, a service plugin, a route plugin (another IdP, over mTLS), a route of
    /// the service without its own plugin, and a service without any.
    pub(crate) const DECK: &str = r#"
_format_version: "3.0"
plugins:
- name: openid-connect
  config:
    issuer: https://idp.example.com/.well-known/openid-configuration
    client_id: [gateway]
    client_secret: [s3cret]
    auth_methods: [bearer]
    scopes_required: [base]
services:
- name: Orders API
  url: http://orders.internal:8080
  plugins:
  - name: openid-connect
    config:
      issuer: https://idp.example.com
      client_id: [gateway]
      client_secret: [s3cret]
      auth_methods: [bearer, introspection]
      scopes_required: ["orders:read"]
  routes:
  - name: orders
    paths: [/orders]
  - name: orders-admin
    paths: [/orders/admin]
    methods: [POST, get]
    plugins:
    - name: openid-connect
      id: 0b6e8a52-0000-4000-8000-000000000001
      config:
        issuer: https://partner.example.net
        client_id: [partner-gw]
        client_auth: [tls_client_auth]
        auth_methods: [password]
        tls_client_auth_ssl_verify: false
- name: static
  url: http://static.internal/site
  routes:
  - name: static
    paths: [/static, /assets/]
    strip_path: false
routes:
- name: health
  service: {name: static}
  paths: ["~/health[0-9]*$"]
"#;

    #[test]
    fn plugins_routes_and_their_precedence() {
        let d = parse(&yaml(DECK)).unwrap();
        assert_eq!(d.plugins.len(), 3);
        assert_eq!(d.plugins.iter().map(|p| p.scope).collect::<Vec<_>>(), [Scope::Global, Scope::Service(0), Scope::Route(1)]);
        assert_eq!(d.global(), Some(0));
        assert_eq!(d.routes.len(), 4);
        assert_eq!(d.routes[3].service, Some(1));
        // route plugin > service plugin > global plugin
        assert_eq!((0..4).map(|j| d.plugin_of(j)).collect::<Vec<_>>(), [Some(1), Some(2), Some(0), Some(0)]);
        assert_eq!(d.routes[1].methods, ["POST", "GET"]);
        assert!(!d.routes[2].strip_path && d.routes[0].strip_path);
        assert_eq!(d.services[1].path.as_deref(), Some("/site"));
        assert!(d.plugins[2].found.label.contains("service Orders API / route orders-admin"), "{}", d.plugins[2].found.label);
    }

    #[test]
    fn each_plugin_is_a_policy_layered_over_the_global_one() {
        let t = translate(&parse(&yaml(DECK)).unwrap()).unwrap();
        let c = &t.config;
        // the global plugin is the top level
        assert_eq!(c.get("issuer"), Some(&yaml("https://idp.example.com")));
        assert_eq!(c.get("scopes_required"), Some(&yaml("[base]")));
        let policies = c.get("policies").and_then(Value::as_mapping).unwrap();
        let names: Vec<&str> = policies.keys().filter_map(Value::as_str).collect();
        assert_eq!(names, ["orders-api", "orders-admin"]);
        // only what differs from the top level
        assert_eq!(policies.get("orders-api"), Some(&yaml("{auth_methods: [bearer, introspection], scopes_required: ['orders:read']}")));
        let admin = policies.get("orders-admin").and_then(Value::as_mapping).unwrap();
        assert_eq!(admin.get("issuer"), Some(&yaml("https://partner.example.net")));
        assert_eq!(admin.get("client_auth"), Some(&yaml("tls_client_auth")));
        // keys the top level sets and this plugin does not: back to the filter's default
        assert_eq!(admin.get("client_secret"), Some(&Value::Null));
        assert_eq!(admin.get("scopes_required"), Some(&Value::Null));
        assert_eq!(admin.get("tls_client_auth_ssl_verify"), Some(&Value::Bool(false)));
        assert!(t.plugins[2].2.contains("policy `orders-admin`"), "{:?}", t.plugins[2].2);
        assert!(t.plugins.iter().all(|(_, tr, _)| tr.context.is_empty()), "no `runs on every request` context");
        // what the filter makes of it (cluster names filled in by plugin::prepare)
        let p = crate::plugin::prepare(t.config.clone(), None).unwrap();
        let plan = &p.plan;
        let admin = &plan.named[plan.find("orders-admin").unwrap().0 - 1];
        assert!(admin.rules.is_empty(), "scopes_required: null is no rule");
        assert_eq!(admin.client.client.secret, None);
        assert_eq!(admin.client.idp_cluster, "idp-orders-admin");
        assert_eq!(admin.client.tls_client_auth_cluster.as_deref(), Some("idp-orders-admin-mtls"));
        assert_eq!(plan.issuers.len(), 2);
        let api = &plan.named[plan.find("orders-api").unwrap().0 - 1];
        assert_eq!(api.client.idp_cluster, "idp");
        assert_eq!(api.client.client.id, "gateway");
        assert_eq!(p.mtls_ssl_verify, [true, true, false]);
    }

    #[test]
    fn the_route_table_follows_kongs_priority_and_names_the_policies() {
        let t = translate(&parse(&yaml(DECK)).unwrap()).unwrap();
        let shown: Vec<(Option<&str>, &PathMatch, &RoutePolicy)> =
            t.routes.iter().map(|r| (r.name.as_deref(), &r.path, &r.policy)).collect();
        let prefix = |p: &str| PathMatch::Prefix(p.into());
        assert_eq!(
            shown,
            [
                // two categories (paths, methods) first
                (Some("orders-admin"), &prefix("/orders/admin"), &RoutePolicy::Named("orders-admin".into())),
                // then regex paths, then longer prefixes
                (Some("health"), &PathMatch::Regex("(?:/health[0-9]*$).*".into()), &RoutePolicy::Default),
                (Some("assets"), &prefix("/assets/"), &RoutePolicy::Default),
                (Some("orders"), &prefix("/orders"), &RoutePolicy::Named("orders-api".into())),
                (Some("static"), &prefix("/static"), &RoutePolicy::Default),
                (Some("no-route-matched"), &prefix("/"), &RoutePolicy::Off),
            ]
            .map(|(n, p, r)| (n.map(|n| if n == "assets" { "static" } else { n }), p, r))
        );
        assert_eq!(t.routes[0].headers, [(":method".to_string(), "(?:POST|GET)".to_string())]);
        let forward = |i: usize| match &t.routes[i].action {
            Action::Forward { cluster, rewrite } => (cluster.as_str(), rewrite.clone()),
            a => panic!("{a:?}"),
        };
        // strip_path (Kong's default): the matched prefix goes
        assert_eq!(forward(0), ("upstream", Some(("^/orders/admin/?".into(), "/".into()))));
        assert_eq!(forward(1), ("upstream", Some(("^(?:/health[0-9]*$)".into(), "/site".into()))));
        // strip_path: false, the service's path first
        assert_eq!(forward(2), ("upstream", Some(("^/".into(), "/site/".into()))));
        assert_eq!(t.routes[5].action, Action::NotFound(NO_ROUTE.into()));
        let report = t.report.join("\n");
        assert!(report.contains("route orders of service Orders API, /orders: policy `orders-api` (its service's plugin)"), "{report}");
        assert!(report.contains("route static of service static, /static: the default policy (the global plugin)"), "{report}");
        assert!(t.summary.contains("3 openid-connect plugin(s)") && t.summary.contains("orders-api, orders-admin"), "{}", t.summary);
    }

    #[test]
    fn without_a_global_plugin_routes_without_one_turn_the_filter_off() {
        let doc = r#"
services:
- name: unrouted
  plugins: [{name: openid-connect, config: {issuer: "https://idp", client_id: [d]}}]
- name: api
  plugins: [{name: openid-connect, config: {issuer: "https://idp", client_id: [c], auth_methods: [bearer]}}]
  routes: [{name: api, paths: [/api]}]
- name: app
  routes: [{name: app, paths: [/app]}]
- name: docs
  plugins: [{name: openid-connect, config: {issuer: "https://idp", client_id: [c], auth_methods: [password]}}]
  routes: [{name: docs, hosts: [docs.example.com, "*.docs.example.org"]}]
"#;
        let t = translate(&parse(&yaml(doc)).unwrap()).unwrap();
        // the first plugin found (that a route takes) is the default policy
        assert_eq!(t.config.get("auth_methods"), Some(&yaml("[bearer]")));
        let policies = t.config.get("policies").and_then(Value::as_mapping).unwrap();
        assert_eq!(policies.len(), 1, "the plugin of a service without routes is not a policy: {policies:?}");
        assert_eq!(policies.get("docs"), Some(&yaml("{auth_methods: [password]}")));
        assert!(t.plugins[0].2.contains("not used"), "{:?}", t.plugins[0].2);
        assert!(t.plugins[1].2.contains("default policy"), "{:?}", t.plugins[1].2);
        let by_name = |n: &str| t.routes.iter().find(|r| r.name.as_deref() == Some(n)).unwrap();
        assert_eq!(by_name("api").policy, RoutePolicy::Default);
        assert_eq!(by_name("app").policy, RoutePolicy::Off);
        let docs = by_name("docs");
        assert_eq!(docs.policy, RoutePolicy::Named("docs".into()));
        assert_eq!(docs.path, PathMatch::Prefix("/".into()));
        assert_eq!(docs.headers[0].0, ":authority");
        assert_eq!(docs.headers[0].1, r"(?i)(?:docs\.example\.com(?::[0-9]+)?|.+\.docs\.example\.org(?::[0-9]+)?)");
        // hosts: one field, like paths; a wildcard host and no path put it after /api and /app
        let names: Vec<&str> = t.routes.iter().filter_map(|r| r.name.as_deref()).collect();
        assert_eq!(names, ["api", "app", "docs", "no-route-matched"]);
        assert!(t.report.iter().any(|l| l.contains("route app of service app, /app: no openid-connect plugin applies")), "{:?}", t.report);
    }

    #[test]
    fn disabled_consumer_and_misplaced_plugins() {
        let doc = r#"
services:
- name: s
  plugins: [{name: openid-connect, enabled: false, config: {issuer: "https://idp"}}]
  routes:
  - name: r
    paths: [/r]
    protocols: [https]
    snis: [a.example.com]
plugins:
- {name: openid-connect, route: r, config: {issuer: "https://idp", client_id: [c]}}
- {name: openid-connect, consumer: bob, config: {issuer: "https://idp"}}
consumers:
- username: carol
  plugins: [{name: openid-connect, config: {issuer: "https://idp"}}]
"#;
        let d = parse(&yaml(doc)).unwrap();
        assert_eq!(d.plugins.len(), 1);
        assert_eq!(d.plugins[0].scope, Scope::Route(0));
        let skipped = d.skipped.join("\n");
        assert!(skipped.contains("disabled in Kong") && skipped.contains("consumer carol"), "{skipped}");
        assert_eq!(skipped.matches("scoped to a Kong consumer").count(), 2, "{skipped}");
        let ignored = d.ignored.join("\n");
        let expr = "services: [{name: s, routes: [{name: e, expression: 'http.path == 1'}, {name: p, paths: [/p]}]}]\nplugins: [{name: openid-connect, config: {issuer: 'https://a'}}]\n";
        let t = translate(&parse(&yaml(expr)).unwrap()).unwrap();
        assert_eq!(t.routes.iter().filter_map(|r| r.name.as_deref()).collect::<Vec<_>>(), ["p", "no-route-matched"]);
        assert!(t.report.iter().any(|l| l.contains("route e: it uses Kong's expressions router")), "{:?}", t.report);
        assert!(ignored.contains(r#"protocols = ["https"]"#) && ignored.contains("snis"), "{ignored}");

        let two = r#"
services:
- name: s
  plugins: [{name: openid-connect, config: {issuer: "https://a"}}]
  routes: [{name: r, paths: [/r]}]
plugins: [{name: openid-connect, service: s, config: {issuer: "https://b"}}]
"#;
        assert!(parse(&yaml(two)).unwrap_err().contains("two openid-connect plugins in the same place"));
        let unknown = "routes: [{name: r, service: nope, paths: [/r]}]\nplugins: [{name: openid-connect, config: {issuer: 'https://a'}}]\n";
        assert!(parse(&yaml(unknown)).unwrap_err().contains("service `nope`"));
        let none = "services: [{name: s, routes: [{name: r, paths: [/r]}], plugins: [{name: key-auth}]}]\n";
        assert!(parse(&yaml(none)).unwrap_err().contains("without an enabled `openid-connect` plugin"));
        // a plugin the filter refuses names itself
        let bad = "services: [{name: s, routes: [{name: r, paths: [/r], plugins: [{name: openid-connect, config: {client_id: [c]}}]}]}]\n";
        let e = translate(&parse(&yaml(bad)).unwrap()).unwrap_err();
        assert!(e.contains("service s / route r") && e.contains("issuer"), "{e}");
    }

    #[test]
    fn policy_names_follow_the_filters_rule() {
        assert_eq!(policy_name("Orders API", &[]), "orders-api");
        assert_eq!(policy_name("9-lives.v2", &[]), "lives-v2");
        assert_eq!(policy_name("#!", &[]), "policy");
        assert_eq!(policy_name("Api", &["api".into(), "api-2".into()]), "api-3");
        let long = policy_name(&"x".repeat(100), &[]);
        assert!(long.len() <= 64);
        for n in ["orders-api", "lives-v2", "policy", "api-3"] {
            let text = format!("issuer: https://i\nidp_cluster: idp\nclient_id: c\npolicies: {{{n}: {{}}}}\n");
            envoy_oidc::core::config::Plan::parse(text.as_bytes()).unwrap();
        }
    }

    #[test]
    fn rewrites_and_escapes() {
        assert_eq!(rewrite(None, None), None);
        assert_eq!(rewrite(Some("/a".into()), None), Some(("^/a/?".into(), "/".into())));
        assert_eq!(rewrite(Some("/a".into()), Some("/v1/")), Some(("^/a".into(), "/v1".into())));
        assert_eq!(rewrite(None, Some("/v1")), Some(("^/".into(), "/v1/".into())));
        assert_eq!(regex_escape("/a.b+(c)"), r"/a\.b\+\(c\)");
        // a route on `/` strips nothing
        let t = translate(
            &parse(&yaml("services: [{name: s, routes: [{name: r, paths: [/]}]}]\nplugins: [{name: openid-connect, config: {issuer: 'https://a'}}]\n"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(t.routes[0].action, Action::Forward { cluster: UPSTREAM.into(), rewrite: None });
    }
}
