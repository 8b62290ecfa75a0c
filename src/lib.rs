//! cutover: a traffic-splitting reverse proxy for migrations.
//!
//! Data flows one way: [`config`] files are compiled into immutable
//! [`table::Table`]s held behind an `ArcSwap` in [`live::Live`]; each request
//! takes one snapshot, [`routing`] picks its route, [`split`] its backend,
//! [`proxy`] forwards it through [`upstream`] (and [`mirror`] shadows it),
//! and [`metrics`] and [`access_log`] observe it. docs/ARCHITECTURE.md has
//! the map.
//!
//! Changes flow one way too: a [`change::Change`] (shift, rollback, undo, a
//! step of the guard's ramp, an edit of the files, a table from the
//! [`fleet`]) is applied by [`live::Live::apply`] and persisted through a
//! [`change::WeightStore`] (the weight file, or the fleet's table in etcd);
//! the [`guard`] sits above `Live`, and the windows it reads are recorded
//! per table ([`table::window`]).

pub mod access_log;
pub mod admin;
pub mod change;
pub mod clock;
pub mod compare;
pub mod config;
pub mod demo;
pub mod fleet;
pub mod guard;
pub mod health;
pub mod import;
pub mod live;
pub mod metrics;
pub mod mirror;
pub mod proxy;
pub mod rates;
pub mod reload;
pub mod replay;
pub mod replica;
pub mod report;
pub mod routing;
pub mod server;
pub mod split;
pub mod table;
pub mod tls;
pub mod upstream;

/// A boxed error of any kind, for bounds that take every error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
