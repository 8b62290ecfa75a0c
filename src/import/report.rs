//! What the import did not convert, and the differences worth knowing.
//!
//! Every phase adds to one [`Report`]: a directive left out goes to the
//! not-converted list with its `file:line` and the reason; a difference in
//! behaviour that did convert becomes a note. The list is printed after the
//! import, grouped by directive and reason; the notes also head
//! `cutover.yaml`.

use std::collections::HashSet;
use std::fmt::Write as _;

use indexmap::IndexMap;

use super::nginx::{Directive, MissingInclude, Pos};

/// A directive the import did not convert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotConverted {
    pub at: Pos,
    /// The directive's name (`ssl_certificate`).
    pub directive: String,
    /// The directive as written (`ssl_certificate /etc/ssl/site.pem`).
    pub text: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub(super) struct Report {
    not_converted: Vec<NotConverted>,
    notes: Vec<String>,
    /// Directives listed by [`Report::list_once`], reached from several places.
    listed: HashSet<Pos>,
}

impl Report {
    /// Lists directive `d` as not converted.
    pub(super) fn skip(&mut self, d: &Directive, reason: impl Into<String>) {
        self.list(d.at.clone(), &d.name, d.text(), reason);
    }

    /// Lists a directive known by its position and text.
    pub(super) fn list(&mut self, at: Pos, directive: &str, text: impl Into<String>, reason: impl Into<String>) {
        self.not_converted.push(NotConverted {
            at,
            directive: directive.to_string(),
            text: text.into(),
            reason: reason.into(),
        });
    }

    /// Lists an inherited directive once, however many locations inherit it.
    pub(super) fn list_once(&mut self, at: &Pos, directive: &str, text: &str, reason: impl Into<String>) {
        if self.listed.insert(at.clone()) {
            self.list(at.clone(), directive, text, reason);
        }
    }

    /// Adds a note, once.
    pub(super) fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    pub(super) fn missing_includes(&mut self, missing: &[MissingInclude]) {
        for m in missing {
            self.list(
                m.at.clone(),
                "include",
                format!("include {}", m.path.display()),
                format!("cannot read it ({}): the directives in it were not imported", m.error),
            );
        }
    }

    /// Where the list ends now, for [`Report::take_since`].
    pub(super) fn mark(&self) -> usize {
        self.not_converted.len()
    }

    /// Takes back the entries listed since `mark`: those of a location's
    /// directives, which count only if the location itself converts.
    pub(super) fn take_since(&mut self, mark: usize) -> Vec<NotConverted> {
        self.not_converted.split_off(mark)
    }

    pub(super) fn extend(&mut self, entries: &[NotConverted]) {
        self.not_converted.extend(entries.iter().cloned());
    }

    pub(super) fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The not-converted list in file order, and the notes.
    pub(super) fn finish(mut self) -> (Vec<NotConverted>, Vec<String>) {
        self.not_converted.sort_by(|a, b| a.at.cmp(&b.at));
        (self.not_converted, self.notes)
    }
}

/// The not-converted list grouped by directive and reason, then the notes.
pub(super) fn render(items: &[NotConverted], notes: &[String]) -> String {
    let mut o = String::new();
    if items.is_empty() {
        let _ = writeln!(o, "Every directive was converted.");
    } else {
        let _ = writeln!(
            o,
            "Not converted ({} {}; review each before switching):",
            items.len(),
            if items.len() == 1 { "directive" } else { "directives" }
        );
        let mut groups: IndexMap<(&str, &str), Vec<&NotConverted>> = IndexMap::new();
        for n in items {
            groups.entry((&n.directive, &n.reason)).or_default().push(n);
        }
        for ((directive, reason), list) in &groups {
            let _ = writeln!(o, "\n  {directive}: {reason}");
            for n in list {
                let _ = writeln!(o, "    {}  {}", n.at, n.text);
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(o, "\nNotes:");
        for n in notes {
            let _ = writeln!(o, "  - {n}");
        }
    }
    o
}

/// Why a directive with no cutover equivalent was left out.
pub(super) fn reason_for(name: &str) -> String {
    let r = match name {
        n if n.starts_with("ssl") => "cutover's TLS is not tunable: rustls' safe defaults (TLS 1.2 and 1.3, no legacy ciphers)",
        n if n.starts_with("proxy_ssl") => {
            "cutover verifies https backends against the system roots or tls.ca_file; nothing else is tunable"
        }
        "http2" | "http3" | "quic" => "protocol setting: cutover serves HTTP/1.1 and HTTP/2 (h2c, or ALPN h2 with TLS) on every listener",
        "root" | "alias" => "a location's own alias or root becomes a file backend; one inherited from the server is not converted",
        "index" | "try_files" | "autoindex" | "expires" | "sendfile" | "open_file_cache" => {
            "not converted: cutover's file backends serve a directory's index.html, Last-Modified, ETag and ranges, nothing more"
        }
        "return" | "rewrite" | "error_page" | "if" | "set" | "break" => {
            "cutover does not answer or rewrite requests itself (only a route backend's rewrite: prefix)"
        }
        "allow" | "deny" | "auth_basic" | "auth_basic_user_file" | "auth_request" | "satisfy" | "limit_except" => {
            "ACCESS CONTROL NOT CONVERTED: nginx refused some requests here; cutover forwards them"
        }
        "limit_req" | "limit_req_zone" | "limit_conn" | "limit_conn_zone" | "limit_rate" => "cutover does not limit request rates",
        "access_log" | "error_log" | "log_format" | "log_not_found" => {
            "cutover writes its own access log (access_log: { format: combined | json, path })"
        }
        "add_header" | "more_set_headers" | "proxy_hide_header" | "proxy_pass_header" | "proxy_cookie_path" | "proxy_cookie_domain" => {
            "cutover does not change response headers"
        }
        "proxy_redirect" => "cutover does not rewrite Location headers",
        "gzip_vary" => "cutover always adds Vary: Accept-Encoding to what it gzips",
        "gzip_static" => "cutover does not serve files: requests nginx served from disk must be served by a backend",
        n if n.starts_with("gzip") => {
            "cutover's compression has gzip, gzip_types, gzip_min_length and gzip_comp_level only; it gzips answers to proxied \
             requests (Via) too"
        }
        n if n.starts_with("brotli") => "cutover compresses with gzip only (compression: { gzip: true })",
        "proxy_request_buffering" => {
            "cutover streams request bodies; one of unknown length (chunked) is read ahead up to \
             server.unsized_body_buffer_bytes (1 MiB; 0 streams it at once) and, ending within it, sent with Content-Length"
        }
        n if n.starts_with("proxy_buffer") || n == "proxy_buffers" || n == "proxy_max_temp_file_size" => {
            "cutover streams bodies both ways without buffering"
        }
        n if n.starts_with("proxy_cache") => "cutover does not cache",
        "proxy_next_upstream" | "proxy_next_upstream_tries" | "proxy_next_upstream_timeout" => {
            "cutover retries a request that got no answer once, on another backend of the route (route retry)"
        }
        "proxy_send_timeout" => "cutover has no send timeout (backend timeout is the deadline for the response head)",
        "send_timeout" => "set server.send_timeout instead: one value for every listener (default 60s, as nginx's)",
        "keepalive" | "keepalive_requests" | "keepalive_timeout" => {
            "cutover keeps idle connections itself (backend pool_max_idle, pool_idle_timeout)"
        }
        "ip_hash" | "hash" | "least_conn" | "random" | "least_time" | "sticky" | "ntlm" => {
            "cutover balances by weight between backends; this balancing method is not available"
        }
        "map" | "geo" | "split_clients" => "variables are not converted",
        n if n.ends_with("_pass") => "only HTTP proxy_pass is converted",
        "events"
        | "user"
        | "worker_processes"
        | "worker_connections"
        | "worker_rlimit_nofile"
        | "pid"
        | "daemon"
        | "master_process"
        | "load_module"
        | "include"
        | "types"
        | "default_type"
        | "server_tokens"
        | "tcp_nopush"
        | "tcp_nodelay"
        | "types_hash_max_size"
        | "server_names_hash_bucket_size"
        | "resolver" => "nginx setting with no cutover equivalent",
        "stream" | "mail" => "only HTTP proxying is converted",
        _ => "no cutover equivalent",
    };
    r.to_string()
}
