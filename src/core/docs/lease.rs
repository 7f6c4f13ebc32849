//! What the document protocol keeps in shared data: each document as a [`Record`] (when it
//! was fetched, then the raw bytes), and a [`Lease`] per document that the workers compete
//! for with compare-and-swap.

/// How long a shared document is used before one worker refreshes it.
pub const REFRESH_AFTER_MS: u64 = 3_600_000;
/// First retry delay when the IdP is down; doubles up to [`MAX_BACKOFF_MS`].
pub const MIN_BACKOFF_MS: u64 = 500;
pub const MAX_BACKOFF_MS: u64 = 30_000;

/// A document in shared data: when it was fetched, then the raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub fetched_at_ms: u64,
    pub body: &'a [u8],
}

impl<'a> Record<'a> {
    pub fn encode(fetched_at_ms: u64, body: &[u8]) -> Vec<u8> {
        let mut out = format!("{fetched_at_ms}\n").into_bytes();
        out.extend_from_slice(body);
        out
    }

    pub fn decode(bytes: &'a [u8]) -> Option<Record<'a>> {
        let nl = bytes.iter().position(|b| *b == b'\n')?;
        let (head, body) = (bytes.get(..nl)?, bytes.get(nl + 1..)?);
        let fetched_at_ms = std::str::from_utf8(head).ok()?.parse().ok()?;
        Some(Record { fetched_at_ms, body })
    }

    pub fn stale(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.fetched_at_ms) >= REFRESH_AFTER_MS
    }
}

/// The fetch lease: who may fetch a document, and not before when.
///
/// A holder that starts a fetch writes `fetching` until twice the call timeout (a holder
/// that died mid-fetch frees it soon); a success holds it until the document is stale; a
/// failure holds it until the backoff has passed, so retries are spaced for the whole
/// process, not per worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub holder: u64,
    pub until_ms: u64,
    /// Consecutive failures so far (sets the next backoff).
    pub failures: u32,
    /// A fetch is under way.
    pub fetching: bool,
}

/// What a lease says about fetching now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Nobody holds it (absent, unreadable or expired).
    Free,
    /// A fetch is under way.
    Fetching,
    /// The last fetch failed; nobody fetches before `until_ms`.
    Backoff { until_ms: u64 },
    /// The last fetch succeeded; the document is fresh until `until_ms`.
    Fresh { until_ms: u64 },
}

impl Lease {
    /// A lease nobody holds (written once so that the next write can carry a CAS).
    pub const FREE: Lease = Lease { holder: 0, until_ms: 0, failures: 0, fetching: false };

    pub fn encode(&self) -> Vec<u8> {
        format!("{} {} {} {}", self.holder, self.until_ms, self.failures, u8::from(self.fetching)).into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<Lease> {
        let s = std::str::from_utf8(bytes).ok()?;
        let mut it = s.split(' ');
        let lease = Lease {
            holder: it.next()?.parse().ok()?,
            until_ms: it.next()?.parse().ok()?,
            failures: it.next()?.parse().ok()?,
            fetching: match it.next()? {
                "1" => true,
                "0" => false,
                _ => return None,
            },
        };
        it.next().is_none().then_some(lease)
    }

    /// The state of the lease stored as `current` at `now_ms`.
    pub fn state(current: Option<&Lease>, now_ms: u64) -> LeaseState {
        match current {
            Some(l) if now_ms < l.until_ms && l.fetching => LeaseState::Fetching,
            Some(l) if now_ms < l.until_ms && l.failures > 0 => LeaseState::Backoff { until_ms: l.until_ms },
            Some(l) if now_ms < l.until_ms => LeaseState::Fresh { until_ms: l.until_ms },
            _ => LeaseState::Free,
        }
    }

    /// The lease `me` writes to start a fetch, keeping the failure count of the old one.
    pub fn take(current: Option<&Lease>, me: u64, now_ms: u64, timeout_ms: u64) -> Lease {
        let failures = current.map(|l| l.failures).unwrap_or(0);
        Lease { holder: me, until_ms: now_ms.saturating_add(timeout_ms.saturating_mul(2)), failures, fetching: true }
    }

    /// After a failed fetch: hold the lease until the backoff has passed.
    pub fn failed(self, now_ms: u64) -> Lease {
        let failures = self.failures.saturating_add(1);
        let backoff = MIN_BACKOFF_MS.saturating_mul(1u64 << failures.saturating_sub(1).min(16)).min(MAX_BACKOFF_MS);
        Lease { holder: self.holder, until_ms: now_ms.saturating_add(backoff), failures, fetching: false }
    }

    /// After a successful fetch: nobody needs to fetch until the document is stale.
    pub fn succeeded(self, now_ms: u64) -> Lease {
        Lease { holder: self.holder, until_ms: now_ms.saturating_add(REFRESH_AFTER_MS), failures: 0, fetching: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let bytes = Record::encode(42, b"{\"a\":1}\n");
        let r = Record::decode(&bytes).unwrap();
        assert_eq!((r.fetched_at_ms, r.body), (42, &b"{\"a\":1}\n"[..]));
        assert!(Record::decode(b"nonsense").is_none());
        assert!(!r.stale(42 + REFRESH_AFTER_MS - 1));
        assert!(r.stale(42 + REFRESH_AFTER_MS));
    }

    #[test]
    fn lease_states_and_backoff() {
        assert_eq!(Lease::state(None, 0), LeaseState::Free);
        let l = Lease::take(None, 7, 1000, 100);
        assert_eq!(Lease::state(Some(&l), 1100), LeaseState::Fetching);
        assert_eq!(Lease::state(Some(&l), 1200), LeaseState::Free, "a holder that died frees it");
        let f1 = l.failed(2000);
        assert_eq!(Lease::state(Some(&f1), 2100), LeaseState::Backoff { until_ms: 2500 });
        let again = Lease::take(Some(&f1), 8, 2500, 100);
        assert_eq!(again.failures, 1);
        assert_eq!(again.failed(3000).until_ms, 4000);
        let mut l = again;
        for _ in 0..40 {
            l = l.failed(0);
        }
        assert_eq!(l.until_ms, MAX_BACKOFF_MS);
        let ok = l.succeeded(10);
        assert_eq!(ok.failures, 0);
        assert_eq!(Lease::state(Some(&ok), 11), LeaseState::Fresh { until_ms: 10 + REFRESH_AFTER_MS });
        assert_eq!(Lease::decode(&ok.encode()), Some(ok));
        assert_eq!(Lease::decode(b"1 2 3"), None);
        assert_eq!(Lease::decode(b"1 2 3 x"), None);
        assert_eq!(Lease::decode(&Lease::FREE.encode()), Some(Lease::FREE));
    }
}
