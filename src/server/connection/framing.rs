//! Request heads whose body framing cannot be trusted, refused before hyper
//! parses them.
//!
//! hyper accepts a request framed by both `Content-Length` and
//! `Transfer-Encoding`: it drops the length before its caller can see it
//! (hyper 1.12 `proto/h1/role.rs`), reads the body as chunked and closes the
//! connection afterwards. A front end that trusted the other header would
//! have framed the request differently, which is how requests are smuggled,
//! and nginx (≥ 1.21.1) refuses such a request. The conflict is visible only
//! in the head's bytes, so [`FramingCheck`] reads every HTTP/1 request head
//! on its way from the socket to hyper, with `httparse` as hyper does, and
//! follows each body's framing to find the next head. A head it refuses never
//! reaches hyper: in its place hyper reads [`NOT_A_REQUEST`] and answers it
//! as any malformed head, `400` with `Connection: close`, then closes. The
//! requests before it on the connection are served as usual.
//!
//! Only the heads are parsed; body bytes are counted past, and a chunked
//! body's size lines are read byte by byte, as hyper reads them.

use std::mem::MaybeUninit;

/// What hyper reads instead of a refused head: a NUL where a method must be,
/// then the end of a head, so hyper parses it at once and refuses it.
pub(super) const NOT_A_REQUEST: &[u8] = b"\0\r\n\r\n";

/// Header slots parsed on the stack; a larger `max_headers` uses the heap.
const STACK_HEADERS: usize = 128;

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// `Content-Length` and `Transfer-Encoding` both.
    LengthAndCoding,
    /// `Transfer-Encoding` other than one `chunked` (`gzip, chunked`,
    /// `chunked, chunked`, two lines): hyper would decode one chunked layer
    /// and pass the rest on as the body.
    Coding,
}

impl Refused {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Refused::LengthAndCoding => "a request framed by both Content-Length and Transfer-Encoding",
            Refused::Coding => "a Transfer-Encoding other than chunked",
        }
    }
}

/// A refused head: where it starts in the bytes just checked (0 when it
/// started in earlier bytes) and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refusal {
    pub at: usize,
    pub why: Refused,
}

/// Follows the requests on one HTTP/1 connection, byte for byte as hyper
/// reads them.
#[derive(Debug)]
pub(super) struct FramingCheck {
    expect: Expect,
    /// The start of a head that arrived split across reads.
    pending: Vec<u8>,
    /// `server.max_header_bytes`: hyper refuses a longer head (431).
    max_head_bytes: usize,
    /// `server.max_headers`: hyper refuses a head with more fields (431).
    max_headers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Head,
    /// Bytes left of a `Content-Length` body.
    Body(u64),
    Chunked(Chunk),
    /// A head was refused, or the bytes are something hyper refuses itself
    /// and closes on: nothing more is checked.
    Nothing,
}

/// Where a chunked body is, in the states of hyper's decoder
/// (`proto/h1/decode.rs`), so that both find its end at the same byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

/// How a head says its body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

/// What one head turned out to be.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// Complete: its length and its body's framing.
    Framed(usize, Framing),
    Refused(Refused),
    /// Not complete yet.
    Partial,
    /// Malformed, too long or with too many fields, or with a bad length:
    /// hyper refuses it itself.
    Unusable,
}

impl FramingCheck {
    pub(super) fn new(max_head_bytes: usize, max_headers: usize) -> FramingCheck {
        FramingCheck {
            expect: Expect::Head,
            pending: Vec::new(),
            max_head_bytes,
            max_headers,
        }
    }

    /// Follows `bytes`, the next bytes from the client. A refused head is
    /// reported with where it starts; nothing from there on may reach hyper.
    pub(super) fn check(&mut self, bytes: &[u8]) -> Option<Refusal> {
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            match &mut self.expect {
                Expect::Nothing => return None,
                Expect::Body(left) => {
                    let skipped = u64::try_from(rest.len()).unwrap_or(u64::MAX).min(*left);
                    *left -= skipped;
                    at += skipped as usize;
                    if *left == 0 {
                        self.expect = Expect::Head;
                    }
                }
                Expect::Chunked(chunk) => match chunk.follow(rest) {
                    Some((used, ended)) => {
                        at += used;
                        if ended {
                            self.expect = Expect::Head;
                        }
                    }
                    // hyper fails the body and the connection with it.
                    None => self.expect = Expect::Nothing,
                },
                Expect::Head => {
                    let started_here = self.pending.is_empty();
                    match self.head(rest) {
                        Head::Framed(used, Framing::Length(0)) => at += used,
                        Head::Framed(used, Framing::Length(n)) => {
                            at += used;
                            self.expect = Expect::Body(n);
                        }
                        Head::Framed(used, Framing::Chunked) => {
                            at += used;
                            self.expect = Expect::Chunked(Chunk::Start);
                        }
                        Head::Refused(why) => {
                            self.expect = Expect::Nothing;
                            return Some(Refusal {
                                at: if started_here { at } else { 0 },
                                why,
                            });
                        }
                        Head::Partial => return None,
                        Head::Unusable => self.expect = Expect::Nothing,
                    }
                }
            }
        }
        None
    }

    /// Reads a head starting at `bytes` (or earlier, in `pending`); a
    /// complete one's length counts only the bytes taken from `bytes`.
    fn head(&mut self, bytes: &[u8]) -> Head {
        if self.pending.is_empty() {
            return match inspect(bytes, self.max_headers) {
                Head::Partial if bytes.len() > self.max_head_bytes => Head::Unusable,
                Head::Partial => {
                    self.pending.extend_from_slice(bytes);
                    Head::Partial
                }
                head => head,
            };
        }
        let had = self.pending.len();
        let taken = bytes.len().min((self.max_head_bytes + 1).saturating_sub(had));
        self.pending.extend_from_slice(&bytes[..taken]);
        // As hyper: parse again only once the end of a head may have arrived,
        // so a head sent a byte at a time costs no more than one sent whole.
        let head = if may_end_head(&self.pending[had.saturating_sub(3)..]) {
            match inspect(&self.pending, self.max_headers) {
                // The head ends in the new bytes: the earlier ones held no end.
                Head::Framed(len, framing) => len.checked_sub(had).map_or(Head::Unusable, |used| Head::Framed(used, framing)),
                head => head,
            }
        } else {
            Head::Partial
        };
        match head {
            Head::Partial if self.pending.len() <= self.max_head_bytes => Head::Partial,
            head => {
                // Split heads are rare: give the memory back rather than keep it.
                self.pending = Vec::new();
                if head == Head::Partial { Head::Unusable } else { head }
            }
        }
    }
}

/// A line break followed by an empty line (`\n\n` or `\n\r\n`), as hyper's
/// quick look for the end of a head.
fn may_end_head(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && matches!(bytes.get(i + 1..), Some([b'\n', ..] | [b'\r', b'\n', ..])))
}

/// Parses one request head at the start of `bytes` as hyper does.
fn inspect(bytes: &[u8], max_headers: usize) -> Head {
    if let Some(len) = unframed_head_len(bytes) {
        return Head::Framed(len, Framing::Length(0));
    }
    let mut on_stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut on_heap = Vec::new();
    let slots = if max_headers <= STACK_HEADERS {
        &mut on_stack[..max_headers]
    } else {
        on_heap.resize_with(max_headers, MaybeUninit::uninit);
        &mut on_heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, bytes, slots) {
        Ok(httparse::Status::Complete(len)) => match framing(req.headers) {
            Ok(Some(framing)) => Head::Framed(len, framing),
            Ok(None) => Head::Unusable,
            Err(why) => Head::Refused(why),
        },
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(_) => Head::Unusable,
    }
}

/// The length of a complete head none of whose lines starts with
/// `Content-Length` or `Transfer-Encoding` (in any case): it has no body,
/// and ends at its first empty line. Found by looking at line starts only,
/// without parsing the head: most requests are such heads. `None` leaves
/// the head to the parser: it may have a framing field, it starts with the
/// empty lines hyper skips, or its end has not arrived. A head the parser
/// would refuse is refused by hyper too, which then reads nothing after it,
/// so where it ends does not matter.
fn unframed_head_len(bytes: &[u8]) -> Option<usize> {
    if matches!(bytes.first(), None | Some(b'\r' | b'\n')) {
        return None;
    }
    let starts_with = |line: &[u8], name: &[u8]| line.get(..name.len()).is_some_and(|start| start.eq_ignore_ascii_case(name));
    for newline in memchr::memchr_iter(b'\n', bytes) {
        let line = &bytes[newline + 1..];
        match line {
            [b'\n', ..] => return Some(newline + 2),
            [b'\r', b'\n', ..] => return Some(newline + 3),
            _ if starts_with(line, b"content-length") || starts_with(line, b"transfer-encoding") => return None,
            _ => {}
        }
    }
    None
}

/// How the body of a head with these fields ends; `None` when hyper refuses
/// its length itself (malformed, or two that differ).
fn framing(headers: &[httparse::Header<'_>]) -> Result<Option<Framing>, Refused> {
    let mut length = None;
    let mut bad_length = false;
    let mut lengths = 0;
    let mut codings = 0;
    let mut chunked = true;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            match (digits(h.value), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => bad_length = true,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            codings += 1;
            chunked &= trim_ows(h.value).eq_ignore_ascii_case(b"chunked");
        }
    }
    match (lengths, codings) {
        (0, 0) => Ok(Some(Framing::Length(0))),
        (_, 0) if bad_length => Ok(None),
        (_, 0) => Ok(length.map(Framing::Length)),
        (0, 1) if chunked => Ok(Some(Framing::Chunked)),
        (0, _) => Err(Refused::Coding),
        _ => Err(Refused::LengthAndCoding),
    }
}

/// A `Content-Length` value as hyper reads it: digits only.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &value[start..end]
}

impl Chunk {
    /// Follows a chunked body through `bytes`: how many bytes belong to it
    /// and whether it ended there; `None` where hyper's decoder fails.
    fn follow(&mut self, bytes: &[u8]) -> Option<(usize, bool)> {
        let mut at = 0;
        while at < bytes.len() {
            if let Chunk::Data(left) = self {
                let skipped = u64::try_from(bytes.len() - at).unwrap_or(u64::MAX).min(*left);
                *left -= skipped;
                at += skipped as usize;
                if *left == 0 {
                    *self = Chunk::DataCr;
                }
                continue;
            }
            let b = bytes[at];
            at += 1;
            *self = match (*self, b) {
                (Chunk::Start, _) => Chunk::Size(hex(b)?),
                (Chunk::Size(n), _) if hex(b).is_some() => Chunk::Size(n.checked_mul(16)?.checked_add(hex(b)?)?),
                (Chunk::Size(n) | Chunk::SizeLws(n), b' ' | b'\t') => Chunk::SizeLws(n),
                (Chunk::Size(n) | Chunk::SizeLws(n) | Chunk::Extension(n), b';') => Chunk::Extension(n),
                (Chunk::Size(n) | Chunk::SizeLws(n) | Chunk::Extension(n), b'\r') => Chunk::SizeLf(n),
                (Chunk::Size(_) | Chunk::SizeLws(_), _) => return None,
                (Chunk::Extension(_), b'\n') => return None,
                (Chunk::Extension(n), _) => Chunk::Extension(n),
                (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
                (Chunk::SizeLf(n), b'\n') => Chunk::Data(n),
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataLf, b'\n') => Chunk::Start,
                (Chunk::EndCr, b'\r') => Chunk::EndLf,
                (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
                (Chunk::EndCr | Chunk::Trailer, _) => Chunk::Trailer,
                (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
                (Chunk::EndLf, b'\n') => return Some((at, true)),
                (Chunk::SizeLf(_) | Chunk::DataCr | Chunk::DataLf | Chunk::TrailerLf | Chunk::EndLf, _) => return None,
                (Chunk::Data(_), _) => unreachable!("data is skipped above"),
            };
        }
        Some((at, false))
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_found_without_parsing_end_where_the_parser_ends_them() {
        let lines: &[&[u8]] = &[
            b"Host: a",
            b"X-A: 1",
            b"content-length: 5",
            b"Content-Length: 0",
            b"TRANSFER-ENCODING: chunked",
            b"Transfer-Encodings: x",
            b"Content-Lengthy: 1",
            b" Content-Length: 5",
            b"X: a\rContent-Length: 5",
            b"Cookie: content-length: 5",
        ];
        let mut checked = 0;
        for ending in [&b"\r\n"[..], b"\n"] {
            for (i, a) in lines.iter().enumerate() {
                for b in &lines[i..] {
                    let head = [&b"GET /x HTTP/1.1"[..], ending, a, ending, b, ending, ending, b"NEXT"].concat();
                    for cut in 0..=head.len() {
                        let bytes = &head[..cut];
                        let Some(len) = unframed_head_len(bytes) else { continue };
                        checked += 1;
                        let mut slots = [httparse::EMPTY_HEADER; 8];
                        let mut req = httparse::Request::new(&mut slots);
                        match req.parse(bytes) {
                            Ok(httparse::Status::Complete(n)) => {
                                assert_eq!(n, len, "{:?}", String::from_utf8_lossy(bytes));
                                assert_eq!(framing(req.headers), Ok(Some(Framing::Length(0))));
                            }
                            // Refused by hyper itself: nothing after it is read.
                            Err(_) => {}
                            Ok(httparse::Status::Partial) => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
                        }
                    }
                }
            }
        }
        assert!(checked > 50, "{checked}");
        assert_eq!(
            unframed_head_len(b"\r\nGET / HTTP/1.1\r\n\r\n"),
            None,
            "leading empty lines go to the parser"
        );
        assert_eq!(unframed_head_len(b"GET / HTTP/1.1\r\nHost: a\r\n"), None, "not ended yet");
    }

    fn check_all(pieces: &[&[u8]]) -> Vec<Option<Refusal>> {
        let mut check = FramingCheck::new(8192, 100);
        pieces.iter().map(|p| check.check(p)).collect()
    }

    fn refusal(at: usize, why: Refused) -> Option<Refusal> {
        Some(Refusal { at, why })
    }

    const BOTH: &[u8] = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    #[test]
    fn length_with_coding_is_refused_in_either_order() {
        assert_eq!(check_all(&[BOTH]), [refusal(0, Refused::LengthAndCoding)]);
        let te_first = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 3\r\nHost: a\r\n\r\n0\r\n\r\n";
        assert_eq!(check_all(&[te_first]), [refusal(0, Refused::LengthAndCoding)]);
    }

    #[test]
    fn codings_other_than_one_chunked_are_refused() {
        for te in [
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: chunked, chunked",
            "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: identity",
        ] {
            let head = format!("POST /x HTTP/1.1\r\nHost: a\r\n{te}\r\n\r\n0\r\n\r\n");
            assert_eq!(check_all(&[head.as_bytes()]), [refusal(0, Refused::Coding)], "{te}");
        }
        let plain = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked \r\n\r\n0\r\n\r\n";
        assert_eq!(check_all(&[plain]), [None]);
    }

    #[test]
    fn a_refused_head_is_found_after_bodies_of_every_kind() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
        // A body that looks like a refused head is body, not a head.
        let fake = &BOTH[..BOTH.len() - 5];
        stream.extend_from_slice(format!("POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", fake.len()).as_bytes());
        stream.extend_from_slice(fake);
        stream.extend_from_slice(
            format!(
                "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n",
                fake.len()
            )
            .as_bytes(),
        );
        stream.extend_from_slice(fake);
        stream.extend_from_slice(b"\r\n0\r\nX-Trailer: 1\r\n\r\n");
        // Empty lines before a request line belong to its head.
        let refused_at = stream.len();
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(BOTH);
        assert_eq!(check_all(&[&stream]), [refusal(refused_at, Refused::LengthAndCoding)]);
        // And with the stream cut into pieces of every size: a head split
        // across pieces is refused from the start of the piece completing it.
        let head_end = refused_at + 2 + BOTH.len() - b"0\r\n\r\n".len();
        for size in 1..60 {
            let mut check = FramingCheck::new(8192, 100);
            let found = stream
                .chunks(size)
                .enumerate()
                .find_map(|(i, piece)| check.check(piece).map(|r| i * size + r.at));
            let completing = (head_end - 1) / size * size;
            assert_eq!(found, Some(refused_at.max(completing)), "pieces of {size}");
        }
    }

    #[test]
    fn a_split_head_is_refused_at_the_start_of_the_bytes_that_complete_it() {
        let (a, b) = BOTH.split_at(40);
        assert_eq!(check_all(&[a, b]), [None, refusal(0, Refused::LengthAndCoding)]);
        let (a, b) = BOTH.split_at(BOTH.len() - 7);
        assert_eq!(check_all(&[a, b]), [None, refusal(0, Refused::LengthAndCoding)]);
    }

    #[test]
    fn what_hyper_refuses_itself_ends_the_check() {
        let mut check = FramingCheck::new(8192, 100);
        assert_eq!(
            check.check(b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            None
        );
        assert_eq!(check.expect, Expect::Nothing);
        // Heads without framing fields are not parsed: one hyper refuses
        // (a bad method, too many fields) is followed on, harmlessly, as
        // hyper reads nothing after it; one with a framing field is parsed.
        let mut check = FramingCheck::new(8192, 100);
        assert_eq!(check.check(b"G\0T / HTTP/1.1\r\n\r\n"), None);
        let mut check = FramingCheck::new(8192, 100);
        assert_eq!(check.check(b"G\0T / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), None);
        assert_eq!(check.expect, Expect::Nothing);
        let mut check = FramingCheck::new(8192, 2);
        assert_eq!(check.check(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), None);
        let mut check = FramingCheck::new(8192, 2);
        assert_eq!(check.check(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nContent-Length: 0\r\n\r\n"), None);
        assert_eq!(check.expect, Expect::Nothing);
        let mut check = FramingCheck::new(8192, 100);
        assert_eq!(
            check.check(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX"),
            None
        );
        assert_eq!(check.expect, Expect::Nothing);
        // A head longer than max_header_bytes, however it arrives.
        let long = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n", "a".repeat(9000));
        let mut check = FramingCheck::new(8192, 100);
        assert_eq!(check.check(long.as_bytes()), None);
        assert_eq!(check.expect, Expect::Nothing);
        let mut check = FramingCheck::new(8192, 100);
        for piece in long.as_bytes().chunks(100) {
            assert_eq!(check.check(piece), None);
        }
        assert_eq!(check.expect, Expect::Nothing);
        assert_eq!(check.pending.capacity(), 0);
    }

    #[test]
    fn same_lengths_twice_and_leading_empty_lines_are_followed() {
        let mut stream = b"\r\nPOST /a HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nokGET /b HTTP/1.1\r\n\r\n".to_vec();
        let at = stream.len();
        stream.extend_from_slice(BOTH);
        assert_eq!(check_all(&[&stream]), [refusal(at, Refused::LengthAndCoding)]);
    }

    #[test]
    fn chunked_bodies_end_where_hyper_ends_them() {
        let ends = |body: &[u8]| {
            let mut chunk = Chunk::Start;
            chunk.follow(body)
        };
        assert_eq!(ends(b"5\r\nhello\r\n0\r\n\r\nrest"), Some((15, true)));
        assert_eq!(ends(b"5 ;a=b\r\nhello\r\n0\r\n\r\n"), Some((20, true)));
        assert_eq!(ends(b"0\r\nA: 1\r\nB: 2\r\n\r\nGET"), Some((17, true)));
        assert_eq!(ends(b"5\r\nhel"), Some((6, false)));
        for bad in [&b"zz\r\n"[..], b"5 5\r\n", b"5\nhello", b"5\r\nhelloXX", b"5;a\n", b"0\r\nA: 1\r\r"] {
            assert_eq!(ends(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(ends(b"fffffffffffffffff\r\n"), None);
    }
}
