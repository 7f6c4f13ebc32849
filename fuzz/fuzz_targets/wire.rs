//! The proxy-wasm header-map wire format (`core::wire`), which the adapter parses from the
//! host (request headers read all at once, call answers) and writes for it (local replies,
//! calls).
//!
//! The input is read twice:
//! - as a header map from the host: `pairs` never panics, yields no more pairs than the
//!   bytes can hold, and what it yields serializes and parses back to the same pairs; the
//!   pairs are then the headers of a browser request on the `WEB` plan in the simulated host
//!   (the adapter reads a session plan's headers this way), non-UTF-8 made U+FFFD as there;
//! - as pairs to write: fields of `len` (one byte) then `len` bytes, alternately name and
//!   value (any bytes, NUL included); `serialize` then `pairs` gives them back.
#![no_main]

use envoy_oidc::core::testing::Headers;
use envoy_oidc::core::wire;
use libfuzzer_sys::fuzz_target;

mod common;
use common::Host;

type Pair<'a> = (&'a [u8], &'a [u8]);

/// `serialize` then `pairs` gives `pairs` back.
fn round_trip(pairs: &[Pair<'_>]) {
    let bytes = wire::serialize(pairs.iter().copied());
    let size: usize = 4 + pairs.iter().map(|(k, v)| 10 + k.len() + v.len()).sum::<usize>();
    assert_eq!(bytes.len(), size);
    let back: Vec<Pair<'_>> = wire::pairs(&bytes).collect();
    assert_eq!(back, pairs);
}

/// Length-prefixed fields, paired as (name, value).
fn fields(mut data: &[u8]) -> Vec<Pair<'_>> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let (field, rest) = rest.split_at(usize::from(len).min(rest.len()));
        out.push(field);
        data = rest;
    }
    out.chunks(2).map(|c| (c[0], c.get(1).copied().unwrap_or_default())).collect()
}

fuzz_target!(|data: &[u8]| {
    let pairs: Vec<Pair<'_>> = wire::pairs(data).collect();
    // Each pair takes 8 bytes of sizes and two NULs (the last may be cut off): a count that
    // lies cannot make the parser yield (or loop over) more than the bytes hold.
    if !pairs.is_empty() {
        assert!(10 * pairs.len() + 3 <= data.len(), "{} pairs from {} bytes", pairs.len(), data.len());
    }
    for (k, v) in &pairs {
        assert!(k.len() + v.len() <= data.len());
    }
    round_trip(&pairs);
    round_trip(&fields(data));

    if pairs.is_empty() {
        return;
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let headers = Headers { pairs: pairs.iter().map(|(k, v)| (text(k), text(v))).collect(), ..Headers::default() };
    common::WEB_WORLD.with(|w| {
        let mut host = Host::new(w, data.len() % 2 == 0);
        host.send(0, &headers, &[common::code_answer(), common::answer(200, "")]);
    });
});
