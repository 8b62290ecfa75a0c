//! gzip on the way to the client, for answers the `compression:` section
//! covers. Each piece the backend sends is compressed and flushed on its
//! own, so a streamed answer reaches the client as it comes.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, FlushCompress, Status};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;

use crate::config::compression::Compression;

/// Whether `Accept-Encoding` takes gzip: named (or `*`) without `q=0`.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(!refused);
            } else if coding == "*" {
                any = Some(!refused);
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// Starts compressing `resp` when its status, headers and size allow it:
/// its headers then say gzip, and its body goes through the [`Gzip`].
pub fn start<B>(settings: &Compression, resp: &mut Response<B>) -> Option<Box<Gzip>> {
    let status = resp.status();
    if status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
    {
        return None;
    }
    let h = resp.headers();
    let too_small = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n < settings.min_bytes);
    let no_transform = h
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.to_ascii_lowercase().contains("no-transform")));
    if too_small
        || no_transform
        || h.contains_key(header::CONTENT_ENCODING)
        || h.contains_key(header::CONTENT_RANGE)
        || !h.get(header::CONTENT_TYPE).is_some_and(|t| settings.compresses(t.as_bytes()))
    {
        return None;
    }
    let h = resp.headers_mut();
    h.remove(header::CONTENT_LENGTH);
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    let varies = h.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|n| n.trim() == "*" || n.trim().eq_ignore_ascii_case("accept-encoding"))
        })
    });
    if !varies {
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    // The bytes differ from the backend's: a strong validator would lie.
    if let Some(etag) = h.get(header::ETAG).filter(|e| e.as_bytes().starts_with(b"\""))
        && let Ok(weak) = HeaderValue::from_bytes(&[b"W/", etag.as_bytes()].concat())
    {
        h.insert(header::ETAG, weak);
    }
    Some(Box::new(Gzip::new(settings.level)))
}

/// The compressor of one answer, and what is left to send once it ended.
pub struct Gzip {
    /// None once the gzip stream has ended.
    deflate: Option<Deflate>,
    /// The backend's trailers, sent after the end of the gzip stream.
    trailers: Option<HeaderMap>,
}

/// A zlib stream writing gzip, and its level.
struct Deflate {
    stream: Compress,
    level: u32,
}

/// Idle streams kept per serving thread. Setting one up allocates and
/// clears some 300 KB of tables; reset, it is ready for the next answer.
const IDLE_PER_THREAD: usize = 8;

thread_local! {
    static IDLE: RefCell<Vec<Deflate>> = const { RefCell::new(Vec::new()) };
}

impl Deflate {
    fn take(level: flate2::Compression) -> Deflate {
        let reused = IDLE.with_borrow_mut(|idle| {
            let i = idle.iter().position(|d| d.level == level.level())?;
            Some(idle.swap_remove(i))
        });
        reused.unwrap_or_else(|| Deflate {
            stream: Compress::new_gzip(level, 15),
            level: level.level(),
        })
    }

    /// Runs `input` through the stream with `flush`, growing the output
    /// until the stream has taken all of it (and, finishing, has ended).
    fn run(&mut self, mut input: &[u8], flush: FlushCompress) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        loop {
            let before = self.stream.total_in();
            let status = self.stream.compress_vec(input, &mut out, flush);
            let taken = usize::try_from(self.stream.total_in() - before).unwrap_or(input.len());
            input = &input[taken.min(input.len())..];
            let room_left = out.len() < out.capacity();
            match status {
                Ok(Status::StreamEnd) | Err(_) => return out,
                // A flush is complete once the stream leaves room unused.
                _ if input.is_empty() && room_left && !matches!(flush, FlushCompress::Finish) => return out,
                _ => out.reserve(out.capacity().max(64)),
            }
        }
    }
}

impl Gzip {
    fn new(level: flate2::Compression) -> Gzip {
        Gzip {
            deflate: Some(Deflate::take(level)),
            trailers: None,
        }
    }

    /// A backend's frame as the client gets it: data compressed, and the
    /// end (or the trailers, held back until after it) ending the gzip stream.
    pub fn encode<E>(&mut self, frame: Option<Result<Frame<Bytes>, E>>) -> Option<Result<Frame<Bytes>, E>> {
        let out = match frame {
            Some(Ok(f)) => match f.into_data() {
                Ok(data) => self.data(&data),
                Err(trailers) => self.finish(trailers.into_trailers().ok()),
            },
            Some(Err(e)) => return Some(Err(e)),
            None => self.finish(None),
        };
        Some(Ok(Frame::data(out)))
    }

    /// `data` compressed and flushed: all of it can be decoded on arrival.
    fn data(&mut self, data: &[u8]) -> Bytes {
        let Some(deflate) = &mut self.deflate else { return Bytes::new() };
        Bytes::from(deflate.run(data, FlushCompress::Sync))
    }

    /// The end of the gzip stream, with the trailers to send after it.
    fn finish(&mut self, trailers: Option<HeaderMap>) -> Bytes {
        self.trailers = trailers;
        let Some(mut deflate) = self.deflate.take() else {
            return Bytes::new();
        };
        let tail = deflate.run(&[], FlushCompress::Finish);
        deflate.stream.reset();
        IDLE.with_borrow_mut(|idle| {
            if idle.len() < IDLE_PER_THREAD {
                idle.push(deflate);
            }
        });
        Bytes::from(tail)
    }

    /// Once the stream has ended: the trailers, then nothing.
    pub fn after_end(&mut self) -> Option<Option<HeaderMap>> {
        self.deflate.is_none().then(|| self.trailers.take())
    }

    /// Whether nothing is left to send.
    pub fn is_done(&self) -> bool {
        self.deflate.is_none() && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn accepts(values: &[&str]) -> bool {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepts_gzip(&h)
    }

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        assert!(accepts(&["gzip, deflate, br"]));
        assert!(accepts(&["br;q=1.0, GZIP;q=0.5"]));
        assert!(accepts(&["br", "gzip"]));
        assert!(accepts(&["*"]));
        assert!(!accepts(&[]));
        assert!(!accepts(&["br, deflate"]));
        assert!(!accepts(&["gzip;q=0"]));
        assert!(!accepts(&["gzip; q=0.000, *"]), "a refused gzip stays refused under *");
        assert!(!accepts(&["*;q=0"]));
    }

    #[test]
    fn pieces_decode_as_they_come_and_whole_at_the_end() {
        let mut gzip = Gzip::new(flate2::Compression::new(1));
        let first = gzip.data(b"hello ");
        // What came so far decodes on its own (a sync flush), before the end.
        let mut partial = Vec::new();
        let _ = flate2::read::GzDecoder::new(&first[..]).read_to_end(&mut partial);
        assert_eq!(partial, b"hello ");
        let whole = [first, gzip.data(b"world"), gzip.finish(None)].concat();
        assert!(gzip.is_done());
        let mut out = String::new();
        flate2::read::GzDecoder::new(&whole[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn a_reused_stream_starts_a_whole_new_gzip_stream_and_incompressible_data_fits() {
        let noise: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for round in 0..3 {
            let mut gzip = Gzip::new(flate2::Compression::new(1));
            let body = [gzip.data(&noise[..100_000]), gzip.data(&noise[100_000..]), gzip.finish(None)].concat();
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out).unwrap();
            assert!(out == noise, "round {round}");
        }
        assert!(IDLE.with_borrow(|idle| idle.len()) == 1, "the stream went back to be reused");
    }
}
