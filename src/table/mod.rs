//! The live routing table: a compiled config plus a weight table, with the
//! pools and metric handles each request needs already resolved. Immutable;
//! a change builds a new one. Beside it, the guard's per-table recorder.

pub mod window;

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::Arc;

use crate::config::{BackendSpec, Config, Weights};
use crate::health::{BackendHealth, HealthRegistry};
use crate::metrics::{Metrics, NO_ROUTE, RouteBackendMetrics, ShadowOutcomeCounters};
use crate::split::Split;
use crate::upstream::BackendClient;

pub use window::RouteGuard;

pub struct Table {
    pub config: Arc<Config>,
    pub weights: Weights,
    /// Hash of the config text and the weight table.
    pub version: String,
    /// Parallel to `config.routes`.
    pub routes: Box<[LiveRoute]>,
    /// Metrics for requests that matched no route.
    pub unmatched: RouteBackendMetrics,
    pub metrics: Arc<Metrics>,
}

pub struct LiveRoute {
    pub split: Split,
    /// When the route mirrors.
    pub mirror: Option<LiveMirror>,
    /// Sliding windows for automatic rollback, when the route has a guard.
    pub guard: Option<RouteGuard>,
    /// Parallel to the route's backends.
    pub backends: Box<[LiveBackend]>,
}

/// A mirrored route's shadow state.
pub struct LiveMirror {
    /// One permit per shadow in flight: `max_in_flight` of them.
    pub slots: Arc<tokio::sync::Semaphore>,
    pub outcomes: ShadowOutcomeCounters,
}

pub struct LiveBackend {
    pub client: Arc<BackendClient>,
    pub health: Arc<BackendHealth>,
    pub metrics: RouteBackendMetrics,
}

/// Backend clients by backend settings, so connection pools survive
/// reloads that do not change a backend.
#[derive(Default)]
pub struct UpstreamCache {
    by_spec: HashMap<BackendSpec, Arc<BackendClient>>,
}

impl UpstreamCache {
    fn get(&mut self, spec: &Arc<BackendSpec>) -> Arc<BackendClient> {
        self.by_spec
            .entry((**spec).clone())
            .or_insert_with(|| Arc::new(BackendClient::new(spec.clone())))
            .clone()
    }

    /// Drops clients no longer used by `config`.
    fn retain_for(&mut self, config: &Config) {
        self.by_spec.retain(|spec, _| config.backends.iter().any(|b| **b == *spec));
    }
}

impl Table {
    /// The client for a backend, if a route uses it.
    pub fn upstream_for(&self, name: &str) -> Option<Arc<BackendClient>> {
        self.config.routes.iter().zip(self.routes.iter()).find_map(|(route, live)| {
            route
                .backends
                .iter()
                .position(|b| &*b.spec.name == name)
                .map(|i| live.backends[i].client.clone())
        })
    }

    pub fn build(
        config: Arc<Config>,
        weights: Weights,
        upstreams: &mut UpstreamCache,
        metrics: &Arc<Metrics>,
        health: &HealthRegistry,
    ) -> Table {
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(ri, route)| {
                let backends: Box<[LiveBackend]> = route
                    .backends
                    .iter()
                    .map(|b| LiveBackend {
                        client: upstreams.get(&b.spec),
                        health: health.state(&b.spec),
                        metrics: metrics.route_backend(&route.name, &b.spec.name),
                    })
                    .collect();
                LiveRoute {
                    split: Split::from_basis_points(weights.route(ri)),
                    mirror: route.mirror.as_ref().map(|m| LiveMirror {
                        slots: Arc::new(tokio::sync::Semaphore::new(m.max_in_flight)),
                        outcomes: ShadowOutcomeCounters::new(metrics, &route.name),
                    }),
                    guard: route
                        .guard
                        .clone()
                        .map(|g| RouteGuard::new(g, route.stable, backends.iter().map(|b| b.health.ejections()))),
                    backends,
                }
            })
            .collect();
        upstreams.retain_for(&config);
        let version = version_hash(&config, &weights);
        Table {
            unmatched: metrics.route_backend(NO_ROUTE, NO_ROUTE),
            metrics: metrics.clone(),
            config,
            weights,
            version,
            routes,
        }
    }
}

/// The live version: a hash of the config text and the weight table.
pub fn version_hash(config: &Config, weights: &Weights) -> String {
    let mut h = siphasher::sip::SipHasher13::new();
    h.write(config.text.as_bytes());
    h.write(crate::config::weight_file::render(config, weights, &Default::default()).as_bytes());
    format!("{:016x}", h.finish())
}
