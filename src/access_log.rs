//! Access log: nginx's `combined` format, byte for byte, or JSON lines.
//! Lines are formatted on the request's task and written by one background
//! thread, so a slow disk never stalls the proxy. A log file is opened
//! again on request (SIGUSR1, as nginx does), for logrotate.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use http::{HeaderValue, Method, Uri, Version};
use time::{OffsetDateTime, UtcOffset};

use crate::config::{AccessLogSettings, LogFormat, LogTarget};
use crate::metrics::Metrics;

const QUEUE_LINES: usize = 65_536;

/// What the log needs from a request, captured when it arrives.
pub struct LogRecord {
    pub peer: IpAddr,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub authorization: Option<HeaderValue>,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
    pub route: Option<Arc<str>>,
    pub backend: Option<Arc<str>>,
}

/// How the exchange ended.
pub struct Outcome {
    pub status: u16,
    pub body_bytes: u64,
    pub duration: Duration,
    pub upstream_status: Option<u16>,
}

enum Message {
    Line(String),
    Flush(std::sync::mpsc::Sender<()>),
    /// Wakes the writer to see `reopen`.
    Reopen,
}

pub struct AccessLog {
    format: LogFormat,
    queue: SyncSender<Message>,
    metrics: Arc<Metrics>,
    /// Set to have the writer open its file again; a flag rather than only
    /// a message, so a full queue cannot lose the request.
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// Starts the writer; `None` when logging is off.
    pub fn start(settings: &AccessLogSettings, metrics: Arc<Metrics>) -> std::io::Result<Option<AccessLog>> {
        let (sink, path): (Box<dyn Write + Send>, _) = match &settings.target {
            LogTarget::Off => return Ok(None),
            LogTarget::Stdout => (Box::new(std::io::stdout()), None),
            LogTarget::File(path) => (Box::new(open_log(path)?), Some(path.clone())),
        };
        let (queue, rx) = std::sync::mpsc::sync_channel(QUEUE_LINES);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            out: std::io::BufWriter::with_capacity(64 * 1024, sink),
            path,
            reopen: reopen.clone(),
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(Some(AccessLog {
            format: settings.format,
            queue,
            metrics,
            reopen,
        }))
    }

    /// Has the log file opened again (by its name), once the lines queued
    /// so far are written: logrotate has moved the old one away.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        let _ = self.queue.try_send(Message::Reopen);
    }

    pub fn write(&self, rec: &LogRecord, outcome: &Outcome) {
        let line = match self.format {
            LogFormat::Combined => combined_line(rec, outcome, now()),
            LogFormat::Json => json_line(rec, outcome, now()),
        };
        if let Err(TrySendError::Full(_)) = self.queue.try_send(Message::Line(line)) {
            self.metrics.access_log_dropped.inc();
        }
    }

    /// Waits (bounded) until every line queued so far is written.
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.queue.send(Message::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(2));
        }
    }
}

fn open_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

/// The background thread's side: the sink, and the file it may open again.
struct Writer {
    out: std::io::BufWriter<Box<dyn Write + Send>>,
    path: Option<PathBuf>,
    reopen: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Message>) {
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Message::Line(line) => {
                        let _ = self.out.write_all(line.as_bytes());
                    }
                    Message::Flush(ack) => {
                        let _ = self.out.flush();
                        let _ = ack.send(());
                    }
                    Message::Reopen => {}
                }
                next = rx.try_recv().ok();
            }
            let _ = self.out.flush();
            if self.reopen.swap(false, Ordering::Acquire) {
                self.reopen_file();
            }
        }
    }

    /// Opens the file by its name again; one that cannot be opened is
    /// logged and the old one kept: no line is lost for it.
    fn reopen_file(&mut self) {
        let Some(path) = &self.path else { return };
        match open_log(path) {
            Ok(file) => {
                let _ = self.out.flush();
                *self.out.get_mut() = Box::new(file);
                tracing::info!(file = %path.display(), "access log opened again");
            }
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot open the access log again: writing on to the old file"),
        }
    }
}

static LOCAL_OFFSET: OnceLock<UtcOffset> = OnceLock::new();

/// Reads the local UTC offset; call before starting threads (the `time`
/// crate refuses to read it from a multi-threaded process).
pub fn init_local_offset() {
    let offset = UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC);
    let _ = LOCAL_OFFSET.set(offset);
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().to_offset(*LOCAL_OFFSET.get_or_init(|| UtcOffset::UTC))
}

/// nginx's `$time_local`: `22/Nov/2026:01:31:56 +0000`.
fn time_local(t: OffsetDateTime) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (oh, om, _) = t.offset().as_hms();
    let sign = if t.offset().is_negative() { '-' } else { '+' };
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} {sign}{:02}{:02}",
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second(),
        oh.unsigned_abs(),
        om.unsigned_abs()
    )
}

/// nginx's default log escaping: `"`, `\`, control bytes and bytes ≥ 0x7f
/// become `\xHH`; an empty value is `-`.
fn push_escaped(out: &mut String, bytes: &[u8]) {
    if bytes.is_empty() {
        out.push('-');
        return;
    }
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\x{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
}

fn version_text(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The request target as nginx logs it: as sent for HTTP/1, the path for HTTP/2.
fn request_target(rec: &LogRecord) -> std::borrow::Cow<'_, str> {
    match (rec.version, rec.uri.path_and_query()) {
        (Version::HTTP_2 | Version::HTTP_3, Some(pq)) => pq.as_str().into(),
        _ => rec.uri.to_string().into(),
    }
}

/// `$remote_user`: the user name of a Basic `Authorization` header.
fn remote_user(auth: Option<&HeaderValue>) -> Option<String> {
    let value = auth?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8_lossy(&decoded).into_owned();
    Some(text.split_once(':').map_or(text.clone(), |(u, _)| u.to_string()))
}

/// `$remote_addr - $remote_user [$time_local] "$request" $status
/// $body_bytes_sent "$http_referer" "$http_user_agent"`, newline-terminated.
pub fn combined_line(rec: &LogRecord, outcome: &Outcome, t: OffsetDateTime) -> String {
    let mut out = String::with_capacity(192);
    out.push_str(&rec.peer.to_string());
    out.push_str(" - ");
    match remote_user(rec.authorization.as_ref()) {
        Some(u) => push_escaped(&mut out, u.as_bytes()),
        None => out.push('-'),
    }
    out.push_str(" [");
    out.push_str(&time_local(t));
    out.push_str("] \"");
    let request = format!("{} {} {}", rec.method, request_target(rec), version_text(rec.version));
    push_escaped(&mut out, request.as_bytes());
    out.push_str(&format!("\" {} {} \"", outcome.status, outcome.body_bytes));
    push_escaped(&mut out, rec.referer.as_ref().map_or(&[][..], |v| v.as_bytes()));
    out.push_str("\" \"");
    push_escaped(&mut out, rec.user_agent.as_ref().map_or(&[][..], |v| v.as_bytes()));
    out.push_str("\"\n");
    out
}

fn json_line(rec: &LogRecord, outcome: &Outcome, t: OffsetDateTime) -> String {
    let text = |v: &Option<HeaderValue>| v.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let value = serde_json::json!({
        "time": t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "remote_addr": rec.peer.to_string(),
        "remote_user": remote_user(rec.authorization.as_ref()),
        "method": rec.method.as_str(),
        "uri": request_target(rec),
        "protocol": version_text(rec.version),
        "status": outcome.status,
        "body_bytes_sent": outcome.body_bytes,
        "referer": text(&rec.referer),
        "user_agent": text(&rec.user_agent),
        "request_id": text(&rec.request_id),
        "route": rec.route.as_deref(),
        "backend": rec.backend.as_deref(),
        "upstream_status": outcome.upstream_status,
        "duration_ms": (outcome.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
    });
    let mut line = value.to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LogRecord {
        LogRecord {
            peer: "127.0.0.1".parse().unwrap(),
            method: Method::GET,
            uri: "/api/users/?q=\"x\"".parse().unwrap_or_else(|_| "/api/users/".parse().unwrap()),
            version: Version::HTTP_11,
            authorization: Some(HeaderValue::from_static("Basic YWRhOnNlY3JldA==")),
            referer: None,
            user_agent: Some(HeaderValue::from_static("curl/7.88.1")),
            request_id: None,
            route: None,
            backend: None,
        }
    }

    #[test]
    fn combined_matches_nginx_byte_for_byte() {
        let t = time::macros::datetime!(2026-11-22 01:31:56 +01:00);
        let outcome = Outcome {
            status: 200,
            body_bytes: 612,
            duration: Duration::ZERO,
            upstream_status: Some(200),
        };
        let mut rec = record();
        rec.uri = "/api/users/".parse().unwrap();
        assert_eq!(
            combined_line(&rec, &outcome, t),
            "127.0.0.1 - ada [22/Nov/2026:01:31:56 +0100] \"GET /api/users/ HTTP/1.1\" 200 612 \"-\" \"curl/7.88.1\"\n"
        );
    }

    #[test]
    fn unsafe_bytes_are_escaped_like_nginx() {
        let mut s = String::new();
        push_escaped(&mut s, b"a\"b\\c\x01\xff");
        assert_eq!(s, "a\\x22b\\x5Cc\\x01\\xFF");
    }
}
