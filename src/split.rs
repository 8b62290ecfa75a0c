//! Weighted, sticky, monotone splitting of a route's traffic.
//!
//! Every request gets a bucket in `0..BUCKETS`. A route's backends own
//! consecutive bucket ranges in the order the route lists them, sized by
//! their weights in basis points (1 bucket = 0.01%). Because the ranges are
//! consecutive and their order never changes, raising the weight of the last
//! backend only ever moves buckets toward it: a user already on it stays.
//!
//! Sticky requests take their bucket from [`sticky_bucket`], a keyed hash
//! that is part of the product's contract: identical on every replica and in
//! every version, so a fleet agrees on where a user goes without sharing state.

use siphasher::sip::SipHasher24;
use std::hash::Hasher;

/// The number of buckets: weights have two decimals of a percent.
pub const BUCKETS: u16 = 10_000;

/// SipHash-2-4 key for sticky hashing. Changing it would move every sticky
/// user at once, so it is fixed forever.
const STICKY_KEY: &[u8; 16] = b"cutover-sticky-1";

/// The bucket of a sticky value (cookie value, header value):
/// `SipHash-2-4(key = "cutover-sticky-1", value) mod 10000`, where the
/// 128-bit key is the 16 ASCII bytes read as two little-endian u64 words.
pub fn sticky_bucket(value: &[u8]) -> u16 {
    let mut hasher = SipHasher24::new_with_key(STICKY_KEY);
    hasher.write(value);
    (hasher.finish() % u64::from(BUCKETS)) as u16
}

/// A bucket for a request with no sticky value.
pub fn random_bucket() -> u16 {
    rand::random_range(0..BUCKETS)
}

/// Bucket ranges of a route's backends: backend `i` owns
/// `upper[i-1]..upper[i]` (with `upper[-1] = 0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    upper: Box<[u16]>,
}

impl Split {
    /// Builds the ranges from weights in basis points, which must sum to
    /// [`BUCKETS`] (the weight loader guarantees it).
    pub fn from_basis_points(weights: &[u16]) -> Split {
        let mut end = 0u16;
        let upper = weights
            .iter()
            .map(|w| {
                end = end.saturating_add(*w).min(BUCKETS);
                end
            })
            .collect();
        Split { upper }
    }

    /// The index of the backend that owns `bucket`.
    pub fn pick(&self, bucket: u16) -> usize {
        self.upper.iter().position(|&end| bucket < end).unwrap_or(self.upper.len() - 1)
    }

    /// Where a request whose bucket maps to `chosen` goes when `chosen` is
    /// unhealthy: another healthy backend, picked by the bucket's position in
    /// `chosen`'s range against the healthy backends' weights, so the share
    /// moves to the others in proportion and each user moves deterministically
    /// (and back, on recovery). Healthy backends with no weight share equally
    /// when every healthy backend has none. `None` when no other is healthy.
    pub fn failover(&self, bucket: u16, chosen: usize, healthy: impl Fn(usize) -> bool) -> Option<usize> {
        let candidates: Vec<(usize, u64)> = (0..self.upper.len())
            .filter(|&i| i != chosen && healthy(i))
            .map(|i| (i, self.range(i).len() as u64))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let weighted = candidates.iter().any(|(_, w)| *w > 0);
        let total: u64 = candidates.iter().map(|(_, w)| if weighted { *w } else { 1 }).sum();
        let range = self.range(chosen);
        let (offset, len) = if range.contains(&bucket) {
            (u64::from(bucket - range.start), range.len() as u64)
        } else {
            (u64::from(bucket), u64::from(BUCKETS))
        };
        let mut point = offset * total / len.max(1);
        for (i, w) in &candidates {
            let w = if weighted { *w } else { 1 };
            if point < w {
                return Some(*i);
            }
            point -= w;
        }
        candidates.last().map(|(i, _)| *i)
    }

    /// The `start..end` range of backend `index`.
    pub fn range(&self, index: usize) -> std::ops::Range<u16> {
        let start = if index == 0 { 0 } else { self.upper[index - 1] };
        start..self.upper[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_bucket_is_a_fixed_function() {
        // These values are part of the contract: a change here moves users.
        assert_eq!(sticky_bucket(b"alice"), sticky_bucket(b"alice"));
        let known: Vec<u16> = [b"alice".as_slice(), b"bob", b"Bearer abc"]
            .iter()
            .map(|v| sticky_bucket(v))
            .collect();
        assert_eq!(known, STICKY_VECTOR);
    }

    const STICKY_VECTOR: [u16; 3] = [8641, 151, 6017];

    #[test]
    fn ranges_are_consecutive_in_listed_order() {
        let split = Split::from_basis_points(&[9000, 1000]);
        assert_eq!(split.range(0), 0..9000);
        assert_eq!(split.range(1), 9000..10000);
        assert_eq!(split.pick(0), 0);
        assert_eq!(split.pick(8999), 0);
        assert_eq!(split.pick(9000), 1);
        assert_eq!(split.pick(9999), 1);
    }

    #[test]
    fn zero_weight_backends_get_nothing() {
        let split = Split::from_basis_points(&[0, 10000]);
        assert!((0..BUCKETS).all(|b| split.pick(b) == 1));
        let split = Split::from_basis_points(&[10000, 0]);
        assert!((0..BUCKETS).all(|b| split.pick(b) == 0));
    }

    #[test]
    fn an_unhealthy_backends_share_goes_to_the_others_in_proportion() {
        let split = Split::from_basis_points(&[5000, 3000, 2000]);
        let mut to = [0u32; 3];
        for b in split.range(0) {
            to[split.failover(b, 0, |i| i != 0).unwrap()] += 1;
        }
        assert_eq!(to, [0, 3000, 2000]);
        // Users of healthy backends are not asked to move at all; all down: no answer.
        assert_eq!(split.failover(100, 0, |_| false), None);
        // Only zero-weight backends left: they share equally.
        let split = Split::from_basis_points(&[10000, 0, 0]);
        let mut to = [0u32; 3];
        for b in 0..BUCKETS {
            to[split.failover(b, 0, |i| i != 0).unwrap()] += 1;
        }
        assert_eq!(to, [0, 5000, 5000]);
    }

    #[test]
    fn raising_the_last_backend_never_moves_its_users_away() {
        for (from, to) in [(1000u16, 5000u16), (0, 1), (5000, 10000), (9999, 10000)] {
            let before = Split::from_basis_points(&[BUCKETS - from, from]);
            let after = Split::from_basis_points(&[BUCKETS - to, to]);
            for b in 0..BUCKETS {
                if before.pick(b) == 1 {
                    assert_eq!(after.pick(b), 1, "bucket {b} moved back at {from}->{to}");
                }
            }
        }
    }
}
