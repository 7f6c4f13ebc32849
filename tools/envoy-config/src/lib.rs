//! `oidc-envoy-config`: one plugin configuration (this filter's, or Kong's `openid-connect`
//! plugin as the Admin API or decK shows it) plus certificate files → a complete, commented
//! Envoy bootstrap.

pub mod kong;
pub mod plugin;
pub mod render;

use envoy_oidc::core::discovery::Metadata;
use serde_yaml_ng::Value;

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

/// The translation report for stderr.
fn kong_report(found: &kong::Found, t: &kong::Translation, verbose: bool) -> Vec<String> {
    let mut report = vec![format!("translated Kong's {}", found.label)];
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

/// Validates a plugin configuration as the filter will load it, without rendering: ours as
/// it is (no cluster names filled in), Kong's translated (with the default cluster names).
/// Returns the report and a one-line JSON summary (issuer, cluster names) for scripts.
pub fn check(input: &str, from_kong: bool, kong_plugin: Option<&str>, verbose: bool) -> Result<(Vec<String>, String), String> {
    let doc: Value = serde_yaml_ng::from_str(input).map_err(|e| format!("the plugin configuration is not YAML or JSON: {e}"))?;
    let (plan, report) = match kong::classify(doc, from_kong)? {
        kong::Input::Ours(mut config) => {
            let mut report = Vec::new();
            if config.contains_key(plugin::SSL_VERIFY_KEY) && !plugin::filter_knows(plugin::SSL_VERIFY_KEY) {
                config.remove(plugin::SSL_VERIFY_KEY);
                report.push(format!("note: {} is for the Envoy cluster, not the filter", plugin::SSL_VERIFY_KEY));
            }
            let text = serde_yaml_ng::to_string(&Value::Mapping(config)).map_err(|e| e.to_string())?;
            (envoy_oidc::core::config::Plan::parse(text.as_bytes()).map_err(|e| e.to_string())?, report)
        }
        kong::Input::Kong(found) => {
            let found = kong::pick(found, kong_plugin)?;
            let t = kong::translate(&found.plugin)?;
            let mut report = kong_report(&found, &t, verbose);
            let prepared = plugin::prepare(t.config, None)?;
            report.extend(prepared.notes.iter().map(|n| format!("note: {n}")));
            (prepared.plan, report)
        }
    };
    let summary = serde_json::json!({
        "issuer": plan.issuer.issuer,
        "idp_cluster": plan.issuer.cluster,
        "tls_client_auth_cluster": plan.policy.client.tls_client_auth_cluster,
        "auth_methods": plan.policy.methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
    });
    Ok((report, summary.to_string()))
}

/// Renders; `Rendered::report` has the lines for stderr.
pub fn run(req: &Request, verbose: bool) -> Result<Rendered, String> {
    let mut report = Vec::new();
    let mut rendered = run_reporting(req, verbose, &mut report)?;
    rendered.report = report;
    Ok(rendered)
}

/// Renders, filling `report` as it goes: on an error it still has what was found before
/// (the Kong translation report, for one).
pub fn run_reporting(req: &Request, verbose: bool, report: &mut Vec<String>) -> Result<Rendered, String> {
    let doc: Value = serde_yaml_ng::from_str(&req.input).map_err(|e| format!("the plugin configuration is not YAML or JSON: {e}"))?;
    let mut notes = Vec::new();
    let (config, verbatim) = match kong::classify(doc, req.from_kong)? {
        kong::Input::Ours(map) => (map, Some(req.input.as_str())),
        kong::Input::Kong(found) => {
            let found = kong::pick(found, req.kong_plugin.as_deref())?;
            let t = kong::translate(&found.plugin)?;
            report.extend(kong_report(&found, &t, verbose));
            notes.push(format!("translated from Kong's {} (see the report on stderr)", found.label));
            (t.config, None)
        }
    };

    let prepared = plugin::prepare(config, verbatim)?;
    notes.extend(prepared.notes.iter().cloned());

    let meta = match &req.discovery {
        Some(bytes) => Some(Metadata::parse(&prepared.plan.issuer.issuer, bytes).map_err(|e| format!("--discovery: {e}"))?),
        None => None,
    };
    let (mut cluster_notes, mut warnings) = (Vec::new(), Vec::new());
    let clusters = render::clusters(
        &prepared.plan,
        meta.as_ref(),
        prepared.mtls_ssl_verify,
        req.options.client_cert.is_some(),
        &mut cluster_notes,
        &mut warnings,
    )?;
    report.extend(prepared.notes.iter().chain(&cluster_notes).map(|n| format!("note: {n}")));
    report.extend(warnings.iter().map(|w| format!("warning: {w}")));
    notes.extend(cluster_notes);
    notes.extend(warnings.iter().map(|w| format!("warning: {w}")));

    let bootstrap = render::bootstrap(&prepared.plan, &prepared.text, &clusters, &req.options, &notes);
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

    #[test]
    fn errors_name_the_problem() {
        assert!(run(&request("- a\n- b\n"), false).unwrap_err().contains("mapping"));
        assert!(run(&request("issuer: https://i\nclient_id: c\nauth_methods: [pasword]\n"), false).unwrap_err().contains("auth_methods"));
        let mut req = request("issuer: https://i\nclient_id: c\nclient_auth: tls_client_auth\n");
        req.options.client_cert = None;
        assert!(run(&req, false).unwrap_err().contains("--client-cert"));
    }
}
