//! `cutover replay`: yesterday's traffic, from an access log, asked of each
//! route's stable backend and its mirror target, and compared with the
//! route's own rules and noise learning, before a single user is moved.
//!
//! - [`log`]: the log's lines as requests (nginx `combined`, cutover JSON),
//!   read as the untrusted input they are;
//! - [`run`]: routing each request with the config's own table, pacing,
//!   and handing it to the mirror's [`compare_backends`](crate::mirror::compare_backends),
//!   which compares and records exactly as for live mirrored traffic.
//!
//! Only `GET`, `HEAD` and `OPTIONS` are ever sent, and of those only the
//! methods the route mirrors: whatever else the log holds is counted, not
//! replayed.

pub mod log;
pub mod run;

use serde::{Deserialize, Serialize};

pub use run::{Options, Replay, ReplayError};

/// First malformed lines kept, to point at them.
pub const MALFORMED_SHOWN: usize = 5;

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
