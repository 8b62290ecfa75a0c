//! Deadlines on futures pinned where they were made.

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
