//! cutover: a traffic-splitting reverse proxy for migrations.
//!
//! Data flows one way: [`config`] files are compiled into immutable
//! [`table::Table`]s held behind an `ArcSwap` in [`live::Live`]; each request
//! takes one snapshot, [`routing`] picks its route, [`split`] its backend,
//! [`proxy`] forwards it, and [`metrics`] and [`access_log`] observe it.

pub mod access_log;
pub mod admin;
pub mod config;
pub mod control;
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
pub mod routing;
pub mod server;
pub mod split;
pub mod table;
pub mod tls;
