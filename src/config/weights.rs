//! The weight table: per route, each backend's share in basis points.

use std::collections::BTreeMap;
use std::path::Path;

use super::Config;
use super::error::ConfigError;
use super::raw::RawWeights;
use super::yaml;
use crate::split::BUCKETS;

/// Weights aligned with `Config::routes` and each route's backends, in
/// basis points (hundredths of a percent) summing to 10000 per route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weights {
    per_route: Vec<Box<[u16]>>,
}

impl Weights {
    /// Every route sends everything to its stable backend.
    pub fn all_stable(config: &Config) -> Weights {
        Weights {
            per_route: config.routes.iter().map(|r| stable_only(r.backends.len(), r.stable)).collect(),
        }
    }

    /// Reads and checks the weight file named by the config.
    pub fn load(config: &Config) -> Result<Weights, ConfigError> {
        let path = &config.weights_path;
        let text = super::file::read_text(path)?;
        Weights::parse(path, &text, config)
    }

    /// Checks weight-file text against the routes and backends of `config`.
    pub fn parse(file: &Path, text: &str, config: &Config) -> Result<Weights, ConfigError> {
        let (raw, pos): (RawWeights, _) = yaml::parse(file, text)?;
        let mut weights = Weights::all_stable(config);
        let mut errors = Vec::new();
        for (route_name, entries) in &raw {
            let Some(ri) = config.route_index(route_name) else {
                errors.push(ConfigError::at(pos.key(&[route_name]), format!("unknown route {route_name:?}")));
                continue;
            };
            let route = &config.routes[ri];
            let mut bp = vec![0u16; route.backends.len()];
            let mut route_ok = true;
            for (backend_name, &percent) in entries {
                let at = pos.key(&[route_name, backend_name]);
                let Some(bi) = route.backend_index(backend_name) else {
                    errors.push(ConfigError::at(at, format!("route {route_name:?} has no backend {backend_name:?}")));
                    route_ok = false;
                    continue;
                };
                match percent_to_basis_points(percent) {
                    Ok(v) => bp[bi] = v,
                    Err(msg) => {
                        errors.push(ConfigError::at(pos.value(&[route_name, backend_name]), msg));
                        route_ok = false;
                    }
                }
            }
            let sum: u32 = bp.iter().map(|&v| u32::from(v)).sum();
            if route_ok && sum != u32::from(BUCKETS) {
                errors.push(ConfigError::at(
                    pos.key(&[route_name]),
                    format!("weights of route {route_name:?} sum to {}, not 100", format_percent_u32(sum)),
                ));
                route_ok = false;
            }
            if route_ok {
                weights.per_route[ri] = bp.into();
            }
        }
        match ConfigError::collect(errors) {
            Some(err) => Err(err),
            None => Ok(weights),
        }
    }

    /// Basis points of route `route`'s backends, in the route's order.
    pub fn route(&self, route: usize) -> &[u16] {
        &self.per_route[route]
    }

    /// This table with one route's weights replaced.
    pub fn with_route(&self, route: usize, basis_points: Vec<u16>) -> Weights {
        let mut next = self.clone();
        next.per_route[route] = basis_points.into();
        next
    }

    /// This table with the given routes sent wholly to their stable backends.
    pub fn rolled_back(&self, config: &Config, routes: &[usize]) -> Weights {
        let mut next = self.clone();
        for &ri in routes {
            let r = &config.routes[ri];
            next.per_route[ri] = stable_only(r.backends.len(), r.stable);
        }
        next
    }

    /// The table by names, for routes with more than one backend: the
    /// form users read and write (the weight file, the admin API).
    pub fn named(&self, config: &Config) -> NamedWeights {
        config
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.backends.len() > 1)
            .map(|(ri, r)| {
                let per_backend = r
                    .backends
                    .iter()
                    .zip(self.route(ri))
                    .map(|(b, &w)| (b.spec.name.to_string(), f64::from(w) / 100.0))
                    .collect();
                (r.name.to_string(), per_backend)
            })
            .collect()
    }

    /// Rebuilds a table from its named form, checked against `config` as
    /// the weight file is.
    pub fn from_named(config: &Config, named: &NamedWeights) -> Result<Weights, ConfigError> {
        let text: String = named
            .iter()
            .map(|(route, per_backend)| route_line(route, per_backend) + "\n")
            .collect();
        Weights::parse(&config.weights_path, &text, config)
    }
}

/// Each route's weights by backend name, in percent.
pub type NamedWeights = BTreeMap<String, BTreeMap<String, f64>>;

/// One route of the weight file: `api: { legacy: 90, new: 10 }`, without
/// its line break.
pub fn route_line(route: &str, per_backend: &BTreeMap<String, f64>) -> String {
    let parts: Vec<String> = per_backend.iter().map(|(b, w)| format!("{b}: {w}")).collect();
    format!("{route}: {{ {} }}", parts.join(", "))
}

fn stable_only(len: usize, stable: usize) -> Box<[u16]> {
    let mut bp = vec![0u16; len];
    if let Some(s) = bp.get_mut(stable) {
        *s = BUCKETS;
    }
    bp.into()
}

/// Parses a percentage with at most two decimals into basis points.
pub fn percent_to_basis_points(percent: f64) -> Result<u16, String> {
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(format!("weight {percent} must be between 0 and 100"));
    }
    let scaled = percent * 100.0;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 {
        return Err(format!("weight {percent} has more than two decimals"));
    }
    Ok(rounded as u16)
}

/// Formats basis points as a percentage: 9000 → "90", 1250 → "12.5".
pub fn format_percent(bp: u16) -> String {
    format_percent_u32(u32::from(bp))
}

fn format_percent_u32(bp: u32) -> String {
    let (whole, frac) = (bp / 100, bp % 100);
    match frac {
        0 => whole.to_string(),
        f if f % 10 == 0 => format!("{whole}.{}", f / 10),
        f => format!("{whole}.{f:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_trip_through_basis_points() {
        for (p, bp) in [(90.0, 9000), (12.5, 1250), (0.01, 1), (33.33, 3333), (100.0, 10000), (0.0, 0)] {
            assert_eq!(percent_to_basis_points(p), Ok(bp));
            assert_eq!(format_percent(bp).parse::<f64>().unwrap(), p);
        }
        assert!(percent_to_basis_points(10.005).is_err());
        assert!(percent_to_basis_points(-1.0).is_err());
        assert!(percent_to_basis_points(100.5).is_err());
    }
}
