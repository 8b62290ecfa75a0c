//! The floor of a proxy with an HTTP/1 codec of its own (Pingora's road:
//! `httparse` and hand-written framing), beside `floor.rs`, the floor of a
//! proxy on hyper's codec: what a codec of cutover's own could save at most.
//!
//! It serves exactly as `floor.rs` does (one current-thread runtime per
//! worker on `SO_REUSEPORT`, one upstream connection per client connection,
//! `X-Forwarded-For` added), with no hyper in the path: each request head is
//! parsed with `httparse` and written out again without its hop-by-hop
//! headers, as is each response head; bodies are framed by
//! `Content-Length` only. It is a measuring stick, not a proxy: it does none
//! of the checks a proxy facing clients needs (no chunked bodies, no
//! timeouts, no limits beyond the buffer, no smuggling defences), so it is
//! cheaper than any real codec could be.
//!
//! Usage: `bench-floor-native LISTEN UPSTREAM [WORKERS]`, e.g.
//! `cargo run --release --example bench-floor-native -- 127.0.0.1:19151 127.0.0.1:19101 2`.

use std::io::{Error, ErrorKind, Result};
use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_HEADERS: usize = 64;
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY_READ: u64 = 256 * 1024;

#[path = "floor_threads.rs"]
mod floor_threads;

fn main() -> Result<()> {
    floor_threads::run("bench-floor-native", serve_connection)
}

async fn serve_connection(client: TcpStream, peer: SocketAddr, upstream: SocketAddr) {
    let mut conn = Connection::new(client, peer, upstream);
    if conn.serve().await.is_err() {
        let _ = conn
            .client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
    }
}

/// How a message's body is framed.
#[derive(Clone, Copy)]
enum Framing {
    Length(u64),
    UntilClose,
}

struct Connection {
    client: TcpStream,
    upstream_addr: SocketAddr,
    upstream: Option<TcpStream>,
    forwarded_for: String,
    from_client: BytesMut,
    from_upstream: BytesMut,
    head: Vec<u8>,
}

impl Connection {
    fn new(client: TcpStream, peer: SocketAddr, upstream_addr: SocketAddr) -> Connection {
        Connection {
            client,
            upstream_addr,
            upstream: None,
            forwarded_for: peer.ip().to_string(),
            from_client: BytesMut::with_capacity(8192),
            from_upstream: BytesMut::with_capacity(8192),
            head: Vec::with_capacity(1024),
        }
    }

    /// Requests in turn until the client closes, or a message asks to.
    async fn serve(&mut self) -> Result<()> {
        loop {
            let request = loop {
                if let Some(request) = self.request_head()? {
                    break request;
                }
                if self.from_client.len() >= MAX_HEAD {
                    return Err(Error::new(ErrorKind::InvalidData, "request head too large"));
                }
                if self.client.read_buf(&mut self.from_client).await? == 0 {
                    return Ok(());
                }
            };
            if self.upstream.is_none() {
                let stream = TcpStream::connect(self.upstream_addr).await?;
                stream.set_nodelay(true)?;
                self.upstream = Some(stream);
            }
            let upstream = self.upstream.as_mut().expect("connected above");
            upstream.write_all(&self.head).await?;
            if let Framing::Length(n) = request.body {
                copy_body(&mut self.from_client, &mut self.client, upstream, n).await?;
            }

            let response = loop {
                if let Some(response) = response_head(&self.from_upstream, &mut self.head, request.head_only)? {
                    break response;
                }
                if self.from_upstream.len() >= MAX_HEAD || upstream.read_buf(&mut self.from_upstream).await? == 0 {
                    return Err(Error::new(ErrorKind::InvalidData, "no response head"));
                }
            };
            self.from_upstream.advance(response.head_len);
            match response.body {
                Framing::Length(n) => {
                    // The head and as much of the body as has arrived, in one write.
                    let now = self.from_upstream.len().min(n as usize);
                    self.head.extend_from_slice(&self.from_upstream[..now]);
                    self.from_upstream.advance(now);
                    self.client.write_all(&self.head).await?;
                    copy_body(&mut self.from_upstream, upstream, &mut self.client, n - now as u64).await?;
                }
                Framing::UntilClose => {
                    self.client.write_all(&self.head).await?;
                    self.client.write_all(&self.from_upstream).await?;
                    tokio::io::copy(upstream, &mut self.client).await?;
                    return Ok(());
                }
            }
            if request.close || response.close {
                return Ok(());
            }
        }
    }

    /// Parses the buffered request head, if whole, into `self.head` as it
    /// goes to the upstream, and consumes it.
    fn request_head(&mut self) -> Result<Option<Request>> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(&self.from_client).map_err(invalid)? {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => return Ok(None),
        };
        let method = req.method.expect("complete");
        let head = &mut self.head;
        head.clear();
        head.extend_from_slice(method.as_bytes());
        head.push(b' ');
        head.extend_from_slice(req.path.expect("complete").as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        let fields = copy_fields(req.headers, head)?;
        if !fields.host {
            return Err(Error::new(ErrorKind::InvalidData, "no Host"));
        }
        push_header(head, b"x-forwarded-for", self.forwarded_for.as_bytes());
        head.extend_from_slice(b"\r\n");
        let request = Request {
            body: Framing::Length(fields.length.unwrap_or(0)),
            close: fields.close || req.version == Some(0),
            head_only: method == "HEAD",
        };
        self.from_client.advance(head_len);
        Ok(Some(request))
    }
}

struct Request {
    body: Framing,
    close: bool,
    head_only: bool,
}

struct Response {
    head_len: usize,
    body: Framing,
    close: bool,
}

/// Parses the buffered response head, if whole, into `head` as it goes to
/// the client (without consuming it: the caller does).
fn response_head(buf: &[u8], head: &mut Vec<u8>, head_only: bool) -> Result<Option<Response>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(buf).map_err(invalid)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let code = res.code.expect("complete");
    if (100..200).contains(&code) {
        return Err(Error::new(ErrorKind::Unsupported, "interim responses"));
    }
    head.clear();
    head.extend_from_slice(b"HTTP/1.1 ");
    // httparse takes exactly three digits.
    head.extend_from_slice(&[b'0' + (code / 100) as u8, b'0' + (code / 10 % 10) as u8, b'0' + (code % 10) as u8]);
    head.push(b' ');
    head.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    let fields = copy_fields(res.headers, head)?;
    let mut body = fields.length.map_or(Framing::UntilClose, Framing::Length);
    let close = fields.close || res.version == Some(0);
    if head_only || code == 204 || code == 304 {
        body = Framing::Length(0);
    }
    head.extend_from_slice(b"\r\n");
    Ok(Some(Response {
        head_len,
        body,
        close: close || matches!(body, Framing::UntilClose),
    }))
}

/// What the framing fields of a head said.
struct Fields {
    length: Option<u64>,
    close: bool,
    host: bool,
}

/// Copies a head's fields to `head`, all but the hop-by-hop ones, and reads
/// the framing ones on the way.
fn copy_fields(fields: &[httparse::Header<'_>], head: &mut Vec<u8>) -> Result<Fields> {
    let mut read = Fields {
        length: None,
        close: false,
        host: false,
    };
    for h in fields {
        if h.name.eq_ignore_ascii_case("content-length") {
            read.length = Some(content_length(h.value)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Error::new(ErrorKind::Unsupported, "chunked bodies"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            read.close |= h.value.eq_ignore_ascii_case(b"close");
            continue;
        } else if is_hop_by_hop(h.name) {
            continue;
        }
        read.host |= h.name.eq_ignore_ascii_case("host");
        push_header(head, h.name.as_bytes(), h.value);
    }
    Ok(read)
}

/// Copies `len` body bytes from `buffered` (what has arrived), then `from`, to `to`.
async fn copy_body(buffered: &mut BytesMut, from: &mut TcpStream, to: &mut TcpStream, mut len: u64) -> Result<()> {
    while len > 0 {
        if buffered.is_empty() {
            // Large bodies in large reads, as hyper's adaptive buffer does.
            buffered.reserve(len.min(MAX_BODY_READ) as usize);
            if from.read_buf(buffered).await? == 0 {
                return Err(Error::new(ErrorKind::UnexpectedEof, "body cut short"));
            }
        }
        let n = buffered.len().min(len as usize);
        to.write_all(&buffered[..n]).await?;
        buffered.advance(n);
        len -= n as u64;
    }
    Ok(())
}

fn push_header(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

fn is_hop_by_hop(name: &str) -> bool {
    ["keep-alive", "proxy-connection", "te", "trailer", "upgrade"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

fn content_length(value: &[u8]) -> Result<u64> {
    std::str::from_utf8(value)
        .ok()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::new(ErrorKind::InvalidData, "invalid Content-Length"))
}

fn invalid(e: httparse::Error) -> Error {
    Error::new(ErrorKind::InvalidData, e)
}
