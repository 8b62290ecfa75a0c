//! One route per converted location: its path match, its backends and the
//! rewrite that stands for proxy_pass's URI part. The backends are an
//! upstream's servers (weighted as in nginx), a split_clients' sides, or the
//! one host named.

use super::backends::{Backends, Destination};
use super::locations::LocKind;
use super::nginx::{Directive, Pos};
use super::proxy_pass::{ProxyPass, ProxyTarget, TargetId, default_port, normalize_host_port};
use super::report::Report;
use super::settings::{GzipSettings, Settings, Sourced};
use super::upstreams::{StickyBy, Upstreams, key_has_literal_text, sticky_for_key};

/// A route before host matching and naming.
#[derive(Debug, Clone)]
pub(super) struct RoutePlan {
    /// The location it came from.
    pub(super) at: Pos,
    pub(super) loc_text: String,
    pub(super) kind: LocKind,
    pub(super) pattern: String,
    /// The path condition, after ordering.
    pub(super) matcher: PathCond,
    pub(super) base_name: String,
    pub(super) backends: Vec<RouteBackendPlan>,
    /// Basis points per backend when there are several.
    pub(super) weights: Option<Vec<u32>>,
    pub(super) stable: Option<String>,
    pub(super) sticky: Option<StickyBy>,
    /// The backend mirrored to.
    pub(super) mirror: Option<String>,
    /// The location's `client_max_body_size`, if one applies (else nginx's default).
    pub(super) body_limit: Option<Sourced<u64>>,
    /// The gzip directives in effect for the location.
    pub(super) gzip: GzipSettings,
    /// `allow_from`, from `allow ...; deny all;`.
    pub(super) allow_from: Option<Vec<String>>,
    /// The nginx lines the route came from.
    pub(super) comments: Vec<String>,
    /// The nginx lines its weights came from.
    pub(super) weight_comments: Vec<String>,
}

#[derive(Debug, Clone)]
pub(super) enum PathCond {
    Prefix(String),
    Exact(String),
    Regex(String),
}

/// A backend of a route.
#[derive(Debug, Clone)]
pub(super) struct RouteBackendPlan {
    pub(super) name: String,
    /// `rewrite: { prefix, to }`
    pub(super) rewrite: Option<(String, String)>,
    pub(super) target: TargetId,
}

/// What planning routes reads and adds to.
pub(super) struct RoutePlanner<'a> {
    /// Read, and marked used.
    pub(super) upstreams: &'a mut Upstreams,
    pub(super) backends: &'a mut Backends,
    pub(super) report: &'a mut Report,
    /// Proxied prefixes ending in '/', which nginx redirects to without the slash.
    pub(super) auto_redirects: Vec<String>,
}

impl RoutePlanner<'_> {
    /// The route for a location whose requests go to `pp`, or why there is none.
    pub(super) fn plan(
        &mut self,
        loc: &Directive,
        kind: LocKind,
        pattern: &str,
        pp: &Directive,
        settings: &Settings,
    ) -> Result<RoutePlan, String> {
        if matches!(kind, LocKind::Exact | LocKind::Prefix | LocKind::NoRegex) && !pattern.starts_with('/') {
            return Err("the location does not start with '/' and never matches".into());
        }
        if matches!(kind, LocKind::Regex | LocKind::RegexCaseless) {
            regex::Regex::new(&regex_for(kind, pattern)).map_err(|e| format!("the regex is not one cutover accepts: {e}"))?;
        }
        let target = ProxyPass::parse(pp, self.upstreams)?;
        if target.uri.is_some() && matches!(kind, LocKind::Regex | LocKind::RegexCaseless) {
            return Err("a URI part in a regex location (nginx refuses this)".into());
        }
        let rewrite = target
            .uri
            .as_ref()
            .filter(|uri| uri.as_str() != pattern)
            .map(|uri| (pattern.to_string(), uri.clone()));
        if target.request_uri {
            self.report.note(format!(
                "{}: proxy_pass ...$request_uri: nginx passes the URI exactly as the client sent it; cutover passes the \
                 normalised path (dot segments resolved, slashes merged)",
                pp.at
            ));
        }
        let mut plan = RoutePlan::new(loc, kind, pattern, pp, settings);
        match &target.target {
            ProxyTarget::Upstream(name) => self.upstream_backends(&mut plan, name, &target, rewrite, settings)?,
            ProxyTarget::Host(host) => {
                let dest = Destination::host(host, target.scheme, format!("{} {}", pp.at, pp.text()));
                let id = TargetId::Url(dest.url.clone());
                let name = self.backends.add(dest, settings, &plan.base_name, self.report);
                plan.backends.push(RouteBackendPlan { name, rewrite, target: id });
            }
            ProxyTarget::Split(var) => self.split_backends(&mut plan, var, &target, rewrite, settings)?,
        }
        if matches!(kind, LocKind::Prefix | LocKind::NoRegex) && pattern.ends_with('/') && pattern.len() > 1 {
            self.auto_redirects.push(pattern.trim_end_matches('/').to_string());
        }
        Ok(plan)
    }

    /// The route for a location that serves files from a directory (`root`,
    /// or `alias` in place of the location's prefix): a file backend, when
    /// the directory is on this machine, as `cutover check` will look for it.
    pub(super) fn plan_files(
        &mut self,
        loc: &Directive,
        kind: LocKind,
        pattern: &str,
        dir: &Directive,
        settings: &Settings,
    ) -> Result<RoutePlan, String> {
        let Some(path) = dir.arg(0).filter(|p| dir.args.len() == 1 && !p.contains('$')) else {
            return Err(format!("`{}`: only a literal directory is converted", dir.text()));
        };
        let prefix = matches!(kind, LocKind::Exact | LocKind::Prefix | LocKind::NoRegex);
        if !path.starts_with('/') {
            return Err(format!(
                "`{}`: only an absolute directory is converted (nginx resolves this one against its prefix)",
                dir.text()
            ));
        }
        let mut directory = std::path::Path::new(path);
        let rewrite = match dir.name.as_str() {
            // One file for one path: `location = /favicon.ico { alias /srv/static/icon.ico; }`.
            "alias" if kind == LocKind::Exact && directory.is_file() => {
                let file = directory.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                directory = directory.parent().unwrap_or(directory);
                Some((pattern.to_string(), format!("/{file}")))
            }
            // The directory stands for the prefix: both end in '/'.
            "alias" if prefix && pattern.ends_with('/') && path.ends_with('/') => Some((pattern.to_string(), "/".to_string())),
            "alias" => {
                return Err(format!(
                    "`{}`: an alias is converted for a prefix location and directory that both end in '/', or an exact \
                     location and a file",
                    dir.text()
                ));
            }
            _ => None,
        };
        if !directory.is_dir() {
            return Err(format!(
                "`{}`: {path} is not a directory on this machine; import where the files are, or serve them from a backend",
                dir.text()
            ));
        }
        let path = directory.to_string_lossy();
        let trimmed = path.trim_end_matches('/');
        let name = directory
            .file_name()
            .map_or_else(|| "files".into(), |n| n.to_string_lossy().into_owned());
        let dest = Destination {
            base: super::backends::sanitize_name(&name),
            url: format!("file:{}", if trimmed.is_empty() { "/" } else { trimmed }),
            proxy_host: String::new(),
            origin: format!("{} {}", dir.at, dir.text()),
        };
        let id = TargetId::Url(dest.url.clone());
        let mut plan = RoutePlan::new(loc, kind, pattern, dir, settings);
        let name = self.backends.add(dest, settings, &plan.base_name, self.report);
        plan.backends.push(RouteBackendPlan { name, rewrite, target: id });
        Ok(plan)
    }

    /// An upstream with several servers and no balancing method becomes a
    /// backend per server, weighted as in nginx; otherwise its first server
    /// stands for it.
    fn upstream_backends(
        &mut self,
        plan: &mut RoutePlan,
        name: &str,
        target: &ProxyPass,
        rewrite: Option<(String, String)>,
        settings: &Settings,
    ) -> Result<(), String> {
        let Some(up) = self.upstreams.blocks.get_mut(name) else {
            return Err(format!("no upstream {name}"));
        };
        up.used = true;
        let id = TargetId::Upstream(name.to_string());
        if up.servers.len() <= 1 || up.no_expand.is_some() {
            let b = self
                .backends
                .for_upstream(self.upstreams, name, target.scheme, settings, &plan.base_name, self.report)?;
            plan.backends.push(RouteBackendPlan {
                name: b,
                rewrite,
                target: id,
            });
            return Ok(());
        }
        let servers = up.servers.clone();
        let up_at = up.at.clone();
        for (k, s) in servers.iter().enumerate() {
            let dest = Destination {
                base: format!("{name}-{}", k + 1),
                url: format!("{}://{}", target.scheme, s.addr),
                proxy_host: name.to_string(),
                origin: format!("{} {}", s.at, s.text),
            };
            let b = self.backends.add(dest, settings, &plan.base_name, self.report);
            plan.backends.push(RouteBackendPlan {
                name: b,
                rewrite: rewrite.clone(),
                target: id.clone(),
            });
        }
        plan.weights = Some(up.basis_points());
        plan.weight_comments
            .push(format!("{up_at} upstream {name}: {} servers, weighted as in nginx", servers.len()));
        self.report.note(format!(
            "upstream {name} has {} servers: each is a backend ({name}-1…) of the routes that use it, weighted in \
             weights.yaml; `cutover rollback` on such a route sends everything to {name}-1",
            servers.len()
        ));
        Ok(())
    }

    /// A split_clients variable: one backend per side, weighted by its
    /// percentages, the largest side stable.
    fn split_backends(
        &mut self,
        plan: &mut RoutePlan,
        var: &str,
        target: &ProxyPass,
        rewrite: Option<(String, String)>,
        settings: &Settings,
    ) -> Result<(), String> {
        let Some(split) = self.upstreams.splits.get(var) else {
            return Err(format!("${var} is not a split_clients variable"));
        };
        if let Some(e) = &split.error {
            return Err(format!("split_clients at {}: {e}", split.at));
        }
        let entries = split.entries.clone();
        let (key, split_at, split_text) = (split.key.clone(), split.at.clone(), split.text.clone());
        // Resolve every side first, so a failure leaves nothing behind.
        let mut sides: Vec<(String, u32, TargetId)> = Vec::new();
        for (bp, value) in &entries {
            let (name, id) = if let Some(up) = self.upstreams.blocks.get_mut(value.as_str()) {
                up.used = true;
                let b = self
                    .backends
                    .for_upstream(self.upstreams, value, target.scheme, settings, &plan.base_name, self.report)?;
                (b, TargetId::Upstream(value.clone()))
            } else {
                let host = normalize_host_port(value, default_port(target.scheme))
                    .ok_or_else(|| format!("split value {value:?} is not an upstream"))?;
                let dest = Destination::host(&host, target.scheme, format!("{split_at} {split_text}: {value}"));
                let id = TargetId::Url(dest.url.clone());
                (self.backends.add(dest, settings, &plan.base_name, self.report), id)
            };
            match sides.iter_mut().find(|s| s.0 == name) {
                Some(s) => s.1 += bp,
                None => sides.push((name, *bp, id)),
            }
        }
        if let Some(split) = self.upstreams.splits.get_mut(var) {
            split.used = true;
        }
        // The largest share is the stable side (rollback target), listed first.
        let stable = sides
            .iter()
            .enumerate()
            .max_by_key(|(i, s)| (s.1, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
            .unwrap_or(0);
        let first = sides.remove(stable);
        sides.insert(0, first);
        plan.stable = Some(sides[0].0.clone());
        plan.weights = Some(sides.iter().map(|s| s.1).collect());
        for (name, _, id) in sides {
            plan.backends.push(RouteBackendPlan {
                name,
                rewrite: rewrite.clone(),
                target: id,
            });
        }
        plan.weight_comments.push(format!("{split_at} {split_text}"));
        plan.comments.push(format!("{split_at} {split_text}"));
        plan.sticky = sticky_for_key(&key);
        let how = match &plan.sticky {
            Some(StickyBy::Cookie(c)) => format!("sticky by cookie {c}"),
            Some(StickyBy::Header(h)) => format!("sticky by header {h}"),
            None => "random per request (the key is neither a cookie nor a header)".into(),
        };
        self.report.note(format!(
            "{split_at}: split_clients {key} became weights in weights.yaml, {how}; nginx hashes the key with \
             MurmurHash2 and cutover with SipHash, so at the switch a user may land on the other side once"
        ));
        if plan.sticky.is_some() && key_has_literal_text(&key) {
            self.report.note(format!(
                "{split_at}: the split_clients key {key} mixes text with the variable; cutover hashes the variable's \
                 value alone"
            ));
        }
        Ok(())
    }
}

impl RoutePlan {
    /// Opens the route to these networks only: `allow_list`'s networks and the lines they came from.
    pub(super) fn restrict(&mut self, allow_list: Option<(Vec<String>, Vec<String>)>) {
        if let Some((nets, lines)) = allow_list {
            self.allow_from = Some(nets);
            self.comments.extend(lines);
        }
    }

    /// A route for `loc`, whose requests go where `to` (its proxy_pass, alias or root) says, with no backends yet.
    fn new(loc: &Directive, kind: LocKind, pattern: &str, to: &Directive, settings: &Settings) -> RoutePlan {
        RoutePlan {
            at: loc.at.clone(),
            loc_text: loc.text(),
            kind,
            pattern: pattern.to_string(),
            matcher: match kind {
                LocKind::Exact => PathCond::Exact(pattern.to_string()),
                LocKind::Regex | LocKind::RegexCaseless => PathCond::Regex(regex_for(kind, pattern)),
                _ => PathCond::Prefix(pattern.to_string()),
            },
            base_name: route_base_name(kind, pattern),
            backends: Vec::new(),
            weights: None,
            stable: None,
            sticky: None,
            mirror: None,
            body_limit: settings.body_limit.clone(),
            gzip: settings.gzip.clone(),
            allow_from: None,
            comments: vec![format!("{} {}", loc.at, loc.text()), format!("{} {}", to.at, to.text())],
            weight_comments: Vec::new(),
        }
    }
}

/// The regex of a `~` or `~*` location as cutover writes it.
pub(super) fn regex_for(kind: LocKind, pattern: &str) -> String {
    if kind == LocKind::RegexCaseless {
        format!("(?i){pattern}")
    } else {
        pattern.to_string()
    }
}

/// A readable route name for a location.
fn route_base_name(kind: LocKind, pattern: &str) -> String {
    let words: Vec<String> = pattern
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let joined = words.join("-");
    match kind {
        LocKind::Regex | LocKind::RegexCaseless => {
            if joined.is_empty() {
                "regex".into()
            } else {
                format!("regex-{joined}")
            }
        }
        _ if joined.is_empty() => "default".into(),
        _ => joined,
    }
}
