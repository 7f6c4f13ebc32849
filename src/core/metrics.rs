//! What the filter counts for Envoy's stats, as plain numbers.
//!
//! The core counts into [`Metrics`] (array slots, no host calls on the request path); the
//! adapter defines one Envoy metric per name in [`Metrics::names`] and publishes the
//! accumulated deltas on its timer. Every name starts with [`PREFIX`].

use crate::core::idp::{IdpResponse, Purpose};
use crate::core::method::AuthMethod;

/// The common prefix of every metric (Envoy shows them under `wasmcustom.`, in Prometheus
/// as `oidc_…`).
pub const PREFIX: &str = "oidc";

/// What decided a request: an auth method, a logout, or nothing (no credential found).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    Auth(AuthMethod),
    Logout,
    #[default]
    None,
}

impl Method {
    fn index(self) -> usize {
        match self {
            Method::Auth(m) => AuthMethod::SUPPORTED.iter().position(|s| *s == m).unwrap_or(0),
            Method::Logout => AuthMethod::SUPPORTED.len(),
            Method::None => AuthMethod::SUPPORTED.len() + 1,
        }
    }

    fn names() -> impl Iterator<Item = &'static str> {
        AuthMethod::SUPPORTED.iter().map(|m| m.name()).chain(["logout", "none"])
    }
}

const METHODS: usize = AuthMethod::SUPPORTED.len() + 2;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded upstream (or a logout answered).
    Allowed,
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 302 (login or logout redirect, back to the original URL after a login).
    Redirected,
    /// 5xx: the IdP failed or timed out.
    Failed,
}

const OUTCOMES: [&str; 5] = ["allowed", "unauthorized", "forbidden", "redirected", "failed"];

impl Outcome {
    /// The outcome of a local answer with `status`.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            401 => Outcome::Unauthorized,
            403 => Outcome::Forbidden,
            300..=399 => Outcome::Redirected,
            s if s >= 500 => Outcome::Failed,
            400..=499 => Outcome::Unauthorized,
            _ => Outcome::Allowed,
        }
    }
}

const ENDPOINTS: [&str; 6] = ["discovery", "jwks", "token", "introspection", "revocation", "userinfo"];
const RESULTS: [&str; 7] = ["2xx", "3xx", "4xx", "5xx", "timeout", "tls_failure", "connect_failure"];
/// The per-worker caches, in the order [`Metrics::cache`] takes them.
pub const CACHES: [&str; 4] = ["grants", "jwts", "introspections", "sessions"];

fn endpoint(p: Purpose) -> usize {
    match p {
        Purpose::Discovery => 0,
        Purpose::Jwks => 1,
        Purpose::Token => 2,
        Purpose::Introspection => 3,
        Purpose::Revocation => 4,
        Purpose::Userinfo => 5,
    }
}

/// One metric: its name and whether it is a histogram (else a counter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub name: String,
    pub histogram: bool,
}

const REQUESTS: usize = 0;
const IDP_CALLS: usize = REQUESTS + METHODS * OUTCOMES.len();
const CACHE: usize = IDP_CALLS + ENDPOINTS.len() * RESULTS.len();
const JWKS_REFRESHES: usize = CACHE + CACHES.len() * 2;
const COUNTERS: usize = JWKS_REFRESHES + 1;
/// Histograms come after the counters, one per endpoint.
const LATENCY: usize = COUNTERS;

/// Request counters of one policy.
const PER_POLICY: usize = METHODS * OUTCOMES.len();
/// After the histograms: each named policy's request counters, then `policy.unknown`.
const NAMED: usize = LATENCY + ENDPOINTS.len();

/// Counts since the last publication.
#[derive(Debug, Clone)]
pub struct Metrics {
    counters: [u64; COUNTERS],
    /// Request counters of the named policies (the default policy's are in `counters`),
    /// as many as [`Metrics::names`] was given.
    named: Vec<[u64; PER_POLICY]>,
    /// Requests whose route named a policy the filter does not have.
    unknown_policy: u64,
    /// (endpoint, milliseconds) samples.
    latencies: Vec<(u8, u64)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::for_policies(0)
    }
}

/// Samples kept between publications; beyond it they are dropped (counters are not).
const MAX_SAMPLES: usize = 4096;

impl Metrics {
    /// Counters for the default policy and `named` named ones.
    pub fn for_policies(named: usize) -> Self {
        Metrics { counters: [0; COUNTERS], named: vec![[0; PER_POLICY]; named], unknown_policy: 0, latencies: Vec::new() }
    }

    /// Every metric, indexed as [`Metrics::drain`] reports them; `policies` are the names
    /// of the named policies (their request counters are `oidc.policy.<name>.requests.…`).
    pub fn names(policies: &[&str]) -> Vec<Name> {
        let counter = |name: String| Name { name, histogram: false };
        let mut v = Vec::with_capacity(NAMED + policies.len() * PER_POLICY + 1);
        for m in Method::names() {
            for o in OUTCOMES {
                v.push(counter(format!("{PREFIX}.requests.{m}.{o}")));
            }
        }
        for e in ENDPOINTS {
            for r in RESULTS {
                v.push(counter(format!("{PREFIX}.idp.{e}.{r}")));
            }
        }
        for c in CACHES {
            v.push(counter(format!("{PREFIX}.cache.{c}.hit")));
            v.push(counter(format!("{PREFIX}.cache.{c}.miss")));
        }
        v.push(counter(format!("{PREFIX}.jwks.refreshes")));
        for e in ENDPOINTS {
            v.push(Name { name: format!("{PREFIX}.idp.{e}.latency_ms"), histogram: true });
        }
        for p in policies {
            for m in Method::names() {
                for o in OUTCOMES {
                    v.push(counter(format!("{PREFIX}.policy.{p}.requests.{m}.{o}")));
                }
            }
        }
        v.push(counter(format!("{PREFIX}.policy.unknown")));
        v
    }

    /// A request of the default policy ended.
    pub fn request(&mut self, method: Method, outcome: Outcome) {
        self.request_of(0, method, outcome);
    }

    /// A request of policy `policy` (0: the default, `i`: the `i`th named one) ended.
    pub fn request_of(&mut self, policy: usize, method: Method, outcome: Outcome) {
        let slot = method.index() * OUTCOMES.len() + outcome as usize;
        let Some(i) = policy.checked_sub(1) else { return self.bump(REQUESTS + slot, 1) };
        if let Some(c) = self.named.get_mut(i).and_then(|block| block.get_mut(slot)) {
            *c = c.saturating_add(1);
        }
    }

    /// A request's route named a policy the filter does not have.
    pub fn unknown_policy(&mut self) {
        self.unknown_policy = self.unknown_policy.saturating_add(1);
    }

    /// An IdP call was answered (or failed) after `resp.elapsed_ms`.
    pub fn idp_call(&mut self, purpose: Purpose, resp: &IdpResponse, timeout_ms: u64) {
        use crate::core::idp::Failure;
        let result = match resp.failure(timeout_ms) {
            Some(Failure::Timeout { .. }) => 4,
            Some(Failure::Untrusted | Failure::Tls(_)) => 5,
            Some(Failure::Refused(_) | Failure::Reset | Failure::NoEndpoint) => 6,
            Some(Failure::ServerError(_)) => 3,
            None => match resp.status.unwrap_or(0) {
                200..=299 => 0,
                300..=399 => 1,
                _ => 2,
            },
        };
        let e = endpoint(purpose);
        self.bump(IDP_CALLS + e * RESULTS.len() + result, 1);
        if self.latencies.len() < MAX_SAMPLES {
            self.latencies.push((e as u8, resp.elapsed_ms));
        }
    }

    /// Hits and misses of cache `index` (see [`CACHES`]).
    pub fn cache(&mut self, index: usize, hits: u64, misses: u64) {
        self.bump(CACHE + index * 2, hits);
        self.bump(CACHE + index * 2 + 1, misses);
    }

    /// A JWKS fetch was started (first load, hourly refresh or unknown `kid`).
    pub fn jwks_refresh(&mut self) {
        self.bump(JWKS_REFRESHES, 1);
    }

    fn bump(&mut self, slot: usize, by: u64) {
        if let Some(c) = self.counters.get_mut(slot) {
            *c = c.saturating_add(by);
        }
    }

    /// Hands every non-zero counter delta (index into [`Metrics::names`], delta) and every
    /// latency sample (index, value) to `publish`, and starts counting from zero again.
    pub fn drain(&mut self, mut publish: impl FnMut(usize, u64)) {
        for (i, c) in self.counters.iter_mut().enumerate() {
            if *c != 0 {
                publish(i, std::mem::take(c));
            }
        }
        for (e, ms) in self.latencies.drain(..) {
            publish(LATENCY + e as usize, ms);
        }
        for (p, block) in self.named.iter_mut().enumerate() {
            for (i, c) in block.iter_mut().enumerate() {
                if *c != 0 {
                    publish(NAMED + p * PER_POLICY + i, std::mem::take(c));
                }
            }
        }
        if self.unknown_policy != 0 {
            publish(NAMED + self.named.len() * PER_POLICY, std::mem::take(&mut self.unknown_policy));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(m: &mut Metrics) -> Vec<(String, u64)> {
        let names = Metrics::names(&[]);
        let mut out = Vec::new();
        m.drain(|i, v| out.push((names[i].name.clone(), v)));
        out
    }

    #[test]
    fn counts_land_on_their_names_and_start_again() {
        let mut m = Metrics::default();
        m.request(Method::Auth(AuthMethod::Bearer), Outcome::Allowed);
        m.request(Method::Auth(AuthMethod::Bearer), Outcome::Allowed);
        m.request(Method::None, Outcome::Unauthorized);
        m.request(Method::Logout, Outcome::Failed);
        m.idp_call(Purpose::Token, &IdpResponse { status: Some(200), body: vec![], elapsed_ms: 12 }, 1000);
        m.idp_call(Purpose::Userinfo, &IdpResponse { status: None, body: vec![], elapsed_ms: 1000 }, 1000);
        m.cache(3, 5, 1);
        m.jwks_refresh();
        let got = drained(&mut m);
        let want: Vec<(String, u64)> = [
            ("oidc.requests.bearer.allowed", 2),
            ("oidc.requests.logout.failed", 1),
            ("oidc.requests.none.unauthorized", 1),
            ("oidc.idp.token.2xx", 1),
            ("oidc.idp.userinfo.timeout", 1),
            ("oidc.cache.sessions.hit", 5),
            ("oidc.cache.sessions.miss", 1),
            ("oidc.jwks.refreshes", 1),
            ("oidc.idp.token.latency_ms", 12),
            ("oidc.idp.userinfo.latency_ms", 1000),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), *v))
        .collect();
        assert_eq!(got, want);
        assert!(drained(&mut m).is_empty());
    }

    #[test]
    fn names_are_unique_and_histograms_last() {
        let names = Metrics::names(&[]);
        let set: std::collections::HashSet<_> = names.iter().map(|n| &n.name).collect();
        assert_eq!(set.len(), names.len());
        assert_eq!(names.iter().filter(|n| n.histogram).count(), ENDPOINTS.len());
        assert_eq!(names.last().map(|n| n.name.as_str()), Some("oidc.policy.unknown"));
        assert!(names.iter().all(|n| n.name.starts_with("oidc.")));
    }

    #[test]
    fn named_policies_count_apart() {
        let names = Metrics::names(&["api", "app"]);
        let mut m = Metrics::for_policies(2);
        m.request_of(0, Method::Auth(AuthMethod::Bearer), Outcome::Allowed);
        m.request_of(2, Method::Auth(AuthMethod::Session), Outcome::Redirected);
        m.request_of(9, Method::None, Outcome::Failed); // no such policy: not counted
        m.unknown_policy();
        let mut got = Vec::new();
        m.drain(|i, v| got.push((names[i].name.clone(), v)));
        assert_eq!(
            got,
            vec![
                ("oidc.requests.bearer.allowed".to_string(), 1),
                ("oidc.policy.app.requests.session.redirected".to_string(), 1),
                ("oidc.policy.unknown".to_string(), 1)
            ]
        );
    }

    #[test]
    fn outcomes_of_statuses() {
        assert_eq!(Outcome::of_status(302), Outcome::Redirected);
        assert_eq!(Outcome::of_status(401), Outcome::Unauthorized);
        assert_eq!(Outcome::of_status(403), Outcome::Forbidden);
        assert_eq!(Outcome::of_status(502), Outcome::Failed);
        assert_eq!(Outcome::of_status(200), Outcome::Allowed);
    }
}
