//! Request and error rates per route and backend over the last minute,
//! sampled from the request counters, for `status`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::table::Table;

/// How often counters are sampled, and how far back rates look.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
pub const WINDOW: Duration = Duration::from_secs(60);

type Key = (String, String);

struct Sample {
    at: Instant,
    /// (requests, errors) per (route, backend).
    counts: HashMap<Key, (u64, u64)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    pub requests_per_second: f64,
    /// Share of requests that were 5xx or got no response, 0..1.
    pub error_rate: f64,
}

#[derive(Default)]
pub struct Rates {
    samples: Mutex<VecDeque<Sample>>,
}

impl Rates {
    /// Records the current counters of every route and backend of `table`.
    pub fn sample(&self, table: &Table) {
        let counts = counts(table);
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        samples.push_back(Sample { at: now, counts });
        while samples.len() > 2 && samples.get(1).is_some_and(|s| now.duration_since(s.at) >= WINDOW) {
            samples.pop_front();
        }
    }

    /// Rates between the oldest sample in the window and the table's counters now.
    pub fn last_minute(&self, table: &Table) -> HashMap<Key, Rate> {
        let now = counts(table);
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let Some(oldest) = samples.front() else {
            return HashMap::new();
        };
        let secs = oldest.at.elapsed().as_secs_f64().max(1.0);
        now.into_iter()
            .map(|(key, (req, err))| {
                let (req0, err0) = oldest.counts.get(&key).copied().unwrap_or((0, 0));
                let (dreq, derr) = (req.saturating_sub(req0), err.saturating_sub(err0));
                let rate = Rate {
                    requests_per_second: dreq as f64 / secs,
                    error_rate: if dreq == 0 { 0.0 } else { derr as f64 / dreq as f64 },
                };
                (key, rate)
            })
            .collect()
    }
}

fn counts(table: &Table) -> HashMap<Key, (u64, u64)> {
    let mut out = HashMap::new();
    for (route, live) in table.config.routes.iter().zip(table.routes.iter()) {
        for (b, lb) in route.backends.iter().zip(live.backends.iter()) {
            out.insert((route.name.to_string(), b.spec.name.to_string()), lb.metrics.counts());
        }
    }
    out
}
