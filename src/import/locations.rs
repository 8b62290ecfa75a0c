//! A server's `location` blocks: which ones proxy (with their own
//! proxy_pass, or through `try_files ... @named`), which ones are left out
//! (internal, answered by nginx itself, serving files), and their mirrors.
//! The routes come out in nginx's precedence order.

use std::collections::{HashMap, HashSet};

use super::dedup;
use super::nginx::Directive;
use super::precedence::order_locations;
use super::proxy_pass::{ProxyPass, ProxyTarget, TargetId};
use super::report::{NotConverted, Report, reason_for};
use super::routes::{PathCond, RoutePlan, RoutePlanner};
use super::settings::{Settings, Sourced, is_setting};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LocKind {
    Exact,
    Prefix,
    /// `^~`: a prefix that stops the regex search when it is the longest match.
    NoRegex,
    Regex,
    RegexCaseless,
    Named,
}

/// A `location` block as read, before deciding what it becomes.
struct Location<'a> {
    d: &'a Directive,
    kind: LocKind,
    pattern: String,
    settings: Settings,
    proxy_pass: Option<&'a Directive>,
    try_files: Option<&'a Directive>,
    returns: Option<&'a Directive>,
    /// Its own `alias` or `root`: the directory it serves files from.
    files: Option<&'a Directive>,
    /// Its `allow` and `deny` lines, in order.
    access: Vec<&'a Directive>,
    internal: bool,
    /// Entries for its directives, reported only if it converts.
    child_reports: Vec<NotConverted>,
    /// The names of its directives that were not converted.
    child_names: Vec<String>,
}

/// The routes of one server's locations, in nginx's precedence order.
pub(super) fn plan_locations(dirs: &[&Directive], server: &Settings, planner: &mut RoutePlanner<'_>) -> Vec<RoutePlan> {
    let locs = read_locations(dirs, server, planner.report);
    let named: HashMap<&str, usize> = locs
        .iter()
        .enumerate()
        .filter(|(_, l)| l.kind == LocKind::Named)
        .map(|(i, l)| (l.pattern.as_str(), i))
        .collect();
    let mut named_used: HashSet<usize> = HashSet::new();
    // The internal locations that `mirror` points at are not routes.
    let mirror_locs: HashSet<usize> = locs
        .iter()
        .flat_map(|l| &l.settings.mirrors)
        .filter_map(|m| find_mirror_location(&m.value, &locs))
        .collect();

    let mut plans = Vec::new();
    for (i, l) in locs.iter().enumerate() {
        if l.kind == LocKind::Named || mirror_locs.contains(&i) {
            continue;
        }
        if l.internal {
            planner
                .report
                .skip(l.d, "internal location (reached only by nginx's own subrequests)");
            continue;
        }
        if let Some(r) = l.returns {
            planner.report.skip(
                l.d,
                format!("nginx answers these requests itself (`{}`); cutover only proxies", r.text()),
            );
            continue;
        }
        // The proxy_pass of this location, or of the named location its try_files falls back to.
        let (pp, settings, via_named) = match l.proxy_pass {
            Some(pp) => (pp, &l.settings, None),
            None => {
                let fallback = l
                    .try_files
                    .and_then(|t| t.args.last())
                    .and_then(|a| named.get(a.text.as_str()))
                    .and_then(|&n| Some((locs[n].proxy_pass?, n)));
                match fallback {
                    Some((pp, n)) => (pp, &locs[n].settings, Some(n)),
                    None => {
                        match files_only(l).map(|dir| planner.plan_files(l.d, l.kind, &l.pattern, dir, &l.settings)) {
                            Some(Ok(mut plan)) => {
                                plan.restrict(allow_list(&l.access));
                                planner.report.extend(&l.child_reports);
                                plans.push(plan);
                            }
                            Some(Err(reason)) => planner.report.skip(l.d, reason),
                            None => planner.report.skip(l.d, no_proxy_pass(&l.child_names)),
                        }
                        continue;
                    }
                }
            }
        };
        match planner.plan(l.d, l.kind, &l.pattern, pp, settings) {
            Ok(mut plan) => {
                plan.restrict(allow_list(&l.access));
                planner.report.extend(&l.child_reports);
                if let (Some(n), Some(t)) = (via_named, l.try_files) {
                    named_used.insert(n);
                    planner.report.extend(&locs[n].child_reports);
                    planner.report.skip(
                        t,
                        format!(
                            "cutover does not serve files: every request here goes to {}'s backend",
                            locs[n].pattern
                        ),
                    );
                    plan.comments
                        .push(format!("{} {} (via {})", locs[n].d.at, locs[n].d.text(), t.text()));
                }
                attach_mirror(&mut plan, &settings.mirrors, &locs, planner);
                plans.push(plan);
            }
            Err(reason) => planner.report.skip(l.d, format!("`{}`: {reason}", pp.text())),
        }
    }
    for (i, l) in locs.iter().enumerate() {
        if l.kind == LocKind::Named && !named_used.contains(&i) {
            planner
                .report
                .skip(l.d, "named location: reached only by nginx's try_files/error_page fallbacks");
        }
    }
    cover_bare_prefixes(&mut plans);
    order_locations(plans)
}

/// nginx answers `/admin` with a redirect to `/admin/` when `location /admin/`
/// proxies, so its `allow` list covers both; cutover would route `/admin` to
/// another route. An exact route for the bare prefix keeps the list on it.
fn cover_bare_prefixes(plans: &mut Vec<RoutePlan>) {
    let mut bare = Vec::new();
    for p in plans.iter() {
        let path = p.pattern.trim_end_matches('/');
        let restricted_prefix = p.allow_from.is_some() && matches!(p.kind, LocKind::Prefix | LocKind::NoRegex);
        if !restricted_prefix || !p.pattern.ends_with('/') || path.is_empty() {
            continue;
        }
        if plans.iter().any(|q| q.kind == LocKind::Exact && q.pattern == path) {
            continue;
        }
        let mut exact = p.clone();
        exact.kind = LocKind::Exact;
        exact.pattern = path.to_string();
        exact.matcher = PathCond::Exact(path.to_string());
        exact.base_name.push_str("-bare");
        exact.comments.push(format!(
            "{path}: nginx redirected it to {} before checking the allow list; here it gets the same list",
            p.pattern
        ));
        bare.push(exact);
    }
    plans.extend(bare);
}

fn read_locations<'a>(dirs: &[&'a Directive], server: &Settings, report: &mut Report) -> Vec<Location<'a>> {
    let mut locs = Vec::new();
    let mut seen: HashSet<(bool, String)> = HashSet::new();
    for &d in dirs {
        let Some((kind, pattern)) = location_head(d) else {
            report.skip(d, "invalid location");
            continue;
        };
        // Exact and prefix locations share nginx's tree; duplicates are an error there.
        let exact_key = (kind == LocKind::Exact, pattern.clone());
        if matches!(kind, LocKind::Exact | LocKind::Prefix | LocKind::NoRegex) && !seen.insert(exact_key) {
            report.skip(d, "duplicate location: nginx refuses this config");
            continue;
        }
        let mark = report.mark();
        let settings = Settings::at_level(server, d.children(), report);
        let mut loc = Location {
            d,
            kind,
            pattern,
            settings,
            proxy_pass: None,
            try_files: None,
            returns: None,
            files: None,
            access: Vec::new(),
            internal: false,
            child_reports: Vec::new(),
            child_names: Vec::new(),
        };
        for c in d.children() {
            match c.name.as_str() {
                "proxy_pass" => loc.proxy_pass = Some(c),
                "try_files" => {
                    loc.try_files = Some(c);
                    loc.child_names.push(c.name.clone());
                }
                "return" => {
                    loc.returns = Some(c);
                    loc.child_names.push(c.name.clone());
                }
                "internal" => loc.internal = true,
                "alias" | "root" => loc.files = Some(c),
                "allow" | "deny" => loc.access.push(c),
                "location" => report.skip(c, "nested locations are not converted: move it out to the server level"),
                n if is_setting(n) => {}
                n => {
                    loc.child_names.push(n.to_string());
                    report.skip(c, reason_for(n));
                }
            }
        }
        if !loc.access.is_empty() && allow_list(&loc.access).is_none() {
            for c in &loc.access {
                loc.child_names.push(c.name.clone());
                report.skip(c, reason_for(&c.name));
            }
        }
        loc.child_reports = report.take_since(mark);
        locs.push(loc);
    }
    locs
}

/// The location a `mirror URI` sends its copies to.
fn find_mirror_location(uri: &str, locs: &[Location<'_>]) -> Option<usize> {
    locs.iter().position(|l| l.kind == LocKind::Exact && l.pattern == uri).or_else(|| {
        locs.iter()
            .position(|l| matches!(l.kind, LocKind::Prefix | LocKind::NoRegex) && l.pattern == uri)
    })
}

/// Converts the first of a location's `mirror`s when its target is a backend of the route.
fn attach_mirror(plan: &mut RoutePlan, mirrors: &[Sourced<String>], locs: &[Location<'_>], planner: &mut RoutePlanner<'_>) {
    for (k, m) in mirrors.iter().enumerate() {
        let unconverted = |reason: String, report: &mut Report| report.list(m.at.clone(), "mirror", m.text.clone(), reason);
        if k > 0 {
            unconverted("cutover mirrors a route to one backend only".into(), planner.report);
            continue;
        }
        let Some(mi) = find_mirror_location(&m.value, locs) else {
            unconverted(format!("no location {} in this server", m.value), planner.report);
            continue;
        };
        let target = &locs[mi];
        match mirror_target(target.d, target.proxy_pass, plan, planner) {
            Ok(to) => {
                plan.mirror = Some(to);
                plan.comments.push(format!("{} -> {} {}", m.origin(), target.d.at, target.d.text()));
                planner.report.note(
                    "nginx mirrors every request (all methods, with bodies) to its mirror location; cutover mirrors GET, \
                     HEAD and OPTIONS unless the route's mirror sets methods and allow_mutating, and sends requests served \
                     by the mirror target to the stable backend instead",
                );
            }
            Err(reason) => unconverted(reason, planner.report),
        }
    }
}

/// The route backend a mirror location's proxy_pass points at.
fn mirror_target(loc: &Directive, pp: Option<&Directive>, plan: &RoutePlan, planner: &mut RoutePlanner<'_>) -> Result<String, String> {
    let Some(pp) = pp else {
        return Err(format!("{} {} has no proxy_pass", loc.at, loc.text()));
    };
    let target = ProxyPass::parse(pp, planner.upstreams)?;
    let (id, shown) = match &target.target {
        ProxyTarget::Upstream(n) => (TargetId::Upstream(n.clone()), n),
        ProxyTarget::Host(h) => (TargetId::Url(target.url(h)), h),
        ProxyTarget::Split(_) => return Err("the mirror location proxies to a split_clients variable".into()),
    };
    if target.uri.is_some() {
        return Err("the mirror location's proxy_pass has a URI part: nginx sends that URI, cutover the original one".into());
    }
    if !target.request_uri {
        planner.report.note(format!(
            "{}: the mirror location proxies without $request_uri, so nginx sends its own URI ({}) to the mirror \
             target; cutover sends the original request's path",
            pp.at,
            loc.arg(loc.args.len().saturating_sub(1)).unwrap_or("")
        ));
    }
    let Some(to) = plan.backends.iter().find(|b| b.target == id) else {
        return Err(format!(
            "the mirror target ({shown}) is not a backend of this route: cutover mirrors only to a route's own backends (add \
             it with weight 0 and a mirror by hand if you accept that failover and retries may then send it live traffic)"
        ));
    };
    let stable = plan.stable.as_ref().or_else(|| plan.backends.first().map(|b| &b.name));
    if stable == Some(&to.name) {
        return Err("the mirror target is the route's stable backend".into());
    }
    Ok(to.name.clone())
}

/// The modifier and pattern of a `location`.
fn location_head(d: &Directive) -> Option<(LocKind, String)> {
    let args = d.arg_texts();
    let modifier = |m: &str| match m {
        "=" => Some(LocKind::Exact),
        "^~" => Some(LocKind::NoRegex),
        "~" => Some(LocKind::Regex),
        "~*" => Some(LocKind::RegexCaseless),
        _ => None,
    };
    match args.as_slice() {
        [m, p] => Some((modifier(m)?, p.to_string())),
        [p] => {
            // nginx also accepts the modifier glued to the pattern: `=/healthz`, `~*\.png$`.
            for (m, kind) in [
                ("^~", LocKind::NoRegex),
                ("~*", LocKind::RegexCaseless),
                ("~", LocKind::Regex),
                ("=", LocKind::Exact),
                ("@", LocKind::Named),
            ] {
                if let Some(rest) = p.strip_prefix(m)
                    && !rest.is_empty()
                {
                    let pattern = if kind == LocKind::Named { p.to_string() } else { rest.to_string() };
                    return Some((kind, pattern));
                }
            }
            Some((LocKind::Prefix, p.to_string()))
        }
        _ => None,
    }
}

/// `allow NET; ... deny all;`, an allow-list, as the networks of `allow_from`
/// and the lines they came from; any other mix of `allow` and `deny` is not
/// converted.
fn allow_list(access: &[&Directive]) -> Option<(Vec<String>, Vec<String>)> {
    let (last, allows) = access.split_last()?;
    if last.name != "deny" || last.arg(0) != Some("all") || last.args.len() != 1 || allows.is_empty() {
        return None;
    }
    let mut nets = Vec::new();
    for a in allows {
        let net = a.arg(0).filter(|_| a.name == "allow" && a.args.len() == 1)?;
        net.parse::<crate::config::values::Cidr>().ok()?;
        nets.push(net.to_string());
    }
    Some((nets, access.iter().map(|d| format!("{} {}", d.at, d.text())).collect()))
}

/// The `alias` or `root` of a location that serves only files: no
/// `try_files` but one that ends in `=404`, as for static files.
fn files_only<'a>(l: &Location<'a>) -> Option<&'a Directive> {
    let files_or_404 = l.try_files.is_none_or(|t| t.args.last().is_some_and(|a| a.text == "=404"));
    l.files.filter(|_| files_or_404)
}

/// Why a location without `proxy_pass` is left out, given its directives' names.
fn no_proxy_pass(child_names: &[String]) -> String {
    if child_names.iter().any(|n| n == "uwsgi_pass") {
        return "uwsgi_pass speaks the uwsgi protocol, which cutover does not: have uWSGI serve HTTP \
                (`http-socket = /run/app.sock` or `127.0.0.1:8000`) and point a backend at it"
            .into();
    }
    let what = if child_names.is_empty() {
        String::new()
    } else {
        format!(" ({})", dedup(child_names).join(", "))
    };
    format!("no proxy_pass{what}: cutover only proxies; requests nginx answered here go to the next matching route instead")
}
