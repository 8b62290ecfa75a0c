//! gzip on the way to the client, for answers the `compression:` section
//! covers. Each piece the backend sends is compressed and flushed on its
//! own, so a streamed answer reaches the client as it comes.

use std::io::Write;

use bytes::Bytes;
use flate2::write::GzEncoder;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

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
    encoder: Option<GzEncoder<Vec<u8>>>,
    /// The backend's trailers, sent after the end of the gzip stream.
    trailers: Option<HeaderMap>,
}

impl Gzip {
    fn new(level: flate2::Compression) -> Gzip {
        Gzip {
            encoder: Some(GzEncoder::new(Vec::new(), level)),
            trailers: None,
        }
    }

    /// `data` compressed and flushed: all of it can be decoded on arrival.
    pub fn data(&mut self, data: &[u8]) -> Bytes {
        let Some(encoder) = &mut self.encoder else { return Bytes::new() };
        // Writes into a Vec cannot fail.
        let _ = encoder.write_all(data);
        let _ = encoder.flush();
        Bytes::from(std::mem::take(encoder.get_mut()))
    }

    /// The end of the gzip stream, with the trailers to send after it.
    pub fn finish(&mut self, trailers: Option<HeaderMap>) -> Bytes {
        self.trailers = trailers;
        self.encoder
            .take()
            .and_then(|e| e.finish().ok())
            .map(Bytes::from)
            .unwrap_or_default()
    }

    /// Once the stream has ended: the trailers, then nothing.
    pub fn after_end(&mut self) -> Option<Option<HeaderMap>> {
        self.encoder.is_none().then(|| self.trailers.take())
    }

    /// Whether nothing is left to send.
    pub fn is_done(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
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
}
