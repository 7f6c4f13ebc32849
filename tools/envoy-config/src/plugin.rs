//! The plugin configuration that goes into the bootstrap: renderer-only keys taken out,
//! Envoy cluster names filled in (for the default policy and for each of `policies`), and
//! validated by the filter's own code.

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

/// The keys that decide where the TLS-authenticated calls go.
const MTLS_ENDPOINT_KEYS: [&str; 3] = ["mtls_token_endpoint", "mtls_introspection_endpoint", "mtls_revocation_endpoint"];

/// A configuration ready to embed.
#[derive(Debug)]
pub struct Prepared {
    /// The text embedded in the bootstrap (the input verbatim when nothing had to change).
    pub text: String,
    pub plan: Plan,
    /// `tls_client_auth_ssl_verify` (default true) of each policy, by `PolicyId` (the
    /// default policy first, then `policies` in order).
    pub mtls_ssl_verify: Vec<bool>,
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

/// A configuration split into its default policy (the top-level keys) and `policies`.
struct Split {
    top: Mapping,
    /// `policies` entries (their own keys), when `policies` is a mapping of mappings;
    /// otherwise it stays in `top` for the filter to refuse.
    named: Vec<(Value, Mapping)>,
    route_policies: Option<Value>,
}

fn split(mut config: Mapping) -> Split {
    let named = match config.get("policies") {
        Some(Value::Mapping(m)) if m.values().all(|v| v.is_mapping() || v.is_null()) => {
            let m = m.clone();
            config.remove("policies");
            m.into_iter().map(|(k, v)| (k, v.as_mapping().cloned().unwrap_or_default())).collect()
        }
        _ => Vec::new(),
    };
    let route_policies = if named.is_empty() { None } else { config.remove("route_policies") };
    Split { top: config, named, route_policies }
}

impl Split {
    /// The configuration again (`reorder`: `issuer` and the cluster names first in each policy).
    fn join(self, reorder: bool) -> Mapping {
        let order = |m: Mapping| if reorder { issuer_and_clusters_first(m) } else { m };
        let mut out = order(self.top);
        if !self.named.is_empty() {
            let policies: Mapping = self.named.into_iter().map(|(k, v)| (k, Value::Mapping(order(v)))).collect();
            out.insert("policies".into(), Value::Mapping(policies));
        }
        if let Some(r) = self.route_policies {
            out.insert("route_policies".into(), r);
        }
        out
    }
}

/// A named policy's effective keys: the top level with its own keys over them (`null`
/// takes a key back to the filter's default), as the filter layers them.
pub fn effective(top: &Mapping, own: &Mapping) -> Mapping {
    let mut merged = top.clone();
    merged.extend(own.clone());
    merged.retain(|_, v| !v.is_null());
    merged
}

fn set(map: &Mapping, key: &str) -> bool {
    map.get(key).is_some_and(|v| !v.is_null())
}

fn ssl_verify(v: Option<&Value>, inherited: bool, at: &str) -> Result<bool, String> {
    match v {
        None => Ok(inherited),
        Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("`{at}{SSL_VERIFY_KEY}` must be true or false")),
    }
}

/// Takes `tls_client_auth_ssl_verify` out of every policy when the filter does not know
/// it; returns each policy's value.
fn take_ssl_verify(s: &mut Split, notes: &mut Vec<String>) -> Result<(Vec<bool>, bool), String> {
    let top = ssl_verify(s.top.get(SSL_VERIFY_KEY), true, "")?;
    let mut verify = vec![top];
    for (name, own) in &s.named {
        verify.push(ssl_verify(own.get(SSL_VERIFY_KEY), top, &format!("policies.{}.", name.as_str().unwrap_or("?")))?);
    }
    let mut changed = false;
    if !filter_knows(SSL_VERIFY_KEY) {
        let mut at = Vec::new();
        if s.top.remove(SSL_VERIFY_KEY).is_some() {
            at.push((String::new(), top));
        }
        for (i, (name, own)) in s.named.iter_mut().enumerate() {
            if own.remove(SSL_VERIFY_KEY).is_some() {
                at.push((format!("policies.{}.", name.as_str().unwrap_or("?")), verify[i + 1]));
            }
        }
        for (prefix, v) in at {
            changed = true;
            notes.push(format!(
                "{prefix}{SSL_VERIFY_KEY}: {v} applied to the client-certificate cluster and left out of the embedded configuration (the filter does not take this key)"
            ));
        }
    }
    Ok((verify, changed))
}

/// What decides a client-certificate cluster: the issuer, the configured `mtls_*_endpoint`
/// and whether it verifies the IdP's certificate.
fn mtls_key(config: &Mapping, verify: bool) -> String {
    let mut key = format!("{:?}|{verify}", config.get("issuer"));
    for k in MTLS_ENDPOINT_KEYS {
        key.push_str(&format!("|{:?}", config.get(k)));
    }
    key
}

/// Fills in the cluster names: `idp` / `idp-mtls` for the default policy; a named policy
/// inherits them unless its issuer (or its client-certificate endpoints) differ, and then
/// gets `idp-NAME` / `idp-NAME-mtls`, shared with the policies after it that have the same.
fn fill_clusters(s: &mut Split, verify: &[bool], notes: &mut Vec<String>) -> bool {
    let mut changed = false;
    if !set(&s.top, "idp_cluster") {
        s.top.insert("idp_cluster".into(), DEFAULT_IDP_CLUSTER.into());
        changed = true;
        notes.push(format!("idp_cluster: not set; the rendered cluster is `{DEFAULT_IDP_CLUSTER}`"));
    }
    if !set(&s.top, "tls_client_auth_cluster") && uses_tls(&s.top) {
        s.top.insert("tls_client_auth_cluster".into(), DEFAULT_TLS_CLUSTER.into());
        changed = true;
        notes
            .push(format!("tls_client_auth_cluster: not set; the rendered cluster with the client certificate is `{DEFAULT_TLS_CLUSTER}`"));
    }
    // issuer → idp_cluster, mtls key → tls_client_auth_cluster, as assigned so far
    let mut idp: Vec<(Option<Value>, Value)> = vec![(s.top.get("issuer").cloned(), s.top.get("idp_cluster").cloned().unwrap_or_default())];
    let mut mtls: Vec<(String, Value)> = Vec::new();
    if let Some(c) = s.top.get("tls_client_auth_cluster") {
        mtls.push((mtls_key(&s.top, verify[0]), c.clone()));
    }
    for (i, (name, own)) in s.named.iter_mut().enumerate() {
        let name = name.as_str().unwrap_or("policy").to_string();
        let eff = effective(&s.top, own);
        let issuer = eff.get("issuer").cloned();
        if !set(own, "idp_cluster") {
            let unset = Unset {
                field: "idp_cluster",
                new_name: format!("{DEFAULT_IDP_CLUSTER}-{name}"),
                why: "its issuer is not the default policy's",
            };
            changed |= assign_cluster(own, &eff, &mut idp, issuer.clone(), unset, &name, notes);
        } else if !idp.iter().any(|(i, _)| *i == issuer) {
            idp.push((issuer.clone(), own.get("idp_cluster").cloned().unwrap_or_default()));
        }
        let eff = effective(&s.top, own);
        let key = mtls_key(&eff, verify[i + 1]);
        if set(own, "tls_client_auth_cluster") {
            if !mtls.iter().any(|(k, _)| *k == key) {
                mtls.push((key, own.get("tls_client_auth_cluster").cloned().unwrap_or_default()));
            }
        } else if !uses_tls(&eff) {
            // no TLS method: an inherited client-certificate cluster for other calls than
            // this policy's would connect to the wrong host; the policy needs none
            let inherited = eff.get("tls_client_auth_cluster");
            let theirs = mtls.iter().find(|(_, c)| Some(c) == inherited).map(|(k, _)| k);
            if inherited.is_some() && theirs != Some(&key) {
                own.insert("tls_client_auth_cluster".into(), Value::Null);
                changed = true;
            }
        } else {
            let unset = Unset {
                field: "tls_client_auth_cluster",
                new_name: format!("{DEFAULT_IDP_CLUSTER}-{name}-mtls"),
                why: "its client-certificate calls are not the default policy's",
            };
            changed |= assign_cluster(own, &eff, &mut mtls, key, unset, &name, notes);
        }
    }
    changed
}

/// A cluster field a named policy leaves unset: the name it gets when no policy before it
/// has the same `key`, and why that is so (for the note).
struct Unset {
    field: &'static str,
    new_name: String,
    why: &'static str,
}

/// Sets `unset.field` of policy `name` to the cluster of the first policy with the same
/// `key` in `table` (issuer → cluster, or client-certificate endpoints → cluster), else to
/// a new cluster, recorded in `table` and noted. Whether the policy changed.
fn assign_cluster<K: PartialEq>(
    own: &mut Mapping,
    eff: &Mapping,
    table: &mut Vec<(K, Value)>,
    key: K,
    unset: Unset,
    name: &str,
    notes: &mut Vec<String>,
) -> bool {
    let known = table.iter().find(|(k, _)| *k == key).map(|(_, c)| c.clone());
    let want = known.clone().unwrap_or_else(|| unset.new_name.into());
    let changed = eff.get(unset.field) != Some(&want);
    if changed {
        own.insert(unset.field.into(), want.clone());
        if known.is_none() {
            notes.push(format!(
                "policies.{name}.{}: not set and {}; the rendered cluster is `{}`",
                unset.field,
                unset.why,
                want.as_str().unwrap_or_default()
            ));
        }
    }
    if known.is_none() {
        table.push((key, want));
    }
    changed
}

/// Prepares `config` (parsed from `verbatim`, when it came from the user as is).
pub fn prepare(config: Mapping, verbatim: Option<&str>) -> Result<Prepared, String> {
    let mut notes = Vec::new();
    let mut s = split(config);
    let (mtls_ssl_verify, mut changed) = take_ssl_verify(&mut s, &mut notes)?;
    changed |= fill_clusters(&mut s, &mtls_ssl_verify, &mut notes);
    let text = match verbatim {
        Some(t) if !changed && embeddable(t) => t.to_string(),
        _ => serde_yaml_ng::to_string(&Value::Mapping(s.join(changed))).map_err(|e| e.to_string())?,
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
        assert_eq!(p.mtls_ssl_verify, [true]);
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
        assert_eq!(p.mtls_ssl_verify, [false]);
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
