//! nginx's location precedence as cutover's first-match route order; see
//! [`order_locations`].

use super::locations::LocKind;
use super::routes::{PathCond, RoutePlan};

/// Orders one server's routes so that cutover's first match picks the same
/// location as nginx.
///
/// nginx picks, for a path: an exact (`=`) location equal to it; otherwise it
/// finds the longest matching prefix location and, if that prefix is `^~`,
/// uses it; otherwise the first regex location (in file order) that matches;
/// otherwise that longest prefix. The routes are therefore emitted as:
///
/// 1. exact locations (`path:`);
/// 2. `^~` prefixes, a longer one before any shorter one it extends, each
///    restricted to the paths for which it is the longest matching prefix:
///    when a longer *plain* prefix extends it (`^~ /static/` and
///    `/static/img/`), nginx goes on to the regexes for `/static/img/...`, so
///    that route becomes a `path_regex` matching `/static/` but not
///    `/static/img/` (longer `^~` prefixes are already ahead of it);
/// 3. regex locations, in file order (`~*` gets `(?i)`);
/// 4. the remaining prefixes, a longer one before any shorter one it extends.
///
/// "Longest first" only matters between prefixes where one extends the other,
/// so otherwise the file's order is kept (see [`longer_first`]).
///
/// Only converted locations take part: a location that was left out is
/// treated as absent.
pub(super) fn order_locations(plans: Vec<RoutePlan>) -> Vec<RoutePlan> {
    let by_kind = |k: &[LocKind]| plans.iter().filter(|p| k.contains(&p.kind)).cloned().collect::<Vec<_>>();
    let exact = by_kind(&[LocKind::Exact]);
    let noregex = by_kind(&[LocKind::NoRegex]);
    let regex = by_kind(&[LocKind::Regex, LocKind::RegexCaseless]);
    let prefix = by_kind(&[LocKind::Prefix]);
    let mut noregex = longer_first(noregex);
    let prefix = longer_first(prefix);
    for p in &mut noregex {
        let longer: Vec<&str> = prefix
            .iter()
            .filter(|q| q.pattern.len() > p.pattern.len() && q.pattern.starts_with(&p.pattern))
            .map(|q| q.pattern.as_str())
            .collect();
        if longer.is_empty() {
            continue;
        }
        let suffixes: Vec<&str> = longer.iter().map(|q| &q[p.pattern.len()..]).collect();
        p.matcher = PathCond::Regex(format!("^{}{}", regex::escape(&p.pattern), not_prefix_regex(&suffixes)));
        p.comments.push(format!(
            "^~ {} except under {}: there nginx checks the regex locations first",
            p.pattern,
            longer.join(", ")
        ));
    }
    let mut out = exact;
    out.extend(noregex);
    out.extend(regex);
    out.extend(prefix);
    out
}

/// Prefix routes in file order, except that a prefix comes before every
/// shorter prefix it extends (`/api/v2/` before `/api/`), so that the first
/// match is the longest, as in nginx.
fn longer_first(plans: Vec<RoutePlan>) -> Vec<RoutePlan> {
    let mut out: Vec<RoutePlan> = Vec::with_capacity(plans.len());
    for p in plans {
        // Before the first route it extends: every prefix of p is at or after that point,
        // and every route extending p is already before it (it had to precede that route too).
        match out.iter().position(|q| p.pattern.starts_with(&q.pattern)) {
            Some(i) => out.insert(i, p),
            None => out.push(p),
        }
    }
    out
}

/// A regex (to follow an anchored literal) matching any rest of the path that
/// does not start with one of `suffixes` (none empty).
fn not_prefix_regex(suffixes: &[&str]) -> String {
    #[derive(Default)]
    struct Node {
        end: bool,
        children: std::collections::BTreeMap<char, Node>,
    }
    fn build(node: &Node) -> Option<String> {
        if node.end {
            return None;
        }
        let mut alts = vec!["$".to_string()];
        let class: String = node.children.keys().map(|c| regex::escape(&c.to_string())).collect();
        alts.push(format!("[^{class}]"));
        for (c, child) in &node.children {
            if let Some(rest) = build(child) {
                alts.push(format!("{}{rest}", regex::escape(&c.to_string())));
            }
        }
        Some(format!("(?:{})", alts.join("|")))
    }
    let mut root = Node::default();
    for s in suffixes {
        let mut n = &mut root;
        for c in s.chars() {
            n = n.children.entry(c).or_default();
        }
        n.end = true;
    }
    build(&root).unwrap_or_else(|| "(?:$.)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_prefix_regex_excludes_exactly_the_longer_prefixes() {
        let re = regex::Regex::new(&format!("^/static/{}", not_prefix_regex(&["img/", "icons/"]))).unwrap();
        for ok in [
            "/static/",
            "/static/a.css",
            "/static/im",
            "/static/img",
            "/static/imgx/",
            "/static/icon/",
        ] {
            assert!(re.is_match(ok), "{ok}");
        }
        for no in ["/static/img/", "/static/img/a.png", "/static/icons/x", "/stat", "/other/"] {
            assert!(!re.is_match(no), "{no}");
        }
    }
}
