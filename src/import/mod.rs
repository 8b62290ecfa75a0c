//! `cutover import-nginx`: turns the usual subset of an nginx config into a
//! `cutover.yaml` and a `weights.yaml`, and lists every directive it did not
//! convert with its `file:line`.
//!
//! What converts, and the decisions behind it:
//!
//! - `upstream NAME` → a backend `NAME`. An upstream with several servers is
//!   expanded into backends `NAME-1`, `NAME-2`… of the routes that proxy to
//!   it, weighted like nginx's `weight=` (`backup` servers get weight 0, which
//!   in cutover means "only when every weighted backend is unhealthy"), but
//!   only where that keeps nginx's behaviour: the upstream has no balancing
//!   method (`ip_hash`, `hash`, `least_conn`…) and the route is a plain
//!   `proxy_pass` (not a `split_clients` side or a mirror target, where a
//!   route backend must be one server). Otherwise the first server stands for
//!   the upstream and the others are listed as not converted.
//! - `server { listen; server_name; }` → listeners (deduplicated; `listen 80`
//!   is `0.0.0.0:80`). With several server blocks, the routes of each server
//!   that is not a default server get a `host` match per server name (exact
//!   or `*.example.com`); the default servers' routes come last, without one.
//! - `location` → routes, ordered so that cutover's first-match-wins picks
//!   the same location as nginx's precedence; see [`order_locations`].
//! - `proxy_pass` with a URI part → `rewrite: { prefix: <location>, to: <uri> }`,
//!   nginx's replacement of the matched prefix.
//! - `split_clients` used in `proxy_pass http://$var` → one route over its
//!   backends with the percentages in `weights.yaml`, sticky by cookie or
//!   header when the key is `$cookie_NAME` or `$http_NAME`.
//! - `mirror /uri` with `location = /uri { internal; proxy_pass ...; }` →
//!   `mirror: { to }` when the target is already a backend of the route.
//!   cutover mirrors only to a route's own backends, and adding the target as
//!   a weight-0 backend would let failover and retries send it live traffic,
//!   which nginx never does; so otherwise the mirror is listed.
//! - `proxy_set_header Host <literal>` → `host_header`; without any
//!   `proxy_set_header Host`, nginx sends `$proxy_host` (the upstream's
//!   name), and so does the generated backend; `$host` / `$http_host` is
//!   cutover's default (the client's Host).
//! - `proxy_connect_timeout` / `proxy_read_timeout` → backend
//!   `connect_timeout` / `timeout`, `body_timeout` and `tunnel_idle_timeout`. These are per location in nginx and per
//!   backend in cutover, so a location with different settings gets its own
//!   backend (`NAME-for-ROUTE`) for the same server.
//! - `client_max_body_size` → `server.max_body_bytes`: one limit for all
//!   routes, the largest in effect for any converted location (nginx's
//!   default 1m where none is set); smaller ones are listed.
//! - `gzip on` with `gzip_types`, `gzip_min_length`, `gzip_comp_level` →
//!   `compression`: one setting for all routes, from the first converted
//!   location that gzips; locations that differ are noted.
//! - `unix:` sockets in `proxy_pass` and upstream `server`s → `unix:` backends.
//! - A plain server's `return 301 https://$host$request_uri` → its
//!   listener's `redirect_https`, when no other server there proxies.
//! - A location's `allow NET; ... deny all;` → the route's `allow_from`, and
//!   an exact route with the same list for its bare prefix.
//! - A location's own `alias` or `root` → a `file:` backend (an `alias` with
//!   the rewrite that drops the location's prefix), when the directory is
//!   on this machine, as `cutover check` will look for it.
//! - `listen ... ssl` with `ssl_certificate` / `ssl_certificate_key` → a
//!   listener with `tls: { certs }` (absolute paths, the default server's
//!   first), when the files load here as `cutover check` will load them;
//!   otherwise a plain listener, with the directives listed and a note.
//!   `proxy_pass https://` → an https backend, with
//!   `proxy_ssl_trusted_certificate` → `tls.ca_file` and `proxy_ssl_name` →
//!   `tls.server_name` (cutover always verifies; nginx only with
//!   `proxy_ssl_verify on`, which is noted).
//!
//! Everything else is listed as not converted, grouped by directive.
//!
//! The conversion runs in phases, a file each: [`nginx`] parses the files;
//! `upstreams` reads the `upstream` and `split_clients` blocks; `servers`
//! reads each `server` block and `locations` its locations, each of which
//! becomes a route (`routes`, with `proxy_pass` and `backends`), under the
//! `settings` and certificates (`certs`) inherited level by level;
//! `precedence` orders a server's routes the way nginx picks a location;
//! `assemble` joins the servers into one route table and listener set;
//! `render` writes the files; `report` collects what did not convert.

pub mod nginx;

mod assemble;
mod backends;
mod certs;
mod locations;
mod precedence;
mod proxy_pass;
mod render;
mod report;
mod routes;
mod servers;
mod settings;
mod upstreams;

use std::path::{Path, PathBuf};

use crate::config::{Config, Weights};
pub use nginx::{Arg, Directive, ParseError, Parsed, Pos};
pub use report::NotConverted;

use assemble::Phases;
use backends::Backends;
use certs::{CertFiles, Certs};
use report::{Report, reason_for};
use routes::RoutePlanner;
use settings::{Settings, is_setting};
use upstreams::Upstreams;

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Import {
    /// The text of `cutover.yaml`.
    pub config: String,
    /// The text of `weights.yaml`.
    pub weights: String,
    /// Every directive that was not converted, in file order.
    pub not_converted: Vec<NotConverted>,
    /// Differences in behaviour worth knowing, also written at the top of `cutover.yaml`.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Nothing proxies anywhere; `report` lists what was found instead.
    #[error("nothing to import: no location proxies with proxy_pass to a backend cutover can reach")]
    NothingToRoute { report: String },
    /// The generated files do not validate: a defect of the importer.
    #[error("the generated config does not validate: {0}")]
    Invalid(String),
}

impl Import {
    /// The not-converted list grouped by directive and reason, then the notes.
    pub fn report(&self) -> String {
        report::render(&self.not_converted, &self.notes)
    }
}

/// Reads, parses and converts an nginx config file.
pub fn import_file(path: &Path) -> Result<Import, ImportError> {
    let parsed = nginx::parse_file(path)?;
    convert(&parsed, path)
}

/// Parses and converts nginx config text as if read from `path`.
pub fn import_str(path: &Path, text: &str) -> Result<Import, ImportError> {
    let parsed = nginx::parse_str(path, text)?;
    convert(&parsed, path)
}

/// Converts a parsed config; `source` names it in the generated comments.
fn convert(parsed: &Parsed, source: &Path) -> Result<Import, ImportError> {
    // nginx resolves relative file names against the main config's folder.
    let config_dir = source.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut report = Report::default();
    report.missing_includes(&parsed.missing);
    let http = http_directives(parsed, &mut report);

    let mut upstreams = Upstreams::read(http, &mut report);
    let settings = Settings::at_level(&Settings::default(), http, &mut report);
    let mut certs = CertFiles::new(config_dir.clone());
    let http_certs = certs.at_level(&Certs::default(), http, &mut report);
    let mut server_blocks = Vec::new();
    for d in http {
        match d.name.as_str() {
            "upstream" | "split_clients" if d.block.is_some() => {}
            "server" if d.block.is_some() => server_blocks.push(d),
            "ssl_certificate" | "ssl_certificate_key" => {}
            n if is_setting(n) => {}
            n => report.skip(d, reason_for(n)),
        }
    }
    let mut backends = Backends::new(config_dir);
    let mut planner = RoutePlanner {
        upstreams: &mut upstreams,
        backends: &mut backends,
        report: &mut report,
        auto_redirects: Vec::new(),
    };
    let servers: Vec<_> = server_blocks
        .into_iter()
        .map(|d| servers::read_server(d, &settings, &http_certs, &mut certs, &mut planner))
        .collect();
    let auto_redirects = planner.auto_redirects;
    upstreams.report_unused_splits(&mut report);

    let phases = Phases {
        servers,
        upstreams: &upstreams,
        backends,
        certs,
        auto_redirects: &auto_redirects,
    };
    let Some(plan) = assemble::assemble(phases, &mut report) else {
        let (not_converted, notes) = report.finish();
        return Err(ImportError::NothingToRoute {
            report: report::render(&not_converted, &notes),
        });
    };
    let config = render::config_file(source, &plan, report.notes())?;
    let weights = render::weights_file(source, &plan.routes)?;
    // The output must pass `cutover check`.
    let compiled = Config::parse(Path::new("cutover.yaml"), config.clone()).map_err(|e| ImportError::Invalid(format!("{e}\n{config}")))?;
    Weights::parse(Path::new("weights.yaml"), &weights, &compiled).map_err(|e| ImportError::Invalid(format!("{e}\n{weights}")))?;
    let (not_converted, notes) = report.finish();
    Ok(Import {
        config,
        weights,
        not_converted,
        notes,
    })
}

/// The directives of the http context. A file with an `http` block is a main
/// config: what is outside the block is listed. Without one, the file is a
/// site file (conf.d/*.conf, sites-enabled/*): the http context itself.
fn http_directives<'a>(parsed: &'a Parsed, report: &mut Report) -> &'a [Directive] {
    let Some(http) = parsed.directives.iter().find(|d| d.name == "http" && d.block.is_some()) else {
        if !parsed.directives.iter().any(|d| d.name == "http") {
            return &parsed.directives;
        }
        for d in &parsed.directives {
            report.skip(d, reason_for(&d.name));
        }
        return &[];
    };
    for d in parsed.directives.iter().filter(|d| !std::ptr::eq(*d, http)) {
        if d.name == "http" {
            report.skip(d, "a second http block: nginx refuses this config");
        } else {
            report.skip(d, reason_for(&d.name));
        }
    }
    http.children()
}

/// A file name from the config as an absolute path, resolved against the
/// main config's folder as nginx does.
fn absolute(config_dir: &Path, path: &str) -> PathBuf {
    let joined = config_dir.join(path);
    std::path::absolute(&joined).unwrap_or(joined)
}

/// `items` without repeats, in first-seen order.
fn dedup(items: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(i) {
            out.push(i.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::{RawConfig, RawWeights};

    /// The main file of every fixture: each `.conf` in the folder, and the
    /// `nginx.conf` of each subfolder.
    fn fixtures() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nginx");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.push(path.join("nginx.conf"));
            } else if path.extension().is_some_and(|e| e == "conf") {
                out.push(path);
            }
        }
        out.sort();
        out
    }

    /// The document says exactly what `T` writes of it: nothing the loader
    /// would drop or read differently.
    fn reads_back_as_written<T: serde::Serialize + serde::de::DeserializeOwned>(text: &str) {
        let raw: T = serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let as_written: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
        assert_eq!(serde_yaml::to_value(&raw).unwrap(), as_written, "{text}");
    }

    #[test]
    fn every_fixture_renders_files_the_loader_reads_back() {
        let fixtures = fixtures();
        assert!(fixtures.len() >= 6, "{fixtures:?}");
        for path in fixtures {
            let imported = import_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let config = Config::parse(Path::new("cutover.yaml"), imported.config.clone())
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), imported.config));
            Weights::parse(Path::new("weights.yaml"), &imported.weights, &config)
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), imported.weights));
            reads_back_as_written::<RawConfig>(&imported.config);
            reads_back_as_written::<RawWeights>(&imported.weights);
            assert!(!config.routes.is_empty(), "{}", path.display());
        }
    }
}
