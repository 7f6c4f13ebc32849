//! The plugin configuration that goes into the bootstrap: renderer-only keys taken out,
//! Envoy cluster names filled in, and validated by the filter's own code.

use envoy_oidc::core::client_auth::ClientAuth;
use envoy_oidc::core::config::{keys, Plan};
use serde_yaml_ng::{Mapping, Value};

/// Kong's `tls_client_auth_ssl_verify`: whether the cluster that presents the client
/// certificate verifies the IdP's server certificate. The renderer reads it; it is embedded
/// only when the filter itself knows the key.
pub const SSL_VERIFY_KEY: &str = "tls_client_auth_ssl_verify";

/// Cluster names used when the configuration names none.
pub const DEFAULT_IDP_CLUSTER: &str = "idp";
pub const DEFAULT_TLS_CLUSTER: &str = "idp-mtls";

/// The filter's keys that name a client authentication method.
pub const CLIENT_AUTH_KEYS: [&str; 4] =
    ["client_auth", "token_endpoint_auth_method", "introspection_endpoint_auth_method", "revocation_endpoint_auth_method"];

/// A configuration ready to embed.
#[derive(Debug)]
pub struct Prepared {
    /// The text embedded in the bootstrap (the input verbatim when nothing had to change).
    pub text: String,
    pub plan: Plan,
    /// `tls_client_auth_ssl_verify` (default true).
    pub mtls_ssl_verify: bool,
    /// What was changed, for stderr.
    pub notes: Vec<String>,
}

/// Whether the filter's configuration accepts `key` (false when it refuses it as unknown).
pub fn filter_knows(key: &str) -> bool {
    keys::key(key).is_some()
}

/// The client authentication methods `config` names (a Kong list counts each of its
/// values); names the filter does not know are left out (it reports them itself).
pub fn client_auths(config: &Mapping) -> Vec<ClientAuth> {
    let mut out = Vec::new();
    for key in CLIENT_AUTH_KEYS {
        let names: Vec<&str> = match config.get(key) {
            Some(Value::String(s)) => vec![s],
            Some(Value::Sequence(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        out.extend(names.into_iter().filter_map(|n| ClientAuth::parse(key, n).ok()));
    }
    out
}

/// Whether any client authentication method of `config` is a TLS one.
pub fn uses_tls(config: &Mapping) -> bool {
    client_auths(config).iter().any(|m| m.is_tls())
}

/// Prepares `config` (parsed from `verbatim`, when it came from the user as is).
pub fn prepare(mut config: Mapping, verbatim: Option<&str>) -> Result<Prepared, String> {
    let mut notes = Vec::new();
    let mut changed = false;

    let mtls_ssl_verify = match config.get(SSL_VERIFY_KEY) {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(format!("`{SSL_VERIFY_KEY}` must be true or false")),
    };
    if config.contains_key(SSL_VERIFY_KEY) && !filter_knows(SSL_VERIFY_KEY) {
        config.remove(SSL_VERIFY_KEY);
        changed = true;
        notes.push(format!(
            "{SSL_VERIFY_KEY}: {mtls_ssl_verify} applied to the client-certificate cluster and left out of the embedded configuration (the filter does not take this key)"
        ));
    }
    if !config.contains_key("idp_cluster") {
        config.insert("idp_cluster".into(), DEFAULT_IDP_CLUSTER.into());
        changed = true;
        notes.push(format!("idp_cluster: not set; the rendered cluster is `{DEFAULT_IDP_CLUSTER}`"));
    }
    if !config.contains_key("tls_client_auth_cluster") && uses_tls(&config) {
        config.insert("tls_client_auth_cluster".into(), DEFAULT_TLS_CLUSTER.into());
        changed = true;
        notes
            .push(format!("tls_client_auth_cluster: not set; the rendered cluster with the client certificate is `{DEFAULT_TLS_CLUSTER}`"));
    }

    if changed {
        config = issuer_and_clusters_first(config);
    }
    let text = match verbatim {
        Some(t) if !changed && embeddable(t) => t.to_string(),
        _ => serde_yaml_ng::to_string(&Value::Mapping(config)).map_err(|e| e.to_string())?,
    };
    let plan = Plan::parse(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(Prepared { text, plan, mtls_ssl_verify, notes })
}

/// `issuer`, `idp_cluster`, `tls_client_auth_cluster` first, the rest in order.
fn issuer_and_clusters_first(config: Mapping) -> Mapping {
    const FIRST: [&str; 3] = ["issuer", "idp_cluster", "tls_client_auth_cluster"];
    let mut out = Mapping::new();
    for key in FIRST {
        if let Some(v) = config.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    for (k, v) in config {
        if !k.as_str().is_some_and(|k| FIRST.contains(&k)) {
            out.insert(k, v);
        }
    }
    out
}

/// Whether `text` can go verbatim into a YAML literal block: its first non-empty line must
/// not be indented (it sets the block's indentation), and no carriage returns.
fn embeddable(text: &str) -> bool {
    !text.contains('\r')
        && !text.trim().is_empty()
        && text.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| !l.starts_with([' ', '\t']) && l.trim() != "---")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(s: &str) -> Mapping {
        serde_yaml_ng::from_str(s).unwrap()
    }

    #[test]
    fn client_auth_keys_are_the_filters() {
        for key in CLIENT_AUTH_KEYS {
            assert!(filter_knows(key), "{key}");
        }
        assert!(!filter_knows("clinet_id"));
        let c =
            map("client_auth: [tls_client_auth]\nrevocation_endpoint_auth_method: private_key_jwt\ntoken_endpoint_auth_method: nonsense\n");
        assert_eq!(client_auths(&c), [ClientAuth::TlsClientAuth, ClientAuth::PrivateKeyJwt]);
        assert!(uses_tls(&c));
        assert!(!uses_tls(&map("client_auth: client_secret_basic\n")));
    }

    #[test]
    fn verbatim_when_nothing_changes() {
        let text = "# ours\nissuer: https://idp\nidp_cluster: idp\nclient_id: c\nauth_methods: [password]\n";
        let p = prepare(map(text), Some(text)).unwrap();
        assert_eq!(p.text, text);
        assert!(p.notes.is_empty());
        assert!(p.mtls_ssl_verify);
    }

    #[test]
    fn cluster_names_are_filled_in() {
        let text = "issuer: https://idp\nclient_id: c\nclient_auth: [tls_client_auth]\n";
        let p = prepare(map(text), Some(text)).unwrap();
        assert_eq!(p.plan.issuer.cluster, "idp");
        assert_eq!(p.plan.policy.client.tls_client_auth_cluster.as_deref(), Some("idp-mtls"));
        assert_eq!(p.notes.len(), 2);
        assert!(p.text.starts_with("issuer: https://idp\nidp_cluster: idp\ntls_client_auth_cluster: idp-mtls\n"), "{}", p.text);
        // no TLS method: no TLS cluster
        let p = prepare(map("issuer: https://idp\nclient_id: c\nclient_secret: s\n"), None).unwrap();
        assert_eq!(p.plan.policy.client.tls_client_auth_cluster, None);
    }

    #[test]
    fn ssl_verify_is_read_and_stripped_when_the_filter_refuses_it() {
        let text = "issuer: https://idp\nidp_cluster: idp\ntls_client_auth_cluster: m\nclient_id: c\nclient_auth: tls_client_auth\ntls_client_auth_ssl_verify: false\n";
        let p = prepare(map(text), Some(text)).unwrap();
        assert!(!p.mtls_ssl_verify);
        if filter_knows(SSL_VERIFY_KEY) {
            assert!(p.text.contains(SSL_VERIFY_KEY));
        } else {
            assert!(!p.text.contains(SSL_VERIFY_KEY), "{}", p.text);
            assert!(p.notes[0].contains("left out"));
        }
        assert!(prepare(map("issuer: https://i\ntls_client_auth_ssl_verify: maybe\n"), None).is_err());
    }

    #[test]
    fn the_filters_errors_come_through() {
        let e = prepare(map("issuer: https://idp\nclient_id: c\ntimeout: soon\n"), None).unwrap_err();
        assert!(e.contains("timeout"), "{e}");
        let e = prepare(map("issuer: https://idp\nclinet_id: c\n"), None).unwrap_err();
        assert!(e.contains("clinet_id"), "{e}");
    }

    #[test]
    fn indented_or_multi_document_text_is_reserialised() {
        assert!(!embeddable("  issuer: x\n"));
        assert!(!embeddable("---\nissuer: x\n"));
        assert!(embeddable("\n# c\nissuer: x\n"));
        assert!(embeddable("{\"issuer\": \"x\"}"));
    }
}
