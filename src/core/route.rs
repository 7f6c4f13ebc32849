//! Which policy a request's route asks for, from what the host says about the route.
//!
//! Envoy hands a route's metadata over as a serialized `envoy.config.core.v3.Metadata`
//! (the `xds.route_metadata` property). Only one value matters here:
//! `filter_metadata["envoy-oidc"].fields["policy"]`, a string. This module reads it from
//! the protobuf wire format directly (a few nested length-delimited fields), never panics,
//! and refuses what does not parse.
//!
//! - `Metadata`: field 1 `filter_metadata`, a map `string → google.protobuf.Struct` (each
//!   entry a message: 1 key, 2 value);
//! - `Struct`: field 1 `fields`, a map `string → google.protobuf.Value`;
//! - `Value`: field 3 `string_value`.

/// The metadata namespace the filter reads.
pub const NAMESPACE: &str = "envoy-oidc";
/// The key under it that names the policy.
pub const KEY: &str = "policy";

/// One protobuf field: its number, and its bytes when length-delimited.
struct Field<'a> {
    number: u64,
    bytes: Option<&'a [u8]>,
}

/// The fields of a message, stopping at the first one that does not parse.
fn fields(mut b: &[u8]) -> impl Iterator<Item = Field<'_>> {
    std::iter::from_fn(move || {
        let key = varint(&mut b)?;
        let (number, wire) = (key >> 3, key & 7);
        let bytes = match wire {
            0 => {
                varint(&mut b)?;
                None
            }
            1 => {
                b = b.get(8..)?;
                None
            }
            2 => {
                let len = usize::try_from(varint(&mut b)?).ok()?;
                let (v, rest) = (b.get(..len)?, b.get(len..)?);
                b = rest;
                Some(v)
            }
            5 => {
                b = b.get(4..)?;
                None
            }
            _ => return None,
        };
        Some(Field { number, bytes })
    })
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The value of `key` in a protobuf map entry list (`field` repeated, entries 1 key, 2 value).
fn map_get<'a>(message: &'a [u8], field: u64, key: &str) -> Option<&'a [u8]> {
    fields(message).filter(|f| f.number == field).filter_map(|f| f.bytes).find_map(|entry| {
        let mut k = None;
        let mut v = None;
        for f in fields(entry) {
            match f.number {
                1 => k = f.bytes,
                2 => v = f.bytes,
                _ => {}
            }
        }
        (k == Some(key.as_bytes())).then_some(v.unwrap_or(&[]))
    })
}

/// The policy name in a serialized `Metadata`, if it carries one.
pub fn policy_in_metadata(metadata: &[u8]) -> Option<&str> {
    let ns = map_get(metadata, 1, NAMESPACE)?;
    let value = map_get(ns, 1, KEY)?;
    let s = fields(value).filter(|f| f.number == 3).find_map(|f| f.bytes)?;
    std::str::from_utf8(s).ok()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    fn ld(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3 | 2) as u8];
        let mut len = bytes.len();
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            out.push(if len > 0 { b | 0x80 } else { b });
            if len == 0 {
                break;
            }
        }
        out.extend_from_slice(bytes);
        out
    }

    fn entry(key: &str, value: &[u8]) -> Vec<u8> {
        [ld(1, key.as_bytes()), ld(2, value)].concat()
    }

    /// A `Metadata` with `filter_metadata[ns].fields[key] = string_value`.
    pub fn metadata(ns: &str, key: &str, value: &str) -> Vec<u8> {
        let value = ld(3, value.as_bytes());
        let strukt = ld(1, &entry(key, &value));
        ld(1, &entry(ns, &strukt))
    }

    #[test]
    fn reads_the_policy_and_nothing_else() {
        assert_eq!(policy_in_metadata(&metadata("envoy-oidc", "policy", "api")), Some("api"));
        assert_eq!(policy_in_metadata(&metadata("envoy.lb", "policy", "api")), None);
        assert_eq!(policy_in_metadata(&metadata("envoy-oidc", "other", "api")), None);
        // other namespaces and keys around it
        let both = [metadata("envoy.lb", "canary", "x"), metadata("envoy-oidc", "policy", "partner")].concat();
        assert_eq!(policy_in_metadata(&both), Some("partner"));
        assert_eq!(policy_in_metadata(&[]), None);
        // a number_value (field 2, fixed64) is not a name
        let number = ld(1, &entry("envoy-oidc", &ld(1, &entry("policy", &[0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]))));
        assert_eq!(policy_in_metadata(&number), None);
    }

    #[test]
    fn truncated_and_hostile_bytes_are_no_policy() {
        let good = metadata("envoy-oidc", "policy", "api");
        for cut in 0..good.len() {
            assert_eq!(policy_in_metadata(&good[..cut]), None, "{cut}");
        }
        assert_eq!(policy_in_metadata(&[0xff; 20]), None);
        assert_eq!(policy_in_metadata(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), None);
        assert_eq!(policy_in_metadata(&[0x0f]), None, "wire type 7");
    }
}
