//! The next weight table of each kind of change, computed from the live
//! one: pure functions of the config and the weights.

use crate::config::weights::percent_to_basis_points;
use crate::config::{Config, NamedWeights, Weights, format_percent};
use crate::split::BUCKETS;

use super::{ChangeError, Routes};

/// Sets one route's weights. Backends not named get 0, except that naming
/// one backend of a two-backend route gives the rest to the other.
pub fn shift(config: &Config, current: &Weights, route: &str, set: &[(String, f64)]) -> Result<Weights, ChangeError> {
    let ri = config.route_index(route).ok_or_else(|| ChangeError::UnknownRoute(route.into()))?;
    let spec = &config.routes[ri];
    let mut bp = vec![0u16; spec.backends.len()];
    let mut named = vec![false; spec.backends.len()];
    for (backend, percent) in set {
        let bi = spec.backend_index(backend).ok_or_else(|| ChangeError::UnknownBackend {
            route: route.into(),
            backend: backend.clone(),
            known: spec.backends.iter().map(|b| b.spec.name.to_string()).collect::<Vec<_>>().join(", "),
        })?;
        bp[bi] = percent_to_basis_points(*percent).map_err(|e| ChangeError::BadWeight(format!("{backend}: {e}")))?;
        named[bi] = true;
    }
    if set.len() == 1
        && spec.backends.len() == 2
        && let Some(other) = named.iter().position(|n| !n)
    {
        bp[other] = BUCKETS - bp[1 - other];
    }
    let sum: u32 = bp.iter().map(|&w| u32::from(w)).sum();
    if sum != u32::from(BUCKETS) {
        return Err(ChangeError::Sum {
            route: route.into(),
            sum: format_percent(sum.min(u32::from(u16::MAX)) as u16),
        });
    }
    Ok(current.with_route(ri, bp))
}

/// Parity gates a shift: raising the share of a route's non-stable backends
/// is refused while its measured clean share is below `min_clean_share`.
/// `clean` is (clean share, requests compared) from the mirror, if any.
pub fn check_parity_gate(
    config: &Config,
    current: &Weights,
    next: &Weights,
    route: usize,
    clean: Option<(f64, u64)>,
) -> Result<(), ChangeError> {
    let spec = &config.routes[route];
    let Some(bar) = spec.mirror.as_ref().and_then(|m| m.min_clean_share) else {
        return Ok(());
    };
    let moved = |w: &Weights| -> u32 {
        w.route(route)
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != spec.stable)
            .map(|(_, &bp)| u32::from(bp))
            .sum()
    };
    if moved(next) <= moved(current) {
        return Ok(());
    }
    match clean {
        Some((share, _)) if share >= bar => Ok(()),
        Some((share, compared)) => Err(ChangeError::ParityBelowBar {
            route: spec.name.to_string(),
            measured: format!("{:.2}% clean over {compared} compared requests", share * 100.0),
            bar: bar * 100.0,
        }),
        None => Err(ChangeError::ParityBelowBar {
            route: spec.name.to_string(),
            measured: "not measured yet".into(),
            bar: bar * 100.0,
        }),
    }
}

/// Starts each warning appended to a change's reason in the history.
pub const CHANGE_WARNING: &str = "; WARNING: ";

/// Why the history records a weight-file edit. The edit is applied as
/// written even where the parity gate would refuse a shift (editing the file
/// is a deliberate operator act), but never silently: each route it raises
/// toward a non-stable backend while parity is below `min_clean_share` is
/// logged as a warning and named in the returned reason. `before` is the
/// table the edit replaced; `clean` gives a route's measured parity.
pub fn weight_file_change_reason(
    config: &Config,
    before: &NamedWeights,
    next: &Weights,
    clean: impl Fn(&str) -> Option<(f64, u64)>,
) -> String {
    let mut why = String::from("weight file changed");
    let all_stable = Weights::all_stable(config);
    for (ri, spec) in config.routes.iter().enumerate() {
        // A route the previous table did not split counts as all on stable.
        let prior = match before.get(spec.name.as_ref()) {
            Some(old) => spec
                .backends
                .iter()
                .map(|b| {
                    old.get(b.spec.name.as_ref())
                        .map_or(0, |&p| percent_to_basis_points(p).unwrap_or(0))
                })
                .collect(),
            None => all_stable.route(ri).to_vec(),
        };
        let prior = next.with_route(ri, prior);
        if let Err(ChangeError::ParityBelowBar { route, measured, bar }) = check_parity_gate(config, &prior, next, ri, clean(&spec.name)) {
            tracing::warn!(
                route = %route,
                parity = %measured,
                bar = %format!("{bar:.2}% clean"),
                "the weight file moves traffic to a backend whose parity is below min_clean_share; applied as written"
            );
            why.push_str(&format!(
                "{CHANGE_WARNING}{route} raised while parity is {measured}, below the bar of {bar:.2}%"
            ));
        }
    }
    why
}

/// The indexes of the routes a rollback names.
pub fn select_routes(config: &Config, routes: &Routes) -> Result<Vec<usize>, ChangeError> {
    match routes {
        Routes::All => Ok((0..config.routes.len()).collect()),
        Routes::Named(names) if names.is_empty() => Err(ChangeError::NoRoutes),
        Routes::Named(names) => names
            .iter()
            .map(|r| config.route_index(r).ok_or_else(|| ChangeError::UnknownRoute(r.clone())))
            .collect(),
    }
}

/// Route `ri`'s weights `step / of` of the way from `start` to all on its
/// stable backend. Step 0 is `start` itself.
pub fn ramp_step(config: &Config, weights: &Weights, ri: usize, start: &[u16], step: u64, of: u64) -> Weights {
    let stable = config.routes[ri].stable;
    let fraction = step.min(of) as f64 / of.max(1) as f64;
    let mut next: Vec<u16> = start.iter().map(|&w| (f64::from(w) * (1.0 - fraction)).floor() as u16).collect();
    if let Some(s) = next.get_mut(stable) {
        *s = 0;
    }
    let rest: u16 = next.iter().sum();
    if let Some(s) = next.get_mut(stable) {
        *s = BUCKETS.saturating_sub(rest);
    }
    weights.with_route(ri, next)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config() -> Config {
        crate::config::test_config()
    }

    #[test]
    fn naming_one_of_two_backends_gives_the_rest_to_the_other() {
        let c = config();
        let w = shift(&c, &Weights::all_stable(&c), "api", &[("new".into(), 25.0)]).unwrap();
        assert_eq!(w.route(0), &[7500, 2500]);
    }

    #[test]
    fn bad_shifts_are_refused() {
        let c = config();
        let w = Weights::all_stable(&c);
        assert!(matches!(shift(&c, &w, "nope", &[]), Err(ChangeError::UnknownRoute(_))));
        assert!(matches!(
            shift(&c, &w, "api", &[("old".into(), 5.0)]),
            Err(ChangeError::UnknownBackend { .. })
        ));
        assert!(matches!(
            shift(&c, &w, "three", &[("new".into(), 50.0)]),
            Err(ChangeError::Sum { .. })
        ));
        assert!(matches!(
            shift(&c, &w, "api", &[("new".into(), 100.5)]),
            Err(ChangeError::BadWeight(_))
        ));
        let ok = shift(&c, &w, "three", &[("new".into(), 50.0), ("third".into(), 50.0)]).unwrap();
        assert_eq!(ok.route(1), &[0, 5000, 5000]);
    }

    #[test]
    fn rollbacks_name_routes_or_all() {
        let c = config();
        assert_eq!(select_routes(&c, &Routes::All).unwrap(), [0, 1, 2]);
        assert_eq!(select_routes(&c, &Routes::Named(vec!["three".into()])).unwrap(), [1]);
        assert!(matches!(select_routes(&c, &Routes::Named(vec![])), Err(ChangeError::NoRoutes)));
        assert!(matches!(
            select_routes(&c, &Routes::Named(vec!["api".into(), "nope".into()])),
            Err(ChangeError::UnknownRoute(r)) if r == "nope"
        ));
    }

    #[test]
    fn ramp_steps_move_every_non_stable_backend_down_to_stable() {
        let c = config();
        let start = [1000, 6000, 3000];
        let w = Weights::all_stable(&c);
        assert_eq!(ramp_step(&c, &w, 1, &start, 0, 3).route(1), &start);
        assert_eq!(ramp_step(&c, &w, 1, &start, 1, 3).route(1), &[4000, 4000, 2000]);
        assert_eq!(ramp_step(&c, &w, 1, &start, 2, 3).route(1), &[7000, 2000, 1000]);
        assert_eq!(ramp_step(&c, &w, 1, &start, 3, 3).route(1), &[10000, 0, 0]);
    }

    #[test]
    fn weight_file_edits_raising_new_below_the_parity_bar_are_named() {
        let text = "listeners: [{name: p, addr: '127.0.0.1:0'}]\n\
                    backends: {legacy: {url: 'http://127.0.0.1:1'}, new: {url: 'http://127.0.0.1:2'}}\n\
                    routes:\n\
                    - {name: api, match: {path_prefix: /api/}, backends: {legacy: {}, new: {}}, mirror: {to: new, min_clean_share: 0.99}}\n\
                    - {name: web, match: {path_prefix: /}, backends: {legacy: {}, new: {}}}\n";
        let c = Config::parse(Path::new("/tmp/cutover.yaml"), text.to_string()).unwrap();
        let ten = shift(&c, &Weights::all_stable(&c), "api", &[("new".into(), 10.0)]).unwrap();
        let before = ten.named(&c);
        let raised = shift(&c, &ten, "web", &[("new".into(), 50.0)]).unwrap();
        let raised = shift(&c, &raised, "api", &[("new".into(), 30.0)]).unwrap();
        let lowered = shift(&c, &ten, "api", &[("new".into(), 5.0)]).unwrap();
        let dirty = |_: &str| Some((0.5, 40));

        let why = weight_file_change_reason(&c, &before, &raised, dirty);
        assert_eq!(
            why,
            "weight file changed; WARNING: api raised while parity is 50.00% clean over 40 compared requests, \
             below the bar of 99.00%"
        );
        let why = weight_file_change_reason(&c, &before, &raised, |_| None);
        assert!(
            why.ends_with("api raised while parity is not measured yet, below the bar of 99.00%"),
            "{why}"
        );
        // Clean enough, lowered, or a route without a bar: nothing to say.
        assert_eq!(
            weight_file_change_reason(&c, &before, &raised, |_| Some((0.995, 400))),
            "weight file changed"
        );
        assert_eq!(weight_file_change_reason(&c, &before, &lowered, dirty), "weight file changed");
        // A route the old table did not have counts as all on its stable backend.
        let why = weight_file_change_reason(&c, &NamedWeights::new(), &ten, dirty);
        assert!(why.contains("WARNING: api raised"), "{why}");
    }
}
