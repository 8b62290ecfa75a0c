//! Bodies as the application meant them: `Content-Encoding` undone, and
//! `Content-Type` read as a media type.
//!
//! Only the mirror's copies are decoded; what the client receives is never
//! touched. Decoding streams through the codings with the comparison limit
//! counted on the *decoded* bytes, so a small body that inflates to
//! gigabytes costs at most the limit.

use std::io::{BufRead, BufReader, Read};

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};

/// Codings applied one over another that are undone; more is a body
/// nobody means to send, reported as undecodable.
pub const MAX_CODINGS: usize = 4;

/// Largest zstd window accepted: 8 MiB, the most an HTTP `zstd` coding may
/// ask of a decoder (RFC 9659). A frame that asks for more is undecodable
/// rather than a 2 GiB allocation.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// A content coding cutover can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    fn parse(name: &str) -> Option<Coding> {
        match name.to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Some(Coding::Gzip),
            "deflate" => Some(Coding::Deflate),
            "br" => Some(Coding::Brotli),
            "zstd" => Some(Coding::Zstd),
            _ => None,
        }
    }

    /// Wraps `inner` in a reader that undoes this coding as it is read.
    fn decoder<'a>(self, inner: Box<dyn Read + 'a>) -> std::io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
            Coding::Deflate => deflate(inner)?,
            Coding::Brotli => Box::new(brotli_decompressor::Decompressor::new(inner, 8 * 1024)),
            Coding::Zstd => {
                let mut decoder = zstd::stream::read::Decoder::new(inner)?;
                decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                Box::new(decoder)
            }
        })
    }
}

/// HTTP's `deflate` is the zlib format, but some servers send raw deflate:
/// the first two bytes tell which.
fn deflate<'a>(inner: Box<dyn Read + 'a>) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::new(inner);
    let head = buffered.fill_buf()?;
    let zlib = head.len() >= 2 && head[0] & 0x0f == 8 && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0;
    Ok(if zlib {
        Box::new(flate2::bufread::ZlibDecoder::new(buffered))
    } else {
        Box::new(flate2::bufread::DeflateDecoder::new(buffered))
    })
}

/// The decoded body is larger than the comparison limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// What decoding a body gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The bytes the application meant (the body itself when not encoded).
    Bytes(Bytes),
    /// The codings could not be undone: why, for the report.
    Undecodable(String),
}

/// Whether `headers` name a content coding other than `identity`.
pub fn is_encoded(headers: &HeaderMap) -> bool {
    codings(headers).next().is_some()
}

/// The coding names of `Content-Encoding`, in the order they were applied,
/// without `identity`.
fn codings(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("(not text)").split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
}

/// Undoes the `Content-Encoding` of `body`, in reverse order of the codings,
/// reading at most `limit` decoded bytes.
pub fn decode(headers: &HeaderMap, body: &Bytes, limit: usize) -> Result<Decoded, TooLarge> {
    let names: Vec<&str> = codings(headers).collect();
    // HEAD answers, 204 and 304 carry the header and no body.
    if names.is_empty() || body.is_empty() {
        return if body.len() > limit {
            Err(TooLarge)
        } else {
            Ok(Decoded::Bytes(body.clone()))
        };
    }
    if names.len() > MAX_CODINGS {
        return Ok(Decoded::Undecodable(format!("{} codings stacked", names.len())));
    }
    let mut stack = Vec::with_capacity(names.len());
    for name in &names {
        match Coding::parse(name) {
            Some(coding) => stack.push(coding),
            None => {
                return Ok(Decoded::Undecodable(format!("unknown coding {}", super::truncate(name, 40))));
            }
        }
    }
    let applied = names.join(", ");
    let mut reader: Box<dyn Read + '_> = Box::new(&body[..]);
    for coding in stack.into_iter().rev() {
        reader = match coding.decoder(reader) {
            Ok(r) => r,
            Err(e) => return Ok(Decoded::Undecodable(format!("{applied}: {e}"))),
        };
    }
    let mut out = Vec::new();
    match reader.take(limit as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > limit => Err(TooLarge),
        Ok(_) => Ok(Decoded::Bytes(out.into())),
        Err(e) => Ok(Decoded::Undecodable(format!("{applied}: {e}"))),
    }
}

/// A `Content-Type` as compared: `type/subtype` in lower case, then the
/// parameters sorted, names and values in lower case, unquoted. JSON has no
/// charset (RFC 8259), so `charset` on a JSON type is dropped.
/// `None` when the header is absent, repeated or not a media type.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (value, None) = (values.next()?, values.next()) else {
        return None;
    };
    let text = value.to_str().ok()?;
    let mut parts = text.split(';');
    let essence = parts.next()?.trim().to_ascii_lowercase();
    let (kind, subtype) = essence.split_once('/')?;
    if kind.is_empty() || subtype.is_empty() || !essence.bytes().all(is_token_byte_or_slash) {
        return None;
    }
    let json = is_json_essence(&essence);
    let mut params: Vec<(String, String)> = Vec::new();
    for param in parts {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let (name, value) = param.split_once('=')?;
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        if json && name == "charset" {
            continue;
        }
        params.push((name, value.to_ascii_lowercase()));
    }
    params.sort();
    let mut out = essence;
    for (name, value) in params {
        out.push(';');
        out.push_str(&name);
        out.push('=');
        out.push_str(&value);
    }
    Some(out)
}

fn is_token_byte_or_slash(b: u8) -> bool {
    b == b'/' || b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `application/json` or any `+json` type.
fn is_json_essence(essence: &str) -> bool {
    essence == "application/json" || essence.ends_with("+json")
}

/// Whether the body is declared JSON.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| is_json_essence(&t.trim().to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn headers(encoding: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if !encoding.is_empty() {
            h.insert(CONTENT_ENCODING, encoding.parse().unwrap());
        }
        h
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn br(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        brotli::BrotliCompress(&mut &data[..], &mut out, &Default::default()).unwrap();
        out
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    fn decoded(encoding: &str, body: Vec<u8>, limit: usize) -> Result<Decoded, TooLarge> {
        decode(&headers(encoding), &Bytes::from(body), limit)
    }

    const DOC: &[u8] = br#"{"id": 1, "name": "tea"}"#;

    #[test]
    fn each_coding_and_stacks_of_them_are_undone() {
        let plain = Ok(Decoded::Bytes(Bytes::from_static(DOC)));
        assert_eq!(decoded("", DOC.to_vec(), 1024), plain);
        assert_eq!(decoded("identity", DOC.to_vec(), 1024), plain);
        assert_eq!(decoded("gzip", gzip(DOC), 1024), plain);
        assert_eq!(decoded("X-GZIP", gzip(DOC), 1024), plain);
        assert_eq!(decoded("deflate", zlib(DOC), 1024), plain);
        assert_eq!(
            decoded("deflate", raw_deflate(DOC), 1024),
            plain,
            "raw deflate, as some servers send it"
        );
        assert_eq!(decoded("br", br(DOC), 1024), plain);
        assert_eq!(decoded("zstd", zstd(DOC), 1024), plain);
        // Applied in the order listed, so undone in reverse.
        assert_eq!(decoded("gzip, br", br(&gzip(DOC)), 1024), plain);
        assert_eq!(decoded("zstd,identity, deflate", zlib(&zstd(DOC)), 1024), plain);
        let mut two = headers("br");
        two.append(CONTENT_ENCODING, "gzip".parse().unwrap());
        assert_eq!(
            decode(&two, &Bytes::from(gzip(&br(DOC))), 1024),
            plain,
            "one coding per header line"
        );
        // A HEAD answer says gzip and has no body.
        assert_eq!(decoded("gzip", Vec::new(), 1024), Ok(Decoded::Bytes(Bytes::new())));
    }

    #[test]
    fn the_limit_counts_decoded_bytes() {
        let bomb = vec![b'a'; 3 * 1024 * 1024];
        for (coding, body) in [
            ("gzip", gzip(&bomb)),
            ("br", br(&bomb)),
            ("zstd", zstd(&bomb)),
            ("deflate", zlib(&bomb)),
        ] {
            assert!(body.len() < 16 * 1024, "{coding}: {} bytes", body.len());
            assert_eq!(decoded(coding, body, 1024 * 1024), Err(TooLarge), "{coding}");
        }
        assert_eq!(decoded("gzip, gzip", gzip(&gzip(&bomb)), 1024 * 1024), Err(TooLarge));
        assert_eq!(
            decoded("gzip", gzip(DOC), DOC.len()),
            Ok(Decoded::Bytes(Bytes::from_static(DOC))),
            "exactly the limit"
        );
        assert_eq!(decoded("gzip", gzip(DOC), DOC.len() - 1), Err(TooLarge));
    }

    #[test]
    fn bodies_that_cannot_be_decoded_say_why() {
        let cut = gzip(DOC)[..10].to_vec();
        let mut trailing = gzip(DOC);
        trailing.extend_from_slice(b"garbage");
        for (coding, body) in [
            ("gzip", DOC.to_vec()),
            ("gzip", cut),
            ("gzip", trailing),
            ("br", DOC.to_vec()),
            ("zstd", DOC.to_vec()),
            ("deflate", b"\x78\x9c\xff\xff".to_vec()),
            ("compress", DOC.to_vec()),
            ("gzip, gzip, gzip, gzip, gzip", DOC.to_vec()),
        ] {
            match decoded(coding, body, 1024) {
                Ok(Decoded::Undecodable(why)) => assert!(!why.is_empty(), "{coding}"),
                other => panic!("{coding}: {other:?}"),
            }
        }
        let Ok(Decoded::Undecodable(why)) = decoded("compress", DOC.to_vec(), 1024) else {
            unreachable!()
        };
        assert_eq!(why, "unknown coding compress");
    }

    #[test]
    fn a_zstd_frame_asking_for_a_huge_window_is_refused() {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(27).unwrap();
        encoder.long_distance_matching(true).unwrap();
        encoder.include_contentsize(false).unwrap();
        encoder.write_all(DOC).unwrap();
        let body = encoder.finish().unwrap();
        assert!(matches!(decoded("zstd", body, 1024), Ok(Decoded::Undecodable(_))));
    }

    fn content_type(value: &str) -> Option<String> {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, value.parse().unwrap());
        media_type(&h)
    }

    #[test]
    fn media_types_compare_without_case_spacing_or_a_json_charset() {
        let json = Some("application/json".to_string());
        for v in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert_eq!(content_type(v), json, "{v}");
        }
        assert_eq!(
            content_type("application/problem+json; charset=utf-8").as_deref(),
            Some("application/problem+json")
        );
        assert_eq!(
            content_type("text/html; charset=UTF-8").as_deref(),
            Some("text/html;charset=utf-8"),
            "a charset means something on text"
        );
        assert_eq!(
            content_type("text/html;  q=1 ; charset=utf-8").as_deref(),
            Some("text/html;charset=utf-8;q=1")
        );
        assert_ne!(content_type("text/html"), content_type("text/html; charset=utf-8"));
        assert_ne!(content_type("application/json"), content_type("text/json"));
        assert_eq!(content_type("nonsense"), None);
        assert_eq!(content_type("text/html; broken"), None);
    }
}
