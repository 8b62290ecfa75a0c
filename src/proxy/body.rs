//! The response body handed to hyper: the backend's streaming body or a short
//! local one, carrying the [`RequestRecord`] that is counted when the body ends.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::record::RequestRecord;
use crate::upstream::{Tap, UpstreamBody};

enum Inner {
    Upstream(UpstreamBody),
    Local(Option<Bytes>),
}

pub struct ResponseBody {
    inner: Inner,
    record: Option<Box<RequestRecord>>,
    /// A bounded copy for the mirror comparison, when the request is mirrored.
    tap: Option<Tap>,
}

impl ResponseBody {
    pub fn upstream(body: UpstreamBody, record: Box<RequestRecord>, tap: Option<Tap>) -> ResponseBody {
        ResponseBody {
            inner: Inner::Upstream(body),
            record: Some(record),
            tap,
        }
    }

    pub fn local(text: impl Into<Bytes>, record: Option<Box<RequestRecord>>) -> ResponseBody {
        let bytes = text.into();
        ResponseBody {
            inner: Inner::Local((!bytes.is_empty()).then_some(bytes)),
            record,
            tap: None,
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
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Upstream(body) => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                match &frame {
                    Some(Ok(f)) => {
                        if let Some(data) = f.data_ref() {
                            this.count(data.len());
                            if let Some(tap) = &mut this.tap {
                                tap.data(data);
                            }
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
                Poll::Ready(frame)
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

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Local(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
