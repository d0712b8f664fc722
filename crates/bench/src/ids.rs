//! Record ids shaped like ULIDs (what a CloudEvent `id` typically is): 26 Crockford base32
//! characters, a 48-bit millisecond timestamp then 80 bits that are unique per appender and
//! sequence number. Cheap to make, unique within a run, and the same length as the real thing,
//! so the journal's dedup index sees realistic keys.

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A ULID-like id for operation `seq` of appender `appender`, stamped `millis`.
pub fn ulid_like(millis: u64, appender: u64, seq: u64) -> String {
    // 80 low bits: a mixed 16-bit appender tag and a mixed 64-bit sequence, so ids spread
    // evenly over any hash table they land in.
    let tag = (splitmix64(appender) & 0xffff) as u128;
    let value: u128 = ((millis as u128 & 0xffff_ffff_ffff) << 80)
        | (tag << 64)
        | splitmix64(seq ^ (appender << 48)) as u128;
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (25 - i);
        *slot = CROCKFORD[((value >> shift) & 31) as usize];
    }
    // Every byte is ASCII from CROCKFORD.
    String::from_utf8(out.to_vec()).expect("Crockford base32 is ASCII")
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_26_crockford_chars_and_unique() {
        let mut seen = HashSet::new();
        for a in 0..64 {
            for s in 0..1000 {
                let id = ulid_like(1_700_000_000_000, a, s);
                assert_eq!(id.len(), 26);
                assert!(id.bytes().all(|b| CROCKFORD.contains(&b)), "{id}");
                assert!(seen.insert(id));
            }
        }
    }
}
