//! The process's clocks, read in one place.
//!
//! Windows, ejections and the like count on a monotonic clock that starts
//! with the process (it never jumps when the wall clock is set); times shown
//! to people and written to files are UTC wall-clock time.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Time since the process clock started (at its first reading).
fn elapsed() -> Duration {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed()
}

/// Whole seconds on the process clock.
pub fn now_secs() -> u64 {
    elapsed().as_secs()
}

/// Milliseconds on the process clock.
pub fn now_ms() -> u64 {
    elapsed().as_millis() as u64
}

/// Now, as RFC 3339 UTC (`2026-11-22T01:51:31.5Z`).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Today's date, UTC.
pub fn today_utc() -> time::Date {
    time::OffsetDateTime::now_utc().date()
}
