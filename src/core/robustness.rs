//! Hostile-input tests: random and mutated requests, cookies, tokens and IdP answers are fed
//! to every entry point of the core; nothing may panic (a panic kills the Wasm VM).

use crate::core::config::Plan;
use crate::core::discovery::Metadata;
use crate::core::docs::Docs;
use crate::core::idp::IdpResponse;
use crate::core::jwt::KeySet;
use crate::core::log::Log;
use crate::core::metrics::Metrics;
use crate::core::request::{Caches, Cx, Inputs, Request};
use crate::core::testing::SharedData;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    /// A string built from fragments that mean something to the parsers, and noise.
    fn text(&mut self) -> String {
        const BITS: [&str; 24] = [
            "Bearer ",
            "Basic ",
            "eyJ",
            ".",
            "=",
            ";",
            " ",
            "session=",
            "session_2=",
            "2.",
            "16.",
            "authorization=",
            "access_token=",
            "&",
            "?",
            "/callback",
            "code=",
            "state=",
            "error=",
            "%",
            "\u{fffd}",
            "\u{0}",
            "am9objpkb2U=",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ];
        let n = self.next() % 12;
        (0..n).map(|_| self.pick(&BITS)).collect()
    }
}

const PLANS: [&str; 3] = [
    "auth_methods: [bearer, introspection, userinfo, refresh_token, password, client_credentials]\nbearer_token_param_type: [header, query, cookie]\nbearer_token_cookie_name: at\nproof_of_possession_mtls: optional\nscopes_required: [a]\n",
    "auth_methods: [session, authorization_code, bearer]\nsession_secret: 0123456789abcdef0123\nredirect_uri: http://h/callback\nlogout_uri_suffix: /logout\nlogout_revoke: true\n",
    "auth_methods: [password]\ncache_tokens: false\n",
];

fn plan(extra: &str) -> Plan {
    let base = "issuer: https://idp\nidp_cluster: idp\nclient_id: c\nclient_auth: tls_client_auth\ntls_client_auth_cluster: m\n";
    Plan::parse(format!("{base}{extra}").as_bytes()).unwrap()
}

#[test]
fn random_requests_and_idp_answers_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for extra in PLANS {
        let plan = plan(extra);
        let meta = Metadata::parse(
            "https://idp",
            br#"{"issuer":"https://idp","authorization_endpoint":"https://idp/a","token_endpoint":"https://idp/t","introspection_endpoint":"https://idp/i","userinfo_endpoint":"https://idp/u","revocation_endpoint":"https://idp/r","end_session_endpoint":"https://idp/e","jwks_uri":"https://idp/k"}"#,
        )
        .unwrap();
        let now_ms = 1_800_000_000_000;
        let mut docs = Docs::new(plan.issuer.clone(), 1);
        docs.adopt_metadata(meta, now_ms);
        docs.adopt_keys(KeySet::parse(br#"{"keys":[]}"#).unwrap(), now_ms);
        let (mut store, mut caches, mut metrics, mut log) = (SharedData::new(true), Caches::new(64), Metrics::default(), Log::default());
        for i in 0..3000u64 {
            let (a, p, c, r, m, acc) = (rng.text(), rng.text(), rng.text(), rng.text(), rng.pick(&["GET", "POST", "DELETE"]), rng.text());
            let inputs = Inputs {
                authorization: Some(a.as_str()).filter(|_| i % 5 != 0),
                path: Some(p.as_str()),
                cookie: Some(c.as_str()),
                refresh_token: Some(r.as_str()).filter(|_| i % 3 == 0),
                peer_cert_sha256: Some(acc.as_str()),
                method: Some(m),
                accept: Some(if i % 2 == 0 { "text/html" } else { acc.as_str() }),
                x_requested_with: None,
                scheme: Some(if i % 2 == 0 { "https" } else { "http" }),
            };
            let mut random = |b: &mut [u8]| b.fill(7);
            let mut cx = Cx {
                policy: &plan.policy,
                policy_id: crate::core::config::PolicyId(0),
                docs: &mut docs,
                others: Default::default(),
                store: &mut store,
                caches: &mut caches,
                metrics: &mut metrics,
                log: &mut log,
                now_ms: now_ms + i,
                random: &mut random,
            };
            let mut request = Request::new();
            let _ = request.start(&mut cx, &inputs);
            // whatever state it is in, every answer must be taken without a panic, and the
            // request must end (an answer to a call it asked for ends in another call at most)
            for _ in 0..4 {
                let body = rng.text().into_bytes();
                let status = [None, Some(200), Some(400), Some(401), Some(503)][(rng.next() % 5) as usize];
                let resp = IdpResponse { status, body, elapsed_ms: rng.next() % 20_000 };
                let _ = request.handle_answer(&mut cx, &resp);
            }
            log.drain();
        }
    }
}

#[test]
fn random_configuration_documents_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..2000 {
        let doc = format!(
            "issuer: https://idp\nidp_cluster: idp\n{}: {}\n",
            rng.pick(&["client_auth", "scopes", "timeout", "redirect_uri", "session_secret", "leeway", "roles_claim"]),
            rng.text()
        );
        let _ = Plan::parse(doc.as_bytes());
        let _ = Plan::parse(rng.text().as_bytes());
    }
}

#[test]
fn random_idp_documents_never_panic() {
    let mut rng = Rng(7);
    let plan = plan("");
    for _ in 0..2000 {
        let t = rng.text();
        let _ = Metadata::parse(&plan.issuer.issuer, t.as_bytes());
        let _ = KeySet::parse(t.as_bytes());
        let _ = KeySet::parse(
            format!(r#"{{"keys":[{{"kty":"RSA","n":"{t}","e":"AQAB"}},{{"kty":"EC","crv":"P-256","x":"{t}","y":"{t}"}}]}}"#).as_bytes(),
        );
    }
}

#[test]
fn rsa_verification_never_panics_on_random_keys_and_signatures() {
    use crate::core::rsa::{Hash, PublicKey};
    let mut rng = Rng(0x5eed_7a11_d00d_f00d);
    let bytes = |rng: &mut Rng, n: usize| -> Vec<u8> { (0..n).map(|_| rng.next() as u8).collect() };
    for round in 0..40 {
        let len = [0, 1, 127, 255, 256, 257, 384, 512, 1100][round % 9];
        let mut n = bytes(&mut rng, len);
        if let Some(last) = n.last_mut() {
            *last |= 1;
        }
        let e_len = (rng.next() % 10) as usize;
        let e = bytes(&mut rng, e_len);
        let Some(key) = PublicKey::from_components(&n, &[1, 0, 1]).or_else(|| PublicKey::from_components(&n, &e)) else {
            continue;
        };
        for sig_len in [0, len - 1, len, len + 1] {
            let sig = bytes(&mut rng, sig_len);
            for hash in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
                assert!(!key.verify_pkcs1v15(hash, b"m", &sig));
                assert!(!key.verify_pss(hash, b"m", &sig));
            }
        }
    }
}
