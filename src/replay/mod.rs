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

pub use crate::report::replay::{MalformedLine, NotReplayed, ReplaySummary};
pub use run::{Options, Replay, ReplayError};

/// First malformed lines kept, to point at them.
pub const MALFORMED_SHOWN: usize = 5;
