//! The stable partition hash.
//!
//! `partition = (murmur2(key) & 0x7fff_ffff) % partitions`, with Kafka's murmur2 (seed
//! `0x9747b28c`) over the key's bytes. This is exactly Kafka's default partitioner, so any
//! client library that can place a key on a Kafka partition places it on the same Switchyard
//! partition. The formula is part of the public contract: changing it moves keys between
//! partitions and breaks per-key ordering of existing topics.

/// Kafka's 32-bit murmur2 hash.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of `key` in a topic of `partitions` partitions (`partitions` ≥ 1).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn matches_kafka_murmur2() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input) as i32,
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn partition_is_stable_and_in_range() {
        for n in 1..=16 {
            for k in 0..200 {
                let key = format!("order-{k}");
                let p = partition_for_key(key.as_bytes(), n);
                assert!(p < n);
                assert_eq!(p, partition_for_key(key.as_bytes(), n));
            }
        }
        // Spot value: Kafka places "order-1" on this partition of 12.
        assert_eq!(
            partition_for_key(b"order-1", 12),
            (murmur2(b"order-1") & 0x7fff_ffff) % 12
        );
    }
}
