//! The bodies sent to a backend: the client's (read with a size limit and an
//! idle timeout), the client's with a copy taken, or one held in memory.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::failure::ClientFault;
use super::tap::Tap;

/// Why the proxy stopped reading a client's body. It travels to the
/// request handler inside the error hyper's client returns, where
/// [`classify`](super::failure::classify) finds it: a failed exchange is
/// then the client's fault (413, 408 or 400), not the backend's.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("request body larger than server.max_body_bytes")]
    TooLarge,
    #[error("request body stalled longer than server.body_read_timeout")]
    Stalled,
    #[error("request body could not be read: {0}")]
    Broken(#[source] hyper::Error),
}

impl ClientBodyError {
    pub fn fault(&self) -> ClientFault {
        match self {
            ClientBodyError::TooLarge => ClientFault::BodyTooLarge,
            ClientBodyError::Stalled => ClientFault::BodyStalled,
            ClientBodyError::Broken(_) => ClientFault::BodyBroken,
        }
    }
}

/// The most that bodies being read ahead may hold together. A client
/// can keep a read-ahead waiting by sending slowly; without a bound, many
/// such clients would hold up to `unsized_body_buffer_bytes` each.
pub const READ_AHEAD_BUDGET: u64 = 64 * 1024 * 1024;

static READ_AHEAD_HELD: AtomicU64 = AtomicU64::new(0);

/// One read-ahead's share of [`READ_AHEAD_BUDGET`], given back when dropped.
struct ReadAheadHeld(u64);

impl ReadAheadHeld {
    /// Holds `total` bytes in all, if the budget has room for the growth.
    fn grow_to(&mut self, total: u64) -> bool {
        let more = total.saturating_sub(self.0);
        let before = READ_AHEAD_HELD.fetch_add(more, Ordering::Relaxed);
        if before + more > READ_AHEAD_BUDGET {
            READ_AHEAD_HELD.fetch_sub(more, Ordering::Relaxed);
            return false;
        }
        self.0 = total;
        true
    }
}

impl Drop for ReadAheadHeld {
    fn drop(&mut self) {
        READ_AHEAD_HELD.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// Told when a client's body has been read to its end (the client
/// connection, which may then wait for its next request).
pub trait BodyReadListener: Send + Sync {
    fn body_read(&self);
}

/// A client's request body, read with a size limit and an idle timeout.
pub struct ClientBody {
    inner: Incoming,
    limit: u64,
    received: u64,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Told once the body has been read to its end.
    listener: Option<Arc<dyn BodyReadListener>>,
    /// Takes a copy of the bytes for a shadow request.
    tap: Option<Tap>,
    /// Bytes read ahead ([`ClientBody::read_ahead`]), sent before the rest.
    prefix: Option<Bytes>,
}

impl ClientBody {
    pub fn new(inner: Incoming, limit: Option<u64>, idle: Duration, listener: Option<Arc<dyn BodyReadListener>>) -> ClientBody {
        ClientBody {
            inner,
            limit: limit.unwrap_or(u64::MAX),
            received: 0,
            idle,
            timer: None,
            listener,
            tap: None,
            prefix: None,
        }
    }

    /// Reads a body of unknown length (chunked, HTTP/2 without
    /// `content-length`) up to `limit` bytes. One that ends within it is held
    /// whole, so the backend is sent a `Content-Length` as nginx would send
    /// it; a longer one streams on after what was read, as does one read
    /// while every request together holds [`READ_AHEAD_BUDGET`]. Trailers are
    /// not forwarded, as nginx does not.
    pub async fn read_ahead(mut self: Box<Self>, limit: u64) -> Result<RequestBody, ClientBodyError> {
        let mut read = bytes::BytesMut::new();
        let mut held = ReadAheadHeld(0);
        loop {
            match std::future::poll_fn(|cx| self.poll_limited(cx)).await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        read.extend_from_slice(&data);
                    }
                    if self.inner.is_end_stream() {
                        return Ok(RequestBody::full(read.freeze()));
                    }
                    if read.len() as u64 > limit || !held.grow_to(read.len() as u64) {
                        self.prefix = Some(read.freeze());
                        return Ok(RequestBody::Client(self));
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(RequestBody::full(read.freeze())),
            }
        }
    }

    /// From now on, a copy of the bytes read goes to `tap`.
    pub fn tap(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }

    pub fn is_tapped(&self) -> bool {
        self.tap.is_some()
    }

    fn ended(&mut self) {
        if let Some(listener) = self.listener.take() {
            listener.body_read();
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.inner.is_end_stream()
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let frame = match self.prefix.take() {
            Some(read) => Some(Ok(Frame::data(read))),
            None => ready!(self.poll_limited(cx)),
        };
        if let Some(tap) = &mut self.tap {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(data) = f.data_ref() {
                        tap.data(data);
                    }
                    // The client may never be polled again once it reports the end.
                    if self.inner.is_end_stream() {
                        tap.finish();
                    }
                }
                Some(Err(_)) => {}
                None => tap.finish(),
            }
        }
        Poll::Ready(frame)
    }

    fn poll_limited(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.received += frame.data_ref().map_or(0, |d| d.len() as u64);
                if self.received > self.limit {
                    return Poll::Ready(Some(Err(ClientBodyError::TooLarge)));
                }
                self.timer = None;
                if self.inner.is_end_stream() {
                    self.ended();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(ClientBodyError::Broken(e)))),
            Poll::Ready(None) => {
                self.ended();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = self.idle;
                let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(ClientBodyError::Stalled)));
                }
                Poll::Pending
            }
        }
    }
}

/// The body sent to a backend: the client's (a copy taken for a shadow
/// request, if tapped), or one held in memory.
pub enum RequestBody {
    /// Boxed: a request is moved several times on its way to the backend,
    /// and most carry no body to stream.
    Client(Box<ClientBody>),
    Full(Option<Bytes>),
}

impl RequestBody {
    pub fn full(bytes: Bytes) -> RequestBody {
        RequestBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// A body held in memory can be sent again; a streaming one cannot.
    pub fn try_clone(&self) -> Option<RequestBody> {
        match self {
            RequestBody::Full(bytes) => Some(RequestBody::Full(bytes.clone())),
            RequestBody::Client(_) => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            RequestBody::Client(body) => body.poll_frame(cx),
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(body) => body.is_end_stream(),
            RequestBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(body) => body.inner.size_hint(),
            RequestBody::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_ahead_beyond_the_shared_budget_is_refused_until_another_gives_its_share_back() {
        let mut first = ReadAheadHeld(0);
        assert!(first.grow_to(READ_AHEAD_BUDGET / 2));
        let mut second = ReadAheadHeld(0);
        assert!(!second.grow_to(READ_AHEAD_BUDGET / 2 + 1));
        assert!(second.grow_to(READ_AHEAD_BUDGET / 4), "what fits is held");
        drop(first);
        assert!(second.grow_to(READ_AHEAD_BUDGET / 2 + 1));
    }
}
