//! The replay section of a parity report: what `cutover replay` read, sent
//! and left out.

use serde::{Deserialize, Serialize};

/// What a replay read, sent and left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplaySummary {
    /// The log, as named.
    pub log: String,
    /// Lines read.
    pub lines: u64,
    /// Requests sent to both backends of their route.
    pub replayed: u64,
    pub not_replayed: NotReplayed,
    /// Lines that are not a request; the first few are listed.
    pub malformed: u64,
    pub malformed_lines: Vec<MalformedLine>,
    /// `--limit` stopped the replay before the end of the log.
    pub limit_reached: bool,
    /// Ctrl-C stopped it: the report covers what was compared by then.
    pub interrupted: bool,
    /// When the replay began and ended, RFC 3339 UTC.
    pub started: String,
    pub finished: String,
}

/// Requests of the log that were not sent, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotReplayed {
    /// A mutating (or any other unsafe) method, or one the route does not mirror.
    pub method: u64,
    /// A target that is not an origin-form path (or that routing refuses).
    pub target: u64,
    /// No route matches.
    pub no_route: u64,
    /// The route has no `mirror`, so no compare rules.
    pub not_mirrored: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MalformedLine {
    /// Line number, from 1.
    pub line: u64,
    pub error: String,
}
