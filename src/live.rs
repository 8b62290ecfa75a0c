//! The live table behind an `ArcSwap`: readers take one snapshot per request;
//! changes build a whole new table and publish it with one pointer store.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError, Weights, format_percent};
use crate::metrics::Metrics;
use crate::table::{Table, UpstreamCache};

pub struct Live {
    table: ArcSwap<Table>,
    /// Serialises table changes; readers never take it.
    upstreams: Mutex<UpstreamCache>,
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
    last_reload_error: Mutex<Option<String>>,
}

impl Live {
    pub fn new(config: Config, weights: Weights, metrics: Arc<Metrics>) -> Live {
        let mut upstreams = UpstreamCache::default();
        let table = Table::build(Arc::new(config), weights, &mut upstreams, &metrics);
        let live = Live {
            table: ArcSwap::from_pointee(table),
            upstreams: Mutex::new(upstreams),
            metrics,
            ready: AtomicBool::new(false),
            last_reload_error: Mutex::new(None),
        };
        live.publish(&live.load());
        live
    }

    /// Reads the config file and its weight file and compiles both.
    pub fn read_files(config_path: &Path) -> Result<(Config, Weights), ConfigError> {
        let config = Config::load(config_path)?;
        let weights = Weights::load(&config)?;
        Ok((config, weights))
    }

    /// The current table. Take it once per request.
    pub fn load(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Builds a table from `config` and `weights` and makes it live.
    pub fn install(&self, config: Arc<Config>, weights: Weights) -> Arc<Table> {
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        let table = Arc::new(Table::build(config, weights, &mut upstreams, &self.metrics));
        self.table.store(table.clone());
        drop(upstreams);
        self.publish(&table);
        table
    }

    /// Re-reads both files; on any error the current table keeps serving.
    pub fn reload(&self) -> Result<Arc<Table>, ConfigError> {
        let current = self.load();
        match Live::read_files(&current.config.path) {
            Ok((config, weights)) => {
                if config.listeners != current.config.listeners
                    || config.admin.addr != current.config.admin.addr
                {
                    tracing::warn!(
                        "listener or admin addresses changed: they take effect after a restart"
                    );
                }
                let table = self.install(Arc::new(config), weights);
                self.metrics.config_reloads.with_label_values(&["ok"]).inc();
                *self
                    .last_reload_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!(version = %table.version, "config reloaded");
                Ok(table)
            }
            Err(err) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                *self
                    .last_reload_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(err.to_string());
                tracing::error!("config reload rejected, the previous config keeps serving: {err}");
                Err(err)
            }
        }
    }

    pub fn last_reload_error(&self) -> Option<String> {
        self.last_reload_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Mirrors the table into the weight and version gauges.
    fn publish(&self, table: &Table) {
        let m = &self.metrics;
        m.backend_weight.reset();
        for (ri, route) in table.config.routes.iter().enumerate() {
            for (b, &w) in route.backends.iter().zip(table.weights.route(ri)) {
                m.backend_weight
                    .with_label_values(&[&route.name, &b.spec.name])
                    .set(format_percent(w).parse().unwrap_or(0.0));
            }
        }
        m.config_version.reset();
        m.config_version.with_label_values(&[&table.version]).set(1);
    }
}
