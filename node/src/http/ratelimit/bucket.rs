//! Token buckets keyed by user or address, with bounded memory.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::settings::Limit;

/// Most keys one map keeps. Past this the fullest bucket is dropped for each new key: a full
/// bucket carries no information, and a drained one is what stops an abuser.
const MAX_KEYS: usize = 65_536;
/// Buckets that have refilled are swept when the map first reaches this size, then each time
/// it doubles from what the last sweep left.
const FIRST_SWEEP: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Inner<K> {
    buckets: HashMap<K, Bucket>,
    next_sweep: usize,
}

/// One limit applied separately to every key.
pub struct KeyedBuckets<K> {
    limit: Limit,
    inner: Mutex<Inner<K>>,
}

impl<K: Hash + Eq + Clone> KeyedBuckets<K> {
    pub fn new(limit: Limit) -> Self {
        Self { limit, inner: Mutex::new(Inner { buckets: HashMap::new(), next_sweep: FIRST_SWEEP }) }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst))
    }

    /// Takes one token from `key`'s bucket, or says how long until one is there.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means another request panicked mid-update; the counts are
        // still usable.
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tokens = match inner.buckets.get(key) {
            Some(bucket) => self.refilled(bucket, now),
            None => {
                self.make_room(&mut inner, now);
                f64::from(self.limit.burst)
            }
        };
        if tokens >= 1.0 {
            inner.buckets.insert(key.clone(), Bucket { tokens: tokens - 1.0, at: now });
            Ok(())
        } else {
            inner.buckets.insert(key.clone(), Bucket { tokens, at: now });
            Err(Duration::from_secs_f64((1.0 - tokens) / self.limit.per_second))
        }
    }

    /// Gives back a token taken for an action that turned out not to count.
    pub fn refund(&self, key: &K, now: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let refilled = inner.buckets.get(key).map(|b| self.refilled(b, now));
        if let Some(tokens) = refilled {
            let tokens = (tokens + 1.0).min(f64::from(self.limit.burst));
            inner.buckets.insert(key.clone(), Bucket { tokens, at: now });
        }
    }

    fn make_room(&self, inner: &mut Inner<K>, now: Instant) {
        let burst = f64::from(self.limit.burst);
        if inner.buckets.len() >= inner.next_sweep {
            inner.buckets.retain(|_, b| self.refilled(b, now) < burst);
            inner.next_sweep = (inner.buckets.len() * 2).max(FIRST_SWEEP);
            if inner.buckets.capacity() > 4 * inner.buckets.len().max(FIRST_SWEEP) {
                inner.buckets.shrink_to_fit();
            }
        }
        if inner.buckets.len() >= MAX_KEYS {
            let fullest = inner
                .buckets
                .iter()
                .max_by(|a, b| self.refilled(a.1, now).total_cmp(&self.refilled(b.1, now)))
                .map(|(k, _)| k.clone());
            if let Some(k) = fullest {
                inner.buckets.remove(&k);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.buckets.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_refills_at_its_rate() {
        let buckets = KeyedBuckets::new(Limit { burst: 3, per_second: 2.0 });
        let t0 = Instant::now();
        for _ in 0..3 {
            buckets.take(&"a", t0).unwrap();
        }
        let wait = buckets.take(&"a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Other keys are unaffected.
        buckets.take(&"b", t0).unwrap();
        buckets.take(&"a", t0 + Duration::from_millis(500)).unwrap();
        assert!(buckets.take(&"a", t0 + Duration::from_millis(600)).is_err());
        // A refund gives a token back, never above the burst.
        buckets.refund(&"a", t0 + Duration::from_millis(600));
        buckets.take(&"a", t0 + Duration::from_millis(600)).unwrap();
    }

    #[test]
    fn refilled_buckets_are_swept_and_the_map_stays_bounded() {
        let buckets = KeyedBuckets::new(Limit { burst: 2, per_second: 1.0 });
        let t0 = Instant::now();
        for i in 0..FIRST_SWEEP {
            buckets.take(&i, t0).unwrap();
        }
        assert_eq!(buckets.len(), FIRST_SWEEP);
        // A second later every bucket is full again: the next new key sweeps them out.
        buckets.take(&usize::MAX, t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(buckets.len(), 1);
        // Drained buckets are kept, up to the cap.
        for i in 0..MAX_KEYS + 10 {
            buckets.take(&i, t0 + Duration::from_secs(1)).unwrap();
        }
        assert!(buckets.len() <= MAX_KEYS, "{}", buckets.len());
    }
}
