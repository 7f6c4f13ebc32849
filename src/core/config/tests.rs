//! Configuration tests: every key refused with its name, defaults, and the keys table.

use super::*;

const MIN: &str = "issuer: https://idp.example.com\nidp_cluster: idp\n";

fn parse(extra: &str) -> Result<Plan, ConfigError> {
    Plan::parse(format!("{MIN}{extra}").as_bytes())
}

fn msg(extra: &str) -> String {
    parse(extra).unwrap_err().0
}

#[test]
fn kong_style_mtls_config() {
    let p =
        parse("client_id: client-tls-auth\nclient_auth: tls_client_auth\ntls_client_auth_cluster: idp-mtls\nauth_methods: [password]\n")
            .unwrap();
    assert_eq!(p.policy.client.token_auth, ClientAuth::TlsClientAuth);
    assert_eq!(p.policy.client.introspection_auth, ClientAuth::TlsClientAuth);
    assert_eq!(p.policy.client.cluster_for(p.policy.client.token_auth), "idp-mtls");
    assert_eq!(p.policy.methods.iter().collect::<Vec<_>>(), vec![AuthMethod::Password]);
    assert_eq!(p.policy.scope, "openid");
    assert_eq!(p.policy.timeout_ms, 10_000);
    assert!(p.policy.cache_tokens);
    assert_eq!(p.issuer.discovery.path, "/.well-known/openid-configuration");
    assert_eq!(p.policy.upstream.headers.access_token, Some(TokenHeader { name: HeaderName::new("authorization").unwrap(), bearer: true }));
    assert_eq!(p.policy.pop, Pop::Off);
    assert!(p.policy.bearer.header && !p.policy.bearer.query && p.policy.bearer.cookie.is_none());
    assert_eq!(p.policy.upstream.refresh_token_header, "x-refresh-token");
}

#[test]
fn json_is_accepted() {
    let p = Plan::parse(
        br#"{"issuer":"https://idp/","idp_cluster":"idp","client_id":["c"],"client_auth":["none"],"scopes":["openid","profile"]}"#,
    )
    .unwrap();
    assert_eq!(p.policy.scope, "openid profile");
    assert_eq!(p.issuer.discovery.url, "https://idp/.well-known/openid-configuration");
    assert_eq!(p.policy.client.token_auth, ClientAuth::None);
}

#[test]
fn tls_method_without_cluster_names_the_key() {
    let m = msg("client_id: c\nclient_auth: tls_client_auth\n");
    assert!(m.contains("tls_client_auth_cluster"), "{m}");
    let m = msg("client_id: c\nclient_secret: s\nintrospection_endpoint_auth_method: self_signed_tls_client_auth\n");
    assert!(m.contains("tls_client_auth_cluster") && m.contains("introspection_endpoint_auth_method"), "{m}");
}

#[test]
fn unknown_keys_are_refused() {
    let m = msg("client_id: c\nclinet_secret: s\n");
    assert!(m.contains("clinet_secret"), "{m}");
}

#[test]
fn wrong_types_name_the_key() {
    let m = msg("client_id: c\ntimeout: soon\n");
    assert!(m.contains("timeout"), "{m}");
    let m = msg("client_id: c\ncache_tokens: maybe\n");
    assert!(m.contains("cache_tokens"), "{m}");
    let m = msg("client_id: c\ntimeout: 0\n");
    assert!(m.contains("timeout"), "{m}");
}

#[test]
fn required_keys() {
    let m = Plan::parse(b"idp_cluster: idp\n").unwrap_err().0;
    assert!(m.contains("issuer"), "{m}");
    let m = Plan::parse(b"issuer: https://i\n").unwrap_err().0;
    assert!(m.contains("idp_cluster"), "{m}");
    let m = msg("auth_methods: [password]\n");
    assert!(m.contains("client_id"), "{m}");
    let m = Plan::parse(b"").unwrap_err().0;
    assert!(m.contains("issuer"), "{m}");
    let m = msg("client_id: c\nclient_auth: client_secret_post\n");
    assert!(m.contains("client_secret"), "{m}");
    let m = msg("client_id: c\nclient_auth: private_key_jwt\n");
    assert!(m.contains("client_private_key"), "{m}");
}

#[test]
fn bad_values_name_the_key() {
    assert!(msg("client_id: c\nclient_auth: tls\n").contains("client_auth"));
    assert!(msg("client_id: c\nauth_methods: [pasword]\n").contains("auth_methods"));
    assert!(msg("client_id: c\nauth_methods: [authorization_code]\nsession_secret: 0123456789abcdef\n").contains("redirect_uri"));
    assert!(msg("client_id: c\nauth_methods: [session]\n").contains("session_secret"));
    assert!(msg("client_id: c\nauth_methods: [session]\nsession_secret: short\n").contains("session_secret"));
    assert!(msg("client_id: c\nauth_methods: [session]\nsession_secret: 0123456789abcdef\nsession_cookie_same_site: lax\n")
        .contains("session_cookie_same_site"));
    assert!(msg("client_id: c\nlogout_methods: [CONNECT]\n").contains("logout_methods"));
    assert!(msg("client_id: c\nlogout_post_arg: logout\n").contains("logout_post_arg"));
    assert!(msg("client_id: c\nmtls_token_endpoint: token\n").contains("mtls_token_endpoint"));
    assert!(msg("client_id: c\nupstream_access_token_header: 'x y'\n").contains("upstream_access_token_header"));
    assert!(msg("client_id: c\nscopes: ['a b']\n").contains("scopes"));
    // Caught by fuzz/ (corpus/config/cookie_domain_crlf, logout_redirect_crlf): both
    // went into headers as they were (Set-Cookie, Location), line breaks included.
    let sessions = "client_id: c\nauth_methods: [session]\nsession_secret: 0123456789abcdef\n";
    assert!(msg(&format!("{sessions}session_cookie_domain: \"example.com\\r\\nx:1\"\n")).contains("session_cookie_domain"));
    assert!(msg("client_id: c\nlogout_redirect_uri: \"http://x/\\r\\nx:1\"\n").contains("logout_redirect_uri"));
    let m = Plan::parse(b"issuer: idp.example.com\nidp_cluster: idp\nclient_id: c\n").unwrap_err().0;
    assert!(m.contains("issuer"), "{m}");
}

#[test]
fn secret_defaults_to_basic_and_endpoints_inherit() {
    let p = parse("client_id: c\nclient_secret: s\nrevocation_endpoint_auth_method: client_secret_post\n").unwrap();
    assert_eq!(p.policy.client.token_auth, ClientAuth::ClientSecretBasic);
    assert_eq!(p.policy.client.introspection_auth, ClientAuth::ClientSecretBasic);
    assert_eq!(p.policy.client.revocation_auth, ClientAuth::ClientSecretPost);
    assert_eq!(p.policy.client.cluster_for(p.policy.client.token_auth), "idp");
}

#[test]
fn token_header_notation() {
    let p = parse("client_id: c\nupstream_access_token_header: X-Access-Token\n").unwrap();
    assert_eq!(
        p.policy.upstream.headers.access_token,
        Some(TokenHeader { name: HeaderName::new("x-access-token").unwrap(), bearer: false })
    );
    let p = parse("client_id: c\nupstream_access_token_header: ''\n").unwrap();
    assert_eq!(p.policy.upstream.headers.access_token, None);
}

#[test]
fn client_credentials_alone_needs_no_client() {
    let p = parse("auth_methods: [client_credentials]\n").unwrap();
    assert_eq!(p.policy.methods.iter().collect::<Vec<_>>(), vec![AuthMethod::ClientCredentials]);
}

#[test]
fn methods_are_tried_in_kong_order() {
    let p = parse("client_id: c\nauth_methods: [client_credentials, password]\n").unwrap();
    assert_eq!(p.policy.methods.iter().collect::<Vec<_>>(), vec![AuthMethod::Password, AuthMethod::ClientCredentials]);
}

#[test]
fn api_token_keys() {
    let p = parse(
        "client_id: c\nauth_methods: [bearer, introspection]\nbearer_token_param_type: [header, query, cookie]\nbearer_token_cookie_name: at\nleeway: 30\nscopes_required: ['api:read api:write', admin]\nroles_claim: [realm_access, roles]\nroles_required: [writer]\nupstream_headers_claims: [sub, email]\nupstream_headers_names: [X-User, x-email]\nupstream_user_info_header: x-userinfo\nproof_of_possession_mtls: strict\nhide_credentials: true\n",
    )
    .unwrap();
    assert_eq!(p.policy.bearer, BearerSources { header: true, query: true, cookie: Some("at".into()), header_name: None });
    assert_eq!(p.policy.leeway, 30);
    assert_eq!(p.policy.rules.len(), 2);
    assert_eq!(p.policy.rules[1].claim, vec!["realm_access".to_string(), "roles".to_string()]);
    assert_eq!(
        p.policy.upstream.headers.claims,
        vec![("sub".into(), HeaderName::new("x-user").unwrap()), ("email".into(), HeaderName::new("x-email").unwrap())]
    );
    assert_eq!(p.policy.pop, Pop::Strict);
    assert!(p.policy.upstream.hide_credentials);
    let names: Vec<&str> = p.policy.upstream.names().map(HeaderName::as_str).collect();
    assert_eq!(names, vec!["authorization", "x-userinfo", "x-user", "x-email"]);
    assert!(p.policy.challenge.challenges(None)[0].as_str().starts_with("Bearer realm"));
}

#[test]
fn api_token_errors_name_the_key() {
    assert!(msg("client_id: c\nbearer_token_param_type: [cookie]\n").contains("bearer_token_cookie_name"));
    assert!(msg("client_id: c\nbearer_token_param_type: [body]\n").contains("bearer_token_param_type"));
    assert!(msg("client_id: c\nupstream_headers_claims: [sub]\n").contains("upstream_headers_names"));
    assert!(msg("client_id: c\nproof_of_possession_mtls: yes\n").contains("proof_of_possession_mtls"));
    assert!(msg("client_id: c\nroles_claim: []\nroles_required: [a]\n").contains("roles_claim"));
    assert!(msg("client_id: c\nscopes_required: ['']\n").contains("scopes_required"));
    assert!(msg("client_id: c\nleeway: 99999\n").contains("leeway"));
}

#[test]
fn debug_redacts_secret() {
    let p = parse("client_id: c\nclient_secret: hunter2\n").unwrap();
    assert!(!format!("{p:?}").contains("hunter2"));
}

#[test]
fn the_keys_table_is_the_parsers_list() {
    // serde lists every field it knows when it meets an unknown one.
    let m = msg("client_id: c\nno_such_key: 1\n");
    let expected = m.split("expected one of").nth(1).expect(&m);
    let known: Vec<&str> = expected.split(',').filter_map(|k| k.split('`').nth(1)).collect();
    let table: Vec<&str> = keys::KEYS.iter().map(|k| k.name).collect();
    let mut a = known.clone();
    let mut b = table.clone();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b, "config/keys.rs and config/raw.rs disagree");
    // every default parses as what the key takes
    for k in keys::KEYS {
        if let Some(d) = k.default {
            parse(&format!("client_id: c\n{}: {d}\n", k.name)).unwrap_or_else(|e| panic!("{}: {e}", k.name));
        }
    }
}

#[test]
fn null_means_the_default() {
    let p = parse("client_id: c\ntimeout: null\nscopes: ~\n").unwrap();
    assert_eq!(p.policy.timeout_ms, DEFAULT_TIMEOUT_MS);
    assert_eq!(p.policy.scope, "openid");
}

const POLICIES: &str = "client_id: gateway
client_secret: s3cret
auth_methods: [bearer]
session_secret: 0123456789abcdef0123
policies:
  api: {scopes_required: ['orders:read']}
  app: {auth_methods: [authorization_code, session], redirect_uri: 'https://shop.example.com/app/callback'}
  partner: {issuer: 'https://idp-b.example.com', idp_cluster: idp-b, tls_client_auth_cluster: idp-b-mtls, client_id: gw-b, client_auth: tls_client_auth, auth_methods: [password, introspection]}
  same_idp: {timeout: 10000}
route_policies: {orders-route: api, partner-route: partner}
";

#[test]
fn named_policies_are_layered_over_the_top_level() {
    let p = parse(POLICIES).unwrap();
    assert!(p.chooses());
    assert_eq!(p.named.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), vec!["api", "app", "partner", "same_idp"]);
    let api = p.get(p.find("api").unwrap()).unwrap();
    assert_eq!((api.client.client.id.as_str(), api.rules.len()), ("gateway", 1), "inherits the client, adds its rule");
    assert!(p.policy.rules.is_empty(), "the default keeps its own");
    let app = p.get(p.find("app").unwrap()).unwrap();
    assert!(app.has(AuthMethod::AuthorizationCode) && !app.has(AuthMethod::Bearer));
    let s = app.sessions.as_ref().unwrap();
    assert_eq!((s.cookie_name.as_str(), s.authorization_cookie_name.as_str()), ("session-app", "authorization-app"));
    let partner = p.get(p.find("partner").unwrap()).unwrap();
    assert_eq!(partner.client.token_auth, ClientAuth::TlsClientAuth);
    assert_eq!(partner.client.cluster_for(partner.client.token_auth), "idp-b-mtls");
    // one issuer per distinct IdP: the default's, partner's; `same_idp` reuses the first
    assert_eq!(p.issuers.len(), 2);
    assert_eq!((p.policy.issuer_id, partner.issuer_id), (0, 1));
    assert_eq!(p.get(p.find("same_idp").unwrap()).unwrap().issuer_id, 0);
    assert_eq!(p.issuers[1].issuer, "https://idp-b.example.com");
    assert_eq!(p.for_route("orders-route"), p.find("api"));
    assert_eq!(p.for_route("nope"), None);
    assert_eq!(p.get(PolicyId(0)).unwrap().name, "");
    assert_eq!(p.policies().count(), 5);
}

#[test]
fn a_policy_that_names_its_cookie_keeps_the_name() {
    let p = parse(
        "client_id: c\nsession_secret: 0123456789abcdef0123\npolicies:\n  web: {auth_methods: [session], session_cookie_name: web_sid}\n",
    )
    .unwrap();
    let web = p.get(p.find("web").unwrap()).unwrap();
    assert_eq!(web.sessions.as_ref().unwrap().cookie_name, "web_sid");
}

#[test]
fn policy_errors_name_the_policy_and_the_key() {
    let m = msg("client_id: c\npolicies:\n  api: {timeout: soon}\n");
    assert!(m.contains("policies.api.timeout"), "{m}");
    let m = msg("client_id: c\npolicies:\n  app: {auth_methods: [authorization_code]}\n");
    assert!(m.contains("policies.app") && m.contains("session_secret"), "{m}");
    let m = msg("client_id: c\npolicies:\n  api: {}\nroute_policies: {r1: apj}\n");
    assert!(m.contains("route_policies.r1") && m.contains("apj"), "{m}");
    for bad in ["Api", "1st", "a b", ""] {
        let m = msg(&format!("client_id: c\npolicies:\n  '{bad}': {{}}\n"));
        assert!(m.contains("policy name"), "{bad}: {m}");
    }
    let m = msg("client_id: c\npolicies:\n  api: {policies: {x: {}}}\n");
    assert!(m.contains("do not nest"), "{m}");
    let m = msg("client_id: c\npolicies:\n  api: [bearer]\n");
    assert!(m.contains("policies.api"), "{m}");
    let m = msg("client_id: c\npolicies:\n  api: {no_such: 1}\n");
    assert!(m.contains("no_such"), "{m}");
}

#[test]
fn one_policy_plans_choose_nothing() {
    let p = parse("client_id: c\n").unwrap();
    assert!(!p.chooses());
    assert_eq!(p.issuers.len(), 1);
}

#[test]
fn allowed_issuers_and_extra_key_sets_become_issuers_of_the_plan() {
    let p = parse(
        "client_id: c
issuers_allowed: ['https://idp.example.com', 'https://idp-b.example.com', 'https://realm-2.example.com']
extra_jwks_uris: ['https://keys.example.com/extra.json']
policies:
  partner: {issuer: 'https://idp-b.example.com', idp_cluster: idp-b, issuers_allowed: null, extra_jwks_uris: null}
  more: {extra_jwks_uris: ['https://keys.example.com/extra.json', 'https://keys.example.com/more.json']}
",
    )
    .unwrap();
    let at = |i: usize| &p.issuers[i];
    let own = &p.policy.trusted;
    // its own issuer first (listing it in issuers_allowed changes nothing), with its extra key set
    assert_eq!(
        own.iter().map(|t| t.issuer.as_str()).collect::<Vec<_>>(),
        ["https://idp.example.com", "https://idp-b.example.com", "https://realm-2.example.com"]
    );
    assert_eq!(own[0].docs[0], p.policy.issuer_id);
    let extra = at(own[0].docs[1]);
    assert_eq!((extra.issuer.as_str(), extra.cluster.as_str()), ("https://idp.example.com", "idp"));
    assert_eq!(extra.jwks.as_ref().map(|e| e.path.as_str()), Some("/extra.json"));
    // an issuer another policy has: its documents, through its cluster (declared later)
    let partner = p.get(p.find("partner").unwrap()).unwrap();
    assert_eq!(own[1].docs, [partner.issuer_id]);
    assert_eq!(at(partner.issuer_id).cluster, "idp-b");
    assert_eq!(partner.trusted.len(), 1, "null takes the lists back");
    assert_eq!(partner.trusted[0].docs, [partner.issuer_id]);
    // one no policy has: discovered through the allowing policy's cluster
    let realm = at(own[2].docs[0]);
    assert_eq!(
        (realm.cluster.as_str(), realm.discovery.url.as_str(), realm.jwks.is_none()),
        ("idp", "https://realm-2.example.com/.well-known/openid-configuration", true)
    );
    assert!(own[1..].iter().all(|t| t.docs.len() == 1), "another issuer has no extra key set");
    // the same key set and allowed issuer in two policies: fetched once
    let more = p.get(p.find("more").unwrap()).unwrap();
    assert_eq!(more.trusted[0].docs[1], own[0].docs[1]);
    assert_eq!(more.trusted[2].docs, own[2].docs);
    assert_eq!(p.issuers.len(), 5, "idp, idp-b, the extra key set, realm-2, the second extra key set");
}

#[test]
fn allowed_issuers_and_extra_key_sets_are_checked() {
    for (extra, key, why) in [
        ("issuers_allowed: ['https://b', 'https://b']", "`issuers_allowed`", "listed twice"),
        ("issuers_allowed: ['ftp://b']", "`issuers_allowed`", "http(s)"),
        ("issuers_allowed: ['']", "`issuers_allowed`", "URL"),
        ("issuers_allowed: 'https://b'", "issuers_allowed", "sequence"),
        ("extra_jwks_uris: ['https://k/1', ' https://k/1']", "`extra_jwks_uris`", "listed twice"),
        ("extra_jwks_uris: ['https://user@k/1']", "`extra_jwks_uris`", "user info"),
        ("extra_jwks_uris: ['keys.json']", "`extra_jwks_uris`", "URL"),
    ] {
        let m = msg(&format!("client_id: c\n{extra}\n"));
        assert!(m.contains(key) && m.contains(why), "{extra}: {m}");
    }
    let m = msg("client_id: c\npolicies:\n  api: {issuers_allowed: ['https://b', 'https://b']}\n");
    assert!(m.contains("policies.api") && m.contains("`issuers_allowed`"), "{m}");
    let p = parse("client_id: c\nissuers_allowed: []\nextra_jwks_uris: []\n").unwrap();
    assert_eq!((p.policy.trusted.len(), p.issuers.len()), (1, 1));
}
