//! A bounded copy of a body as it streams past, for the shadow comparison.

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

/// Copies a streaming body, up to a limit, into a buffer of its own.
/// Sends the whole copy when the body ends, `None` once it overflows; a
/// body abandoned half-way sends nothing.
///
/// The chunks are copied, not kept by reference: they are slices of the
/// connection's read buffer, and while one is alive the next read cannot
/// reuse that buffer and allocates a new one, which costs more than the
/// copy of a body small enough to compare.
pub struct Tap {
    copy: BytesMut,
    limit: usize,
    done: Option<oneshot::Sender<Option<Bytes>>>,
}

impl Tap {
    pub fn new(limit: usize) -> (Tap, oneshot::Receiver<Option<Bytes>>) {
        let (tx, rx) = oneshot::channel();
        (
            Tap {
                copy: BytesMut::new(),
                limit,
                done: Some(tx),
            },
            rx,
        )
    }

    pub fn data(&mut self, chunk: &[u8]) {
        if self.done.is_none() {
            return;
        }
        if self.copy.len() + chunk.len() > self.limit {
            self.copy = BytesMut::new();
            if let Some(tx) = self.done.take() {
                let _ = tx.send(None);
            }
        } else {
            self.copy.extend_from_slice(chunk);
        }
    }

    pub fn finish(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(Some(std::mem::take(&mut self.copy).freeze()));
        }
    }

    pub fn is_finished(&self) -> bool {
        self.done.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::Tap;
    use bytes::Bytes;

    #[test]
    fn a_tap_sends_a_copy_of_the_whole_body_or_nothing_past_its_limit() {
        let (mut tap, mut copy) = Tap::new(10);
        let chunks = [Bytes::from_static(b"hello "), Bytes::from_static(b"you")];
        for chunk in &chunks {
            tap.data(chunk);
        }
        assert!(copy.try_recv().is_err(), "nothing is sent before the body ends");
        tap.finish();
        let body = copy.try_recv().unwrap().unwrap();
        assert_eq!(body, "hello you");
        assert!(
            chunks.iter().all(|c| !std::ptr::eq(c.as_ptr(), body.as_ptr())),
            "the copy owns its bytes"
        );

        let (mut tap, mut copy) = Tap::new(4);
        tap.data(b"12");
        tap.data(b"345");
        assert!(tap.is_finished(), "an overflow ends the copy at once");
        assert_eq!(copy.try_recv().unwrap(), None);
        tap.finish();
    }
}
