//! The proxy-wasm wire format of a header map: a u32 count, then a (name length, value
//! length) u32 pair per header, then each name and value followed by a NUL, all
//! little-endian. Hosts hand request headers and call answers over in it, and take local
//! replies and calls in it. Parsing stops at the first inconsistency (never panics).

/// The pairs of a serialized header map.
pub fn pairs(b: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let u32_at = |at: usize| -> Option<usize> {
        let w: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(u32::from_le_bytes(w) as usize)
    };
    let count = u32_at(0).unwrap_or(0);
    let mut data = count.checked_mul(8).and_then(|n| n.checked_add(4)).unwrap_or(usize::MAX);
    (0..count).map_while(move |i| {
        let sizes = i.checked_mul(8)?.checked_add(4)?;
        let (k_len, v_len) = (u32_at(sizes)?, u32_at(sizes.checked_add(4)?)?);
        let k = b.get(data..data.checked_add(k_len)?)?;
        let v_at = data.checked_add(k_len)?.checked_add(1)?;
        let v = b.get(v_at..v_at.checked_add(v_len)?)?;
        data = v_at.checked_add(v_len)?.checked_add(1)?;
        Some((k, v))
    })
}

/// Serializes `pairs` (names and values are at most 4 GiB each: a header map is far
/// smaller; longer ones are cut to fit the u32 length).
pub fn serialize<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let count = pairs.clone().count();
    let size: usize = pairs.clone().map(|(k, v)| k.len() + v.len() + 10).sum::<usize>() + 4;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len32(count).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&len32(k.len()).to_le_bytes());
        out.extend_from_slice(&len32(v.len()).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h: Vec<(&[u8], &[u8])> = vec![(b":path", b"/a?b"), (b"authorization", b"Bearer x"), (b"empty", b"")];
        let bytes = serialize(h.iter().copied());
        assert_eq!(pairs(&bytes).collect::<Vec<_>>(), h);
        assert_eq!(pairs(&serialize(std::iter::empty())).count(), 0);
    }

    #[test]
    fn truncated_and_lying_maps_stop_without_panicking() {
        let bytes = serialize([(&b"a"[..], &b"1"[..]), (b"b", b"2")].into_iter());
        for cut in 0..bytes.len() {
            let _ = pairs(&bytes[..cut]).count();
        }
        // a count of 2^32-1 with nothing behind it
        assert_eq!(pairs(&[0xff, 0xff, 0xff, 0xff]).count(), 0);
        // sizes that point past the end
        let mut lying = bytes.clone();
        lying[4] = 0xff;
        assert_eq!(pairs(&lying).count(), 0);
    }
}
