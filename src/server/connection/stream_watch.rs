//! The watch on an HTTP/2 client that takes none of a stream's response
//! (`send_timeout`).
//!
//! A stream whose client grants it no flow-control window is never polled
//! for more of its body, so no watch inside the body can see it: each
//! stream's task is spawned wrapped in a [`WatchedStream`] instead, which
//! learns from the body how its last poll went.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::proxy::body::{forget_last_poll, last_poll};
use crate::upstream::LazyTimer;

/// Spawns HTTP/2 streams, each watched.
#[derive(Clone, Copy)]
pub(in crate::server) struct StreamExecutor {
    /// `send_timeout`; zero: streams are not watched.
    pub limit: Duration,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        if self.limit.is_zero() {
            tokio::spawn(stream);
            return;
        }
        tokio::spawn(WatchedStream {
            stream,
            limit: self.limit,
            owed: false,
            timer: LazyTimer::default(),
        });
    }
}

pin_project_lite::pin_project! {
    /// A stream's task, reset once its body has handed over data and then
    /// not been asked for more for the limit: the client took none of it.
    struct WatchedStream<F> {
        #[pin]
        stream: F,
        limit: Duration,
        // The body's last answer was data, and it has not been polled since.
        owed: bool,
        // Made the first time the body is owed a poll.
        timer: LazyTimer,
    }
}

impl<F: Future<Output = ()>> Future for WatchedStream<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        forget_last_poll();
        if this.stream.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if let Some(handed_data) = last_poll() {
            *this.owed = handed_data;
            if handed_data {
                this.timer.arm(tokio::time::Instant::now() + *this.limit);
            }
        }
        if *this.owed && this.timer.poll_expired(cx).is_ready() {
            // Dropping the stream's task resets the stream, and lets its
            // backend connection go.
            tracing::debug!("an HTTP/2 client took none of a response within send_timeout: stream reset");
            return Poll::Ready(());
        }
        Poll::Pending
    }
}
