//! A raw client: hand-written bytes on a connection of its own, read back
//! as they came (for what a well-behaved client library would never send),
//! and HTTP/2 frames through the `h2` crate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back on one connection.
pub struct RawReply {
    pub bytes: Vec<u8>,
    /// The peer closed (or reset) the connection.
    pub closed: bool,
    pub elapsed: Duration,
}

impl RawReply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The status code of the first response.
    pub fn status(&self) -> Option<u16> {
        let text = self.text();
        let line = text.lines().next()?;
        line.strip_prefix("HTTP/1.1 ")
            .or_else(|| line.strip_prefix("HTTP/1.0 "))?
            .get(..3)?
            .parse()
            .ok()
    }

    /// How many responses the connection carried.
    pub fn responses(&self) -> usize {
        let text = self.text();
        text.match_indices("HTTP/1.1 ")
            .filter(|(i, _)| *i == 0 || text[..*i].ends_with('\n'))
            .count()
    }

    /// Everything after the first response head.
    pub fn body(&self) -> &[u8] {
        let at = self
            .bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(self.bytes.len(), |i| i + 4);
        &self.bytes[at..]
    }
}

/// Writes `raw` on a new connection and reads until the peer closes it (5 s limit).
pub async fn exchange(addr: SocketAddr, raw: &[u8]) -> RawReply {
    exchange_for(addr, raw, Duration::from_secs(5)).await
}

/// Writes `raw` on a new connection and reads until the peer closes it, or `wait` passes.
pub async fn exchange_for(addr: SocketAddr, raw: &[u8], wait: Duration) -> RawReply {
    let stream = TcpStream::connect(addr).await.unwrap();
    exchange_on(stream, raw, wait).await
}

/// Like [`exchange`], from the loopback address `source` (e.g. `127.0.0.2`).
pub async fn exchange_from(source: &str, addr: SocketAddr, raw: &[u8]) -> RawReply {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    exchange_on(stream, raw, Duration::from_secs(5)).await
}

async fn exchange_on(mut stream: TcpStream, raw: &[u8], wait: Duration) -> RawReply {
    let started = Instant::now();
    // The peer may refuse and close before reading everything: a failed write is fine.
    let _ = stream.write_all(raw).await;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + wait;
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    RawReply {
        bytes,
        closed,
        elapsed: started.elapsed(),
    }
}

/// Writes `raw` to a new connection to `addr` and returns all that came
/// back once the peer closed (5 s limit). Send `Connection: close` to end a
/// good exchange.
pub async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let reply = exchange(addr, raw).await;
    assert!(reply.closed, "raw exchange within 5s; got so far: {:?}", reply.text());
    reply.text()
}

/// Sends `pieces` on one connection, pausing between them so that each
/// arrives in a read of its own, and reads until the peer closes (5 s
/// without a byte: gives up).
pub async fn exchange_in_pieces(addr: SocketAddr, pieces: &[&[u8]], pause: Duration) -> RawReply {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await {
                Err(_) => break false,
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            }
        };
        (bytes, closed)
    });
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        if wr.write_all(piece).await.is_err() {
            break;
        }
    }
    let (bytes, closed) = reader.await.unwrap();
    RawReply {
        bytes,
        closed,
        elapsed: started.elapsed(),
    }
}

/// Connects, writes `head`, then one byte of `drip` every 200 ms; returns how
/// long until the peer closed the connection (None: still open after 8 s)
/// and what it sent.
pub async fn drip(addr: SocketAddr, head: &[u8], drip: &[u8]) -> (Option<Duration>, Vec<u8>) {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return (started.elapsed(), got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    let _ = wr.write_all(head).await;
    let mut bytes = drip.iter().cycle();
    while !reader.is_finished() && started.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(b) = bytes.next()
            && wr.write_all(&[*b]).await.is_err()
        {
            break;
        }
    }
    match tokio::time::timeout(Duration::from_secs(1), reader).await {
        Ok(Ok((at, got))) => (Some(at), got),
        _ => (None, Vec::new()),
    }
}

/// Reads from `stream` until the end of a head (`\r\n\r\n`); `None` when
/// the peer closes first.
pub async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    Some(seen)
}

/// One response read off a kept-alive connection.
#[derive(Debug)]
pub struct RawResponse {
    /// Status line and header lines, without the blank line.
    pub head: String,
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }

    /// The response says the connection closes after it.
    pub fn says_close(&self) -> bool {
        self.headers
            .iter()
            .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"))
    }
}

/// Reads one response framed by Content-Length (none: an empty body) from
/// `stream`, keeping any bytes past it in `pending` for the next call;
/// `None` when the peer closes first.
pub async fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<RawResponse> {
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let (status, headers) = parse_head(&head);
            let length: usize = header_of(&headers, "content-length").map_or(0, |v| v.parse().unwrap());
            if pending.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&pending[end + 4..end + 4 + length]).into_owned();
                pending.drain(..end + 4 + length);
                return Some(RawResponse {
                    head,
                    status,
                    headers,
                    body,
                });
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the peer has closed `stream`: reads until end of stream, giving
/// up (open) after `wait`.
pub async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// Splits a raw HTTP/1.1 response into status code, headers (lower-case
/// names) and body (chunked bodies decoded).
pub fn parse_raw_response(raw: &str) -> (u16, Vec<(String, String)>, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response head in {raw:?}"));
    let (code, headers) = parse_head(head);
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").expect("chunk size line");
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (code, headers, body)
}

/// The status code and headers (lower-case names) of a response head
/// without its blank line.
fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap();
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status:?}"));
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (code, headers)
}

/// The first value of header `name` (lower case) in parsed headers.
pub fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

// ---------------------------------------------------------------- HTTP/2 frames

/// An HTTP/2 connection (prior knowledge) through the `h2` crate, which
/// lets a test reset streams and send DATA that contradicts the head.
pub async fn h2_connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(stream).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

pub fn h2_get(path: &str) -> Request<()> {
    Request::get(format!("http://app{path}")).body(()).unwrap()
}
