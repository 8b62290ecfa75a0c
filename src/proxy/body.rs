//! The response body handed to hyper: the backend's streaming body or a short
//! local one, carrying the [`RequestRecord`] that is counted when the body ends.

use std::cell::Cell;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::compress::Gzip;
use super::record::RequestRecord;
use crate::upstream::{StallWatch, Tap, UpstreamBody, UpstreamBodyError};

enum Inner {
    Upstream(UpstreamBody),
    Local(Option<Bytes>),
}

pub struct ResponseBody {
    inner: Inner,
    record: Option<Box<RequestRecord>>,
    /// A bounded copy for the mirror comparison, when the request is mirrored.
    tap: Option<Tap>,
    /// The backend's `body_timeout`, unless it is off.
    stall: Option<StallWatch>,
    /// Compresses what the backend sends, when the client gets it gzipped.
    gzip: Option<Box<Gzip>>,
}

thread_local! {
    /// How the last response body polled on this thread answered: `true`
    /// when it handed over data (and is owed another poll), `false` when it
    /// waited or ended. Read by the HTTP/2 stream watch around each poll of
    /// a stream, which holds one body.
    static LAST_POLL: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Forgets the last poll's answer, before a stream is polled.
pub fn forget_last_poll() {
    LAST_POLL.set(None);
}

/// Whether a response body was polled since [`forget_last_poll`], and whether it handed over data.
pub fn last_poll() -> Option<bool> {
    LAST_POLL.get()
}

/// Why a response body ended early.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    #[error(transparent)]
    Backend(#[from] UpstreamBodyError),
    #[error("the backend's response body sent nothing for {0:?} (body_timeout)")]
    Stalled(Duration),
}

impl ResponseBody {
    /// `body_timeout`: how long the backend's body may send nothing; zero is never.
    pub fn upstream(
        body: UpstreamBody,
        record: Box<RequestRecord>,
        tap: Option<Tap>,
        gzip: Option<Box<Gzip>>,
        body_timeout: Duration,
    ) -> ResponseBody {
        ResponseBody {
            inner: Inner::Upstream(body),
            record: Some(record),
            tap,
            stall: StallWatch::new(body_timeout),
            gzip,
        }
    }

    pub fn local(text: impl Into<Bytes>, record: Option<Box<RequestRecord>>) -> ResponseBody {
        let bytes = text.into();
        ResponseBody {
            inner: Inner::Local((!bytes.is_empty()).then_some(bytes)),
            record,
            tap: None,
            stall: None,
            gzip: None,
        }
    }

    /// Gives up on a backend body that stalled: counted as a broken body.
    fn stalled(&mut self) -> ResponseBodyError {
        let limit = self.stall.as_ref().map_or(Duration::ZERO, StallWatch::limit);
        if let Some(record) = &mut self.record {
            tracing::warn!(
                backend = record.backend_name(),
                ?limit,
                "the backend's response body stalled: cut off (body_timeout)"
            );
            record.body_failed();
        }
        self.tap = None;
        self.stall = None;
        ResponseBodyError::Stalled(limit)
    }

    /// The next frame of the body, with the stall watch and the record kept.
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let this = self;
        if let Some(after) = this.gzip.as_mut().and_then(|g| g.after_end()) {
            return Poll::Ready(after.map(|trailers| Ok(Frame::trailers(trailers))));
        }
        match &mut this.inner {
            Inner::Upstream(body) => {
                let frame = match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        let Some(stall) = &mut this.stall else { return Poll::Pending };
                        if !stall.stalled(cx) {
                            return Poll::Pending;
                        }
                        return Poll::Ready(Some(Err(this.stalled())));
                    }
                };
                if let Some(stall) = &mut this.stall {
                    stall.progressed();
                }
                match &frame {
                    Some(Ok(f)) => {
                        if let (Some(data), Some(tap)) = (f.data_ref(), &mut this.tap) {
                            tap.data(data);
                        }
                    }
                    Some(Err(_)) => {
                        if let Some(record) = &mut this.record {
                            record.body_failed();
                        }
                        // A broken body is not compared.
                        this.tap = None;
                    }
                    None => {
                        if let Some(tap) = &mut this.tap {
                            tap.finish();
                        }
                    }
                }
                // The tap has seen the backend's bytes; the client may get them gzipped.
                let frame = match &mut this.gzip {
                    Some(gzip) => gzip.encode(frame),
                    None => frame,
                };
                if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
                    this.count(data.len());
                }
                Poll::Ready(frame.map(|f| f.map_err(ResponseBodyError::Backend)))
            }
            Inner::Local(bytes) => {
                let frame = bytes.take();
                if let Some(b) = &frame {
                    let n = b.len();
                    this.count(n);
                }
                Poll::Ready(frame.map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn count(&mut self, n: usize) {
        if let Some(record) = &mut self.record {
            record.sent(n);
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper never polls a body that is empty from the start (HEAD, 204,
        // Content-Length: 0): it is complete all the same.
        if let (Some(tap), Inner::Upstream(body)) = (&mut self.tap, &self.inner)
            && body.is_end_stream()
        {
            tap.finish();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let polled = self.get_mut().poll_inner(cx);
        LAST_POLL.set(Some(matches!(polled, Poll::Ready(Some(Ok(_))))));
        polled
    }

    fn is_end_stream(&self) -> bool {
        if let Some(gzip) = &self.gzip {
            return gzip.is_done();
        }
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(_) if self.gzip.is_some() => SizeHint::default(),
            Inner::Upstream(body) => body.size_hint(),
            Inner::Local(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
