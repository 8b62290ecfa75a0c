//! The watch on a client that takes none of a response (`send_timeout`).

use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use super::IoWatch;
use crate::upstream::LazyTimer;

/// Ends a connection whose client takes none of a response for
/// `send_timeout`: a slow reader would otherwise hold its backend
/// connection (and a worker of a synchronous application server) for as
/// long as it likes. Its timer is made only once a write has to wait, so a
/// client that reads costs none. A client that takes bytes the kernel
/// already holds is making progress too, though no write of ours is: a
/// send buffer of megabytes drains for a long time before the socket is
/// writable again.
pub(super) struct SendWatch {
    limit: Duration,
    timer: LazyTimer,
    /// Writes done, and bytes the client had yet to take, when the timer was last armed.
    writes_seen: u64,
    unsent_seen: Option<u32>,
}

impl SendWatch {
    pub(super) fn new(limit: Duration) -> SendWatch {
        SendWatch {
            limit,
            timer: LazyTimer::default(),
            writes_seen: 0,
            unsent_seen: None,
        }
    }

    /// Ready once writes have waited for the limit while the client took nothing.
    pub(super) fn poll(&mut self, watch: &IoWatch, cx: &mut Context<'_>) -> Poll<()> {
        if self.limit.is_zero() || !watch.write_blocked.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        let writes = watch.writes.load(Ordering::Relaxed);
        if !self.timer.is_armed() || writes != self.writes_seen {
            self.writes_seen = writes;
            self.arm(watch.unsent());
        }
        while self.timer.poll_expired(cx).is_ready() {
            let unsent = watch.unsent();
            match (unsent, self.unsent_seen) {
                (Some(now), Some(before)) if now < before => self.arm(unsent),
                _ => return Poll::Ready(()),
            }
        }
        Poll::Pending
    }

    fn arm(&mut self, unsent: Option<u32>) {
        self.unsent_seen = unsent;
        self.timer.arm(tokio::time::Instant::now() + self.limit);
    }
}
