//! `oidc-envoy-config`: one plugin configuration (this filter's, or Kong's `openid-connect`
//! plugin as the Admin API or decK shows it, or a decK file with several of them on its
//! services and routes) plus certificate files → a complete, commented Envoy bootstrap.

pub mod deck;
pub mod kong;
pub mod plugin;
pub mod render;

use envoy_oidc::core::config::Plan;
use envoy_oidc::core::discovery::Metadata;
use serde_yaml_ng::{Mapping, Value};

/// Everything the command line gives.
#[derive(Debug, Clone)]
pub struct Request {
    /// The plugin configuration's text.
    pub input: String,
    pub from_kong: bool,
    pub kong_plugin: Option<String>,
    /// A saved discovery document (`--discovery`).
    pub discovery: Option<Vec<u8>>,
    pub options: render::Options,
}

/// What the command produces.
#[derive(Debug)]
pub struct Rendered {
    pub bootstrap: String,
    /// The SDS file's content, when `options.sds_path` is set.
    pub sds: Option<String>,
    /// Lines for stderr (translation report, notes, warnings).
    pub report: Vec<String>,
}

/// The translation report of one plugin for stderr (`role`: what it became, when the input
/// had several).
fn kong_report(found: &kong::Found, t: &kong::Translation, role: &str, verbose: bool) -> Vec<String> {
    let mut report = vec![format!("translated Kong's {}{}{role}", found.label, if role.is_empty() { "" } else { " " })];
    for c in &t.context {
        report.push(format!("  note: {c}"));
    }
    if !t.adjusted.is_empty() {
        report.push("  translated with a difference:".into());
        report.extend(t.adjusted.iter().map(|a| format!("    {a}")));
    }
    if !t.unsupported.is_empty() {
        report.push("  Kong fields this filter does not support (ignored):".into());
        report.extend(t.unsupported.iter().map(|u| format!("    {u}")));
    }
    if verbose {
        report.push(format!("  dropped at Kong's default or null: {}", t.defaults.join(", ")));
    } else if !t.defaults.is_empty() {
        report.push(format!(
            "  ({} more fields were null or at Kong's default and have no effect here; --verbose lists them)",
            t.defaults.len()
        ));
    }
    report
}

/// The input, read and (if it is Kong's) translated.
struct Loaded<'a> {
    /// The filter's configuration.
    config: Mapping,
    /// The input's text, when `config` is it as written.
    verbatim: Option<&'a str>,
    /// Translated from Kong's.
    kong: bool,
    /// For the bootstrap's notes.
    notes: Vec<String>,
    /// The route table (empty: one route for every request).
    routes: Vec<render::Route>,
}

/// Reads `input`: a decK file with routes is translated with its routes (unless
/// `kong_plugin` picks one plugin), other Kong inputs one plugin at a time; the report goes
/// to `report` as it is made.
fn load<'a>(
    input: &'a str,
    from_kong: bool,
    kong_plugin: Option<&str>,
    verbose: bool,
    report: &mut Vec<String>,
) -> Result<Loaded<'a>, String> {
    let doc: Value = serde_yaml_ng::from_str(input).map_err(|e| format!("the plugin configuration is not YAML or JSON: {e}"))?;
    if kong_plugin.is_none() && deck::routed(&doc) {
        let t = deck::translate(&deck::parse(&doc)?)?;
        for (found, translation, role) in &t.plugins {
            report.extend(kong_report(found, translation, role, verbose));
        }
        report.extend(t.report.iter().cloned());
        return Ok(Loaded { config: t.config, verbatim: None, kong: true, notes: vec![t.summary], routes: t.routes });
    }
    Ok(match kong::classify(doc, from_kong)? {
        kong::Input::Ours(map) => Loaded { config: map, verbatim: Some(input), kong: false, notes: Vec::new(), routes: Vec::new() },
        kong::Input::Kong(found) => {
            let found = kong::pick(found, kong_plugin)?;
            let t = kong::translate(&found.plugin)?;
            report.extend(kong_report(&found, &t, "", verbose));
            let notes = vec![format!("translated from Kong's {} (see the report on stderr)", found.label)];
            Loaded { config: t.config, verbatim: None, kong: true, notes, routes: Vec::new() }
        }
    })
}

/// The note for a configuration with policies rendered with one route for every request.
fn one_route_note(plan: &Plan) -> Option<String> {
    if !plan.chooses() {
        return None;
    }
    let names: Vec<&str> = plan.named.iter().map(|p| p.name.as_str()).collect();
    let routes: Vec<&str> = plan.routes.iter().map(|(r, _)| r.as_str()).collect();
    Some(format!(
        "the configuration has the policies {}, but the rendered route table is one route for every request, without metadata or a name: every request takes the default policy until routes name a policy in their metadata (metadata: {{filter_metadata: {{{}: {{policy: NAME}}}}}}){}",
        names.join(", "),
        envoy_oidc::core::route::NAMESPACE,
        if routes.is_empty() { String::new() } else { format!(" or are named as in route_policies ({})", routes.join(", ")) }
    ))
}

/// Validates a plugin configuration as the filter will load it, without rendering: ours as
/// it is (no cluster names filled in), Kong's translated (with the default cluster names).
/// Returns the report and a one-line JSON summary (issuer, cluster names) for scripts.
pub fn check(input: &str, from_kong: bool, kong_plugin: Option<&str>, verbose: bool) -> Result<(Vec<String>, String), String> {
    let mut report = Vec::new();
    let loaded = load(input, from_kong, kong_plugin, verbose, &mut report)?;
    let plan = if loaded.kong {
        let prepared = plugin::prepare(loaded.config, None)?;
        report.extend(prepared.notes.iter().map(|n| format!("note: {n}")));
        prepared.plan
    } else {
        let mut config = loaded.config;
        if !plugin::filter_knows(plugin::SSL_VERIFY_KEY) {
            let mut removed = config.remove(plugin::SSL_VERIFY_KEY).is_some();
            if let Some(Value::Mapping(policies)) = config.get_mut("policies") {
                for own in policies.values_mut().filter_map(Value::as_mapping_mut) {
                    removed |= own.remove(plugin::SSL_VERIFY_KEY).is_some();
                }
            }
            if removed {
                report.push(format!("note: {} is for the Envoy cluster, not the filter", plugin::SSL_VERIFY_KEY));
            }
        }
        let text = serde_yaml_ng::to_string(&Value::Mapping(config)).map_err(|e| e.to_string())?;
        Plan::parse(text.as_bytes()).map_err(|e| e.to_string())?
    };
    let mut summary = serde_json::json!({
        "issuer": plan.issuer.issuer,
        "idp_cluster": plan.issuer.cluster,
        "tls_client_auth_cluster": plan.policy.client.tls_client_auth_cluster,
        "auth_methods": plan.policy.methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
    });
    if plan.chooses() {
        summary["policies"] = plan
            .named
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "issuer": p.issuer,
                    "idp_cluster": p.client.idp_cluster,
                    "tls_client_auth_cluster": p.client.tls_client_auth_cluster,
                    "auth_methods": p.methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
                })
            })
            .collect();
    }
    if !loaded.routes.is_empty() {
        summary["routes"] = loaded.routes.len().into();
    }
    Ok((report, summary.to_string()))
}

/// Renders; `Rendered::report` has the lines for stderr.
pub fn run(req: &Request, verbose: bool) -> Result<Rendered, String> {
    let mut report = Vec::new();
    let mut rendered = run_reporting(req, verbose, &mut report)?;
    rendered.report = report;
    Ok(rendered)
}

/// The discovery document (`--discovery`) of one of the plan's issuers.
fn discovery(plan: &Plan, bytes: &[u8]) -> Result<Metadata, String> {
    let mut first = None;
    for docs in &plan.issuers {
        match Metadata::parse(&docs.issuer, bytes) {
            Ok(m) => return Ok(m),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(format!("--discovery: {}", first.unwrap_or_default()))
}

/// Renders, filling `report` as it goes: on an error it still has what was found before
/// (the Kong translation report, for one).
pub fn run_reporting(req: &Request, verbose: bool, report: &mut Vec<String>) -> Result<Rendered, String> {
    let loaded = load(&req.input, req.from_kong, req.kong_plugin.as_deref(), verbose, report)?;
    let mut notes = loaded.notes;
    let prepared = plugin::prepare(loaded.config, loaded.verbatim)?;
    notes.extend(prepared.notes.iter().cloned());
    let mut plan_notes: Vec<String> = prepared.notes.clone();
    if loaded.routes.is_empty() {
        if let Some(n) = one_route_note(&prepared.plan) {
            notes.push(n.clone());
            plan_notes.push(n);
        }
    }

    let meta = match &req.discovery {
        Some(bytes) => Some(discovery(&prepared.plan, bytes)?),
        None => None,
    };
    let (mut cluster_notes, mut warnings) = (Vec::new(), Vec::new());
    let clusters = render::clusters(
        &prepared.plan,
        meta.as_ref(),
        &prepared.mtls_ssl_verify,
        req.options.client_cert.is_some(),
        &mut cluster_notes,
        &mut warnings,
    )?;
    report.extend(plan_notes.iter().chain(&cluster_notes).map(|n| format!("note: {n}")));
    report.extend(warnings.iter().map(|w| format!("warning: {w}")));
    notes.extend(cluster_notes);
    notes.extend(warnings.iter().map(|w| format!("warning: {w}")));

    let bootstrap = render::bootstrap(&prepared.plan, &prepared.text, &clusters, &loaded.routes, &req.options, &notes);
    let sds = match (&req.options.sds_path, &req.options.client_cert) {
        (Some(_), Some((crt, key))) if clusters.iter().any(|c| c.client_cert) => Some(render::sds_file(crt, key)),
        _ => None,
    };
    Ok(Rendered { bootstrap, sds, report: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use render::{Addr, Options};

    fn request(input: &str) -> Request {
        Request {
            input: input.to_string(),
            from_kong: false,
            kong_plugin: None,
            discovery: None,
            options: Options {
                source: "test".into(),
                listen: Addr::parse("127.0.0.1:8000").unwrap(),
                upstream: Addr::parse("127.0.0.1:9080").unwrap(),
                ..render::test_options()
            },
        }
    }

    fn parse(y: &str) -> Value {
        serde_yaml_ng::from_str(y).unwrap()
    }

    fn embedded(bootstrap: &Value) -> envoy_oidc::core::config::Plan {
        let v = &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
            ["typed_config"]["config"]["configuration"]["value"];
        envoy_oidc::core::config::Plan::parse(v.as_str().unwrap().as_bytes()).unwrap()
    }

    #[test]
    fn kong_admin_api_json_to_bootstrap() {
        let r = run(&request(kong::tests::ADMIN_API), false).unwrap();
        let b = parse(&r.bootstrap);
        let plan = embedded(&b);
        assert_eq!(plan.policy.client.client.id, "client-tls-auth");
        assert_eq!(plan.issuer.cluster, "idp");
        assert_eq!(plan.policy.client.tls_client_auth_cluster.as_deref(), Some("idp-mtls"));
        let clusters = b["static_resources"]["clusters"].as_sequence().unwrap();
        let names: Vec<&str> = clusters.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["idp", "idp-mtls", "upstream"]);
        assert_eq!(clusters[1]["transport_socket"]["typed_config"]["sni"].as_str(), Some("idp.example.com"));
        let report = r.report.join("\n");
        assert!(report.contains("Kong fields this filter does not support"), "{report}");
        assert!(report.contains("consumer_claim"), "{report}");
        assert!(report.contains("more fields were null or at Kong's default"), "{report}");
        assert!(run(&request(kong::tests::ADMIN_API), true).unwrap().report.join("\n").contains("dropped at Kong's default or null: "));
    }

    #[test]
    fn deck_with_ssl_verify_false_and_sds() {
        let deck = "_format_version: '3.0'\nplugins:\n- name: openid-connect\n  config:\n    issuer: https://idp.example.com:8443\n    client_id: [c]\n    client_auth: [tls_client_auth]\n    auth_methods: [password]\n    tls_client_auth_ssl_verify: false\n";
        let mut req = request(deck);
        req.options.sds_path = Some("/run/envoy-client-cert-sds.yaml".into());
        let r = run(&req, false).unwrap();
        let b = parse(&r.bootstrap);
        let mtls = &b["static_resources"]["clusters"][1]["transport_socket"]["typed_config"]["common_tls_context"];
        assert!(mtls.get("validation_context").is_none(), "{}", r.bootstrap);
        assert!(mtls.get("tls_certificates").is_none());
        assert_eq!(
            mtls["tls_certificate_sds_secret_configs"][0]["sds_config"]["path_config_source"]["path"].as_str(),
            Some("/run/envoy-client-cert-sds.yaml")
        );
        // the plain cluster still verifies
        let plain = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]["common_tls_context"];
        assert!(plain.get("validation_context").is_some());
        let sds = parse(r.sds.as_deref().unwrap());
        assert_eq!(sds["resources"][0]["tls_certificate"]["certificate_chain"]["filename"].as_str(), Some("client.crt"));
        // the filter does not (yet) take the key: it is not embedded
        let plan_text = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
            ["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(plan_text.contains("tls_client_auth_ssl_verify"), plugin::filter_knows(plugin::SSL_VERIFY_KEY));
    }

    #[test]
    fn discovery_document_moves_the_mtls_cluster() {
        let mut req = request("issuer: https://idp.example.com\nclient_id: c\nclient_auth: tls_client_auth\nauth_methods: [password]\n");
        req.discovery = Some(br#"{"issuer":"https://idp.example.com","token_endpoint":"https://idp.example.com/token","mtls_endpoint_aliases":{"token_endpoint":"https://mtls.example.com:9444/token"}}"#.to_vec());
        let r = run(&req, false).unwrap();
        let b = parse(&r.bootstrap);
        let sa = &b["static_resources"]["clusters"][1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"];
        assert_eq!(sa["address"].as_str(), Some("mtls.example.com"));
        assert_eq!(sa["port_value"].as_u64(), Some(9444));
        // a document for another issuer is refused
        req.discovery = Some(br#"{"issuer":"https://other.example.com"}"#.to_vec());
        assert!(run(&req, false).unwrap_err().contains("--discovery"));
    }

    #[test]
    fn check_validates_without_filling_in_clusters() {
        let (_, summary) = check("issuer: https://i\nidp_cluster: 'outbound|443||i'\nclient_id: c\n", false, None, false).unwrap();
        let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(v["idp_cluster"], "outbound|443||i");
        assert!(check("issuer: https://i\nclient_id: c\n", false, None, false).unwrap_err().contains("idp_cluster"));
        let (report, summary) = check(
            r#"{"name":"openid-connect","config":{"issuer":"https://i","client_id":["c"],"consumer_claim":["sub"]}}"#,
            false,
            None,
            false,
        )
        .unwrap();
        assert!(report.join("\n").contains("consumer_claim"), "{report:?}");
        assert!(summary.contains(r#""idp_cluster":"idp""#), "{summary}");
    }

    fn routes_of(bootstrap: &Value) -> &Vec<Value> {
        bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
            ["routes"]
            .as_sequence()
            .unwrap()
    }

    fn cluster_names(bootstrap: &Value) -> Vec<&str> {
        bootstrap["static_resources"]["clusters"].as_sequence().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect()
    }

    #[test]
    fn deck_with_plugins_on_services_and_routes_renders_policies_and_routes() {
        let r = run(&request(deck::tests::DECK), false).unwrap();
        let b = parse(&r.bootstrap);
        let plan = embedded(&b);
        let names: Vec<&str> = plan.named.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["orders-api", "orders-admin"]);
        // layered: the service's plugin changes the methods and the scope rule only
        let api = plan.get(plan.find("orders-api").unwrap()).unwrap();
        assert_eq!(api.methods.iter().map(|m| m.name()).collect::<Vec<_>>(), ["bearer", "introspection"]);
        assert_eq!(api.client.client.id, "gateway");
        assert_eq!(plan.policy.rules.len(), 1);
        // the route's plugin: another IdP, its own clusters
        let admin = plan.get(plan.find("orders-admin").unwrap()).unwrap();
        assert_eq!(plan.issuers[admin.issuer_id].issuer, "https://partner.example.net");
        assert_eq!(plan.issuers[admin.issuer_id].cluster, "idp-orders-admin");
        assert_eq!(cluster_names(&b), ["idp", "idp-orders-admin", "idp-orders-admin-mtls", "upstream"]);
        let clusters = b["static_resources"]["clusters"].as_sequence().unwrap();
        let sa = |i: usize| {
            clusters[i]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"].as_str()
        };
        assert_eq!((sa(0), sa(1), sa(2)), (Some("idp.example.com"), Some("partner.example.net"), Some("partner.example.net")));
        // tls_client_auth_ssl_verify: false of the route's plugin, on its cluster only
        assert!(clusters[2]["transport_socket"]["typed_config"]["common_tls_context"].get("validation_context").is_none());
        assert!(clusters[1]["transport_socket"]["typed_config"]["common_tls_context"].get("validation_context").is_some());

        // the routes: metadata names the policy; the default policy needs none
        let routes = routes_of(&b);
        let policy = |r: &Value| r["metadata"]["filter_metadata"]["envoy-oidc"]["policy"].as_str().map(str::to_string);
        let table: Vec<(&str, Option<String>)> = routes.iter().map(|r| (r["name"].as_str().unwrap(), policy(r))).collect();
        assert_eq!(
            table,
            [
                ("orders-admin", Some("orders-admin".into())),
                ("health", None),
                ("static", None),
                ("orders", Some("orders-api".into())),
                ("static", None),
                ("no-route-matched", None),
            ]
        );
        assert_eq!(routes[0]["match"]["prefix"].as_str(), Some("/orders/admin"));
        assert_eq!(routes[0]["match"]["headers"][0]["name"].as_str(), Some(":method"));
        assert_eq!(routes[0]["route"]["cluster"].as_str(), Some("upstream"));
        assert_eq!(routes[0]["route"]["regex_rewrite"]["substitution"].as_str(), Some("/"));
        assert!(routes[..5].iter().all(|r| r.get("typed_per_filter_config").is_none()));
        let last = &routes[5];
        assert_eq!(last["match"]["prefix"].as_str(), Some("/"));
        assert_eq!(last["direct_response"]["status"].as_u64(), Some(404));
        assert_eq!(last["direct_response"]["body"]["inline_string"].as_str(), Some(deck::NO_ROUTE));
        assert_eq!(last["typed_per_filter_config"]["envoy.filters.http.wasm"]["disabled"].as_bool(), Some(true));
        let hcm = &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(hcm["normalize_path"].as_bool(), Some(true));

        let report = r.report.join("\n");
        assert!(!report.contains("every request"), "{report}");
        assert!(report.contains("service Orders API / route orders-admin) as policy `orders-admin`"), "{report}");
        assert!(report.contains("(decK) as the default policy"), "{report}");
        assert!(report.contains("route orders of service Orders API, /orders: policy `orders-api` (its service's plugin)"), "{report}");
        assert!(report.contains("policies.orders-admin.idp_cluster: not set"), "{report}");
        assert!(
            r.bootstrap.contains("#   policies the default (the top-level keys), orders-api, orders-admin"),
            "{}",
            &r.bootstrap[..1500]
        );
    }

    #[test]
    fn a_route_without_any_plugin_runs_without_the_filter() {
        let deck = "services:\n- name: api\n  plugins: [{name: openid-connect, config: {issuer: 'https://idp.example.com', client_id: [c], auth_methods: [bearer]}}]\n  routes: [{name: api, paths: [/api]}]\n- name: open\n  routes: [{name: open, paths: [/open]}]\n";
        let r = run(&request(deck), false).unwrap();
        let b = parse(&r.bootstrap);
        let routes = routes_of(&b);
        let by_name = |n: &str| routes.iter().find(|r| r["name"].as_str() == Some(n)).unwrap();
        assert_eq!(by_name("open")["typed_per_filter_config"]["envoy.filters.http.wasm"]["disabled"].as_bool(), Some(true));
        let api = by_name("api");
        assert!(api.get("typed_per_filter_config").is_none() && api.get("metadata").is_none(), "the default policy: {api:?}");
        // one plugin: no policies
        assert!(!embedded(&b).chooses());
        assert_eq!(cluster_names(&b), ["idp", "upstream"]);
        // --kong-plugin: that plugin alone, for every request (as before)
        let mut req = request(deck);
        req.kong_plugin = Some("1".into());
        let r = run(&req, false).unwrap();
        assert_eq!(routes_of(&parse(&r.bootstrap)).len(), 1);
        assert!(r.report[0].contains("(decK, service api)"), "{:?}", r.report);
        // --check: the policies and the number of routes
        let (_, summary) = check(deck::tests::DECK, false, None, false).unwrap();
        let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(v["policies"][1]["name"], "orders-admin");
        assert_eq!(v["policies"][1]["idp_cluster"], "idp-orders-admin");
        assert_eq!(v["routes"], 6);
    }

    #[test]
    fn plugin_yaml_with_policies_renders_every_issuers_clusters_and_one_route() {
        let yaml = "issuer: https://idp-a.example.com\nclient_id: gw\nclient_auth: tls_client_auth\nauth_methods: [password]\npolicies:\n  api: {auth_methods: [bearer]}\n  partner: {issuer: 'https://idp-b.example.com', client_id: gw-b}\n  partner2: {issuer: 'https://idp-b.example.com', client_id: gw-c, tls_client_auth_ssl_verify: false}\n  secret: {issuer: 'https://idp-c.example.com', client_auth: client_secret_basic, client_secret: s}\nroute_policies: {orders: api}\n";
        let r = run(&request(yaml), false).unwrap();
        let b = parse(&r.bootstrap);
        assert_eq!(
            cluster_names(&b),
            ["idp", "idp-mtls", "idp-partner", "idp-partner-mtls", "idp-partner2-mtls", "idp-secret", "upstream"]
        );
        let plan = embedded(&b);
        // no TLS method and another IdP: the inherited client-certificate cluster is not its own
        assert_eq!(plan.get(plan.find("secret").unwrap()).unwrap().client.tls_client_auth_cluster, None);
        let p2 = plan.get(plan.find("partner2").unwrap()).unwrap();
        // the same issuer: the same discovery cluster; another ssl_verify: another mTLS cluster
        assert_eq!(p2.client.idp_cluster, "idp-partner");
        assert_eq!(p2.client.tls_client_auth_cluster.as_deref(), Some("idp-partner2-mtls"));
        assert_eq!(plan.for_route("orders"), plan.find("api"));
        let routes = routes_of(&b);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0]["route"]["cluster"].as_str(), Some("upstream"));
        let report = r.report.join("\n");
        assert!(report.contains("every request takes the default policy") && report.contains("route_policies (orders)"), "{report}");
        // names that are already there are kept, the text verbatim
        let explicit = "issuer: https://a\nidp_cluster: a\nclient_id: c\npolicies:\n  b: {issuer: 'https://b', idp_cluster: b}\n";
        let r = run(&request(explicit), false).unwrap();
        assert_eq!(embedded(&parse(&r.bootstrap)).named[0].client.idp_cluster, "b");
        assert!(r.bootstrap.contains("                    policies:\n                      b: {issuer: 'https://b', idp_cluster: b}\n"));
        // a cluster name given to two hosts is refused
        let clash = "issuer: https://a\nidp_cluster: a\nclient_id: c\npolicies:\n  b: {issuer: 'https://b', idp_cluster: a}\n";
        let e = run(&request(clash), false).unwrap_err();
        assert!(e.contains("cluster `a`") && e.contains("policy `b`"), "{e}");
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(run(&request("- a\n- b\n"), false).unwrap_err().contains("mapping"));
        assert!(run(&request("issuer: https://i\nclient_id: c\nauth_methods: [pasword]\n"), false).unwrap_err().contains("auth_methods"));
        let mut req = request("issuer: https://i\nclient_id: c\nclient_auth: tls_client_auth\n");
        req.options.client_cert = None;
        assert!(run(&req, false).unwrap_err().contains("--client-cert"));
    }
}
