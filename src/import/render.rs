//! Writes `cutover.yaml` and `weights.yaml` through the types the config
//! loader reads ([`RawConfig`], [`RawWeights`]), so the schema is written
//! down once. serde cannot write comments, so the comments naming the nginx
//! lines of each entry are kept beside the document, by the path of the
//! node they precede, and placed by [`to_yaml`] around the blocks serde
//! renders.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use crate::config::raw::{
    RawBackend, RawBackendTls, RawCertPair, RawConfig, RawListener, RawListenerTls, RawMatch, RawMirror, RawRewrite, RawRoute,
    RawRouteBackend, RawSticky, RawWeights,
};
use crate::config::values::{Dur, Pattern, RedirectHttps};

use super::ImportError;
use super::assemble::{ConfigPlan, ListenerPlan, NamedRoute};
use super::backends::BackendPlan;
use super::routes::PathCond;
use super::upstreams::StickyBy;

/// The text of `cutover.yaml`; `notes` head it.
pub(super) fn config_file(source: &Path, plan: &ConfigPlan, notes: &[String]) -> Result<String, ImportError> {
    let mut comments = Comments::default();
    let mut header = vec![
        format!("cutover config imported from {} by `cutover import-nginx`.", source.display()),
        "Comments name the nginx lines each entry came from. Before relying on it, review".into(),
        "the directives the import listed as not converted.".into(),
    ];
    if !notes.is_empty() {
        header.extend(["".into(), "Notes:".into()]);
        for n in notes {
            for (k, line) in wrap(n, 86).iter().enumerate() {
                header.push(format!("  {} {line}", if k == 0 { "-" } else { " " }));
            }
        }
    }
    comments.add(&[], header);

    let mut config: RawConfig = as_loaded(&[])?;
    config.weights_file = PathBuf::from("weights.yaml");
    for (i, l) in plan.listeners.iter().enumerate() {
        config.listeners.push(listener(l)?);
        let mut lines = vec![l.origin.clone()];
        lines.extend(l.tls.iter().map(|p| format!("tls: certificate {}, key {}", p.cert_at, p.key_at)));
        lines.extend(l.to_https.iter().map(|(_, origin)| format!("redirect_https: {origin}")));
        comments.add(&["listeners", &i.to_string()], lines);
    }
    if let Some((bytes, why)) = &plan.body_limit {
        config.server.max_body_bytes = Some(*bytes);
        comments.add(&["server", "max_body_bytes"], [why.clone()]);
    }
    if let Some((compression, origin)) = &plan.compression {
        config.compression = Some(compression.clone());
        comments.add(&["compression"], origin.clone());
    }
    for b in &plan.backends {
        config.backends.insert(b.name.clone(), backend(b)?);
        comments.add(&["backends", &b.name], backend_comments(b));
    }
    comments.add(
        &["routes"],
        [
            "First match wins. The order reproduces nginx's location precedence: exact (=)".into(),
            "locations, then ^~ prefixes, then regexes in file order, then the other prefixes;".into(),
            "among prefixes, a longer one comes before every shorter one it extends.".into(),
        ],
    );
    for (i, r) in plan.routes.iter().enumerate() {
        config.routes.push(route(r)?);
        comments.add(&["routes", &i.to_string()], r.plan.comments.clone());
    }
    to_yaml(&config, comments)
}

/// The text of `weights.yaml`: the routes split between several backends.
pub(super) fn weights_file(source: &Path, routes: &[NamedRoute]) -> Result<String, ImportError> {
    let mut comments = Comments::default();
    let mut header = vec![format!(
        "Percent of each route's traffic per backend, imported from {}.",
        source.display()
    )];
    let mut weights = RawWeights::new();
    for r in routes {
        let Some(bp) = &r.plan.weights else { continue };
        let percents = r
            .plan
            .backends
            .iter()
            .zip(bp)
            .map(|(b, &bp)| (b.name.clone(), f64::from(bp) / 100.0));
        weights.insert(r.name.clone(), percents.collect());
        comments.add(&[&r.name], r.plan.weight_comments.clone());
    }
    if weights.is_empty() {
        header.push("No route is split between backends yet.".into());
    }
    comments.add(&[], header);
    to_yaml(&weights, comments)
}

fn listener(l: &ListenerPlan) -> Result<RawListener, ImportError> {
    let mut raw: RawListener = as_loaded(&[("name", l.name.as_str().into()), ("addr", l.addr.as_str().into())])?;
    if !l.tls.is_empty() {
        let certs = l.tls.iter().map(|p| RawCertPair {
            cert: p.cert.clone(),
            key: p.key.clone(),
        });
        raw.tls = Some(RawListenerTls { certs: certs.collect() });
    }
    raw.redirect_https = l.to_https.as_ref().map(|(port, _)| match port {
        443 => RedirectHttps::On(true),
        &port => RedirectHttps::Port(port),
    });
    Ok(raw)
}

fn backend(b: &BackendPlan) -> Result<RawBackend, ImportError> {
    let mut raw: RawBackend = as_loaded(&[("url", b.url.as_str().into())])?;
    raw.host_header = b.host_header.as_ref().map(|h| h.0.clone());
    raw.tls = b.tls.as_ref().map(|t| RawBackendTls {
        ca_file: t.ca_file.clone(),
        server_name: t.server_name.clone(),
    });
    if let Some(t) = &b.connect_timeout {
        raw.connect_timeout = Dur(t.value);
    }
    // proxy_read_timeout bounds every wait for the backend: the head, each
    // read of the body, and a WebSocket with nothing coming from it.
    if let Some(t) = &b.timeout {
        raw.timeout = Dur(t.value);
        raw.body_timeout = Dur(t.value);
        raw.tunnel_idle_timeout = Dur(t.value);
    }
    Ok(raw)
}

/// The nginx lines a backend came from, and those of its settings.
fn backend_comments(b: &BackendPlan) -> Vec<String> {
    let mut lines = vec![b.origin.clone()];
    if let Some(t) = &b.tls {
        lines.push(format!("tls: {}", t.origin));
    }
    if let Some((_, why)) = &b.host_header {
        lines.push(format!("host_header: {why}"));
    }
    if let Some(t) = &b.connect_timeout {
        lines.push(format!("connect_timeout: {}", t.origin()));
    }
    if let Some(t) = &b.timeout {
        lines.push(format!("timeout, body_timeout, tunnel_idle_timeout: {}", t.origin()));
    }
    lines
}

fn route(r: &NamedRoute) -> Result<RawRoute, ImportError> {
    let p = &r.plan;
    let mut raw: RawRoute = as_loaded(&[("name", r.name.as_str().into()), ("backends", Value::Mapping(Mapping::new()))])?;
    let mut matcher = RawMatch {
        host: r.host.clone(),
        ..RawMatch::default()
    };
    match &p.matcher {
        PathCond::Prefix(x) => matcher.path_prefix = Some(x.clone()),
        PathCond::Exact(x) => matcher.path = Some(x.clone()),
        PathCond::Regex(x) => {
            let pattern: Pattern = x.parse().map_err(|e| ImportError::Invalid(format!("path_regex {x:?}: {e}")))?;
            matcher.path_regex = Some(pattern);
        }
    }
    raw.matcher = matcher;
    raw.stable = p.stable.clone();
    for b in &p.backends {
        let mut settings: RawRouteBackend = as_loaded(&[])?;
        settings.rewrite = b.rewrite.as_ref().map(|(prefix, to)| RawRewrite {
            prefix: prefix.clone(),
            to: to.clone(),
        });
        raw.backends.insert(b.name.clone(), Some(settings));
    }
    raw.sticky = match &p.sticky {
        Some(StickyBy::Cookie(c)) => Some(as_loaded::<RawSticky>(&[("cookie", c.as_str().into())])?),
        Some(StickyBy::Header(h)) => Some(as_loaded::<RawSticky>(&[("header", h.as_str().into())])?),
        None => None,
    };
    if let Some(to) = &p.mirror {
        raw.mirror = Some(as_loaded::<RawMirror>(&[("to", to.as_str().into())])?);
    }
    if let Some(nets) = &p.allow_from {
        let nets = nets.iter().map(|n| n.parse()).collect::<Result<_, _>>();
        raw.allow_from = Some(nets.map_err(|e| ImportError::Invalid(format!("allow_from: {e}")))?);
    }
    Ok(raw)
}

/// `T` as the loader reads it from just `keys`: every other field holds the
/// loader's own default, which serialising then leaves out.
fn as_loaded<T: DeserializeOwned>(keys: &[(&str, Value)]) -> Result<T, ImportError> {
    let mapping: Mapping = keys.iter().map(|(k, v)| (Value::from(*k), v.clone())).collect();
    serde_yaml::from_value(Value::Mapping(mapping)).map_err(|e| ImportError::Invalid(format!("{keys:?}: {e}")))
}

/// Comment lines by the path of the node they precede: `[]` for the top of
/// the document, `["routes"]` for a top-level key, `["routes", "3"]` for an
/// item of a sequence, `["backends", "legacy"]` for an entry of a mapping.
#[derive(Debug, Default)]
struct Comments {
    by_path: IndexMap<Vec<String>, Vec<String>>,
}

impl Comments {
    fn add(&mut self, path: &[&str], lines: impl IntoIterator<Item = String>) {
        let key = path.iter().map(|s| s.to_string()).collect();
        self.by_path.entry(key).or_default().extend(lines);
    }

    fn take(&mut self, path: &[&str]) -> Vec<String> {
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.by_path.shift_remove(&key).unwrap_or_default()
    }

    /// Whether some node under the top-level `key` has comments.
    fn any_under(&self, key: &str) -> bool {
        self.by_path.keys().any(|p| p.len() > 1 && p[0] == key)
    }
}

/// `doc` as YAML with `comments` placed before their nodes. Each top-level
/// entry, and each item of a top-level collection that has comments, is
/// rendered by serde on its own and indented into place.
fn to_yaml<T: Serialize>(doc: &T, mut comments: Comments) -> Result<String, ImportError> {
    let invalid = |e: serde_yaml::Error| ImportError::Invalid(e.to_string());
    let value = serde_yaml::to_value(doc).map_err(invalid)?;
    let mut out = String::new();
    write_comments(&mut out, "", &comments.take(&[]));
    let top = match value {
        Value::Mapping(top) if !top.is_empty() => top,
        other => {
            out.push_str(&serde_yaml::to_string(&other).map_err(invalid)?);
            return finish(out, comments);
        }
    };
    for (key, node) in top {
        let name = key.as_str().unwrap_or_default().to_string();
        let above = comments.take(&[&name]);
        let itemised = comments.any_under(&name);
        if !above.is_empty() || itemised {
            out.push('\n');
        }
        write_comments(&mut out, "", &above);
        match node {
            Value::Sequence(items) if itemised => {
                out.push_str(&format!("{}:\n", yaml_key(&key)?));
                for (i, item) in items.into_iter().enumerate() {
                    write_comments(&mut out, "  ", &comments.take(&[&name, &i.to_string()]));
                    write_indented(&mut out, &serde_yaml::to_string(&[item]).map_err(invalid)?);
                }
            }
            Value::Mapping(entries) if itemised => {
                out.push_str(&format!("{}:\n", yaml_key(&key)?));
                for (k, v) in entries {
                    let entry = k.as_str().unwrap_or_default().to_string();
                    write_comments(&mut out, "  ", &comments.take(&[&name, &entry]));
                    write_indented(&mut out, &serde_yaml::to_string(&Mapping::from_iter([(k, v)])).map_err(invalid)?);
                }
            }
            node => out.push_str(&serde_yaml::to_string(&Mapping::from_iter([(key, node)])).map_err(invalid)?),
        }
    }
    finish(out, comments)
}

/// Every comment must have found its node: one that did not is a defect of the importer.
fn finish(out: String, comments: Comments) -> Result<String, ImportError> {
    match comments.by_path.keys().next() {
        Some(path) => Err(ImportError::Invalid(format!(
            "comment for {}, which is not in the document",
            path.join(".")
        ))),
        None => Ok(out),
    }
}

/// A mapping key as serde writes it (quoted when it needs to be).
fn yaml_key(key: &Value) -> Result<String, ImportError> {
    let text = serde_yaml::to_string(key).map_err(|e| ImportError::Invalid(e.to_string()))?;
    Ok(text.trim_end().to_string())
}

fn write_indented(out: &mut String, block: &str) {
    for line in block.lines() {
        if !line.is_empty() {
            out.push_str("  ");
        }
        out.push_str(line);
        out.push('\n');
    }
}

/// Writes comment lines. The text comes from nginx files, so a line break
/// in it starts a new comment line (else the rest would be read as YAML),
/// and characters YAML does not allow in a document are escaped.
fn write_comments(out: &mut String, indent: &str, lines: &[String]) {
    for line in lines {
        for part in line.split(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']) {
            out.push_str(indent);
            out.push('#');
            if !part.is_empty() {
                out.push(' ');
                for c in part.chars() {
                    if (c.is_control() && c != '\t') || c == '\u{feff}' || c == '\u{fffe}' || c == '\u{ffff}' {
                        out.extend(c.escape_default());
                    } else {
                        out.push(c);
                    }
                }
            }
            out.push('\n');
        }
    }
}

/// `text` in lines of at most `width` characters, broken between words.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_config_writes_only_what_the_loader_would_not_fill_in() {
        // One of each block with its required keys only. A new field in
        // config/raw.rs that is written at its default shows up here: give
        // it a `skip_serializing_if`.
        let text = "\
listeners:
- name: web
  addr: 127.0.0.1:8080
admin:
  addr: 127.0.0.1:9901
weights_file: weights.yaml
access_log:
  format: combined
  path: stdout
parity_log:
  path: parity.jsonl
backends:
  a:
    url: http://127.0.0.1:8000
    health_check:
      path: /healthz
  b:
    url: http://127.0.0.1:8001
routes:
- name: api
  match:
    path_prefix: /api/
  backends:
    a: {}
    b:
      rewrite:
        prefix: /api/
        to: /
  sticky:
    cookie: session
  mirror:
    to: b
  guard:
    max_error_rate: 0.05
";
        let raw: RawConfig = serde_yaml::from_str(text).unwrap();
        assert_eq!(serde_yaml::to_string(&raw).unwrap(), text);
        let defaults: RawConfig = as_loaded(&[]).unwrap();
        assert_eq!(
            serde_yaml::to_string(&defaults).unwrap(),
            "admin:\n  addr: 127.0.0.1:9901\nweights_file: weights.yaml\naccess_log:\n  format: combined\n  path: stdout\n"
        );
    }

    #[test]
    fn comments_go_before_their_nodes() {
        let weights: RawWeights = serde_yaml::from_str("api: { legacy: 90, new: 10 }\nauth: { legacy: 100 }\n").unwrap();
        let mut comments = Comments::default();
        comments.add(&[], ["top".to_string()]);
        comments.add(&["auth"], ["why auth".to_string()]);
        assert_eq!(
            to_yaml(&weights, comments).unwrap(),
            "# top\napi:\n  legacy: 90.0\n  new: 10.0\n\n# why auth\nauth:\n  legacy: 100.0\n"
        );

        let mut comments = Comments::default();
        comments.add(&["routes", "0"], ["no such node".to_string()]);
        let err = to_yaml(&weights, comments).unwrap_err().to_string();
        assert!(err.contains("comment for routes.0"), "{err}");
    }

    #[test]
    fn comment_text_cannot_leave_its_comment() {
        let mut out = String::new();
        let text = "a\nb\r\nc\u{2028}d\u{85}e \u{1}\u{7f} \u{feff}".to_string();
        write_comments(&mut out, "  ", &[text, String::new()]);
        assert_eq!(out, "  # a\n  # b\n  #\n  # c\n  # d\n  # e \\u{1}\\u{7f} \\u{feff}\n  #\n");
    }
}
