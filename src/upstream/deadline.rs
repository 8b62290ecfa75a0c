//! Deadlines on futures pinned where they were made, and timers made lazily.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

/// Polls `work` until it is done, or `None` once `limit` has passed.
///
/// Unlike `tokio::time::timeout`, it takes the future pinned where it was
/// made instead of by value: an exchange future is most of a kilobyte, and
/// moving it into a wrapper copies it once more per request. tower's
/// `Timeout` layer would cost the same move and more: it wraps a `Service`,
/// whose future must be a named type, and the future of hyper's
/// `try_send_request` can only be named boxed (one allocation per request);
/// its error is a `BoxError`, where ours is a typed
/// [`Failure`](super::Failure).
pub async fn within<F: Future>(limit: Duration, mut work: Pin<&mut F>) -> Option<F::Output> {
    let mut deadline = pin!(tokio::time::sleep(limit));
    poll_fn(|cx| {
        if let Poll::Ready(done) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(done));
        }
        deadline.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// A timer made the first time it is armed and reused after: the watches
/// on bodies and connections that stall arm one only once something has to
/// wait, so what flows freely costs no timer.
#[derive(Default)]
pub struct LazyTimer(Option<Pin<Box<tokio::time::Sleep>>>);

impl LazyTimer {
    /// Sets the deadline, making the timer if there is none yet.
    pub fn arm(&mut self, deadline: tokio::time::Instant) {
        match &mut self.0 {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.0 = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    pub fn is_armed(&self) -> bool {
        self.0.is_some()
    }

    /// Ready once the deadline has passed; never while it was never armed.
    pub fn poll_expired(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        match &mut self.0 {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// Notices what sends nothing for `limit`: a backend's body, a tunnel.
/// Armed only once something has to wait, so what flows freely costs no
/// timer; then it ticks every quarter of the limit (a stall is noticed
/// after 1 to 1.25 times it) rather than being re-armed for every frame.
pub struct StallWatch {
    limit: Duration,
    timer: LazyTimer,
    /// Something moved since the last tick.
    progressed: bool,
    idle_ticks: u8,
}

impl StallWatch {
    const TICKS: u8 = 4;

    /// A watch for `limit`; none for zero, which is never.
    pub fn new(limit: Duration) -> Option<StallWatch> {
        (!limit.is_zero()).then_some(StallWatch {
            limit,
            timer: LazyTimer::default(),
            progressed: false,
            idle_ticks: 0,
        })
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Something moved.
    pub fn progressed(&mut self) {
        self.progressed = true;
    }

    /// Called while waiting: true once nothing has moved for the limit.
    pub fn stalled(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        let tick = self.limit / u32::from(Self::TICKS);
        if !self.timer.is_armed() {
            self.timer.arm(tokio::time::Instant::now() + tick);
        }
        while self.timer.poll_expired(cx).is_ready() {
            if std::mem::take(&mut self.progressed) {
                self.idle_ticks = 0;
            } else {
                self.idle_ticks += 1;
            }
            if self.idle_ticks >= Self::TICKS {
                return true;
            }
            self.timer.arm(tokio::time::Instant::now() + tick);
        }
        false
    }
}
