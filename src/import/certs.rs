//! `ssl_certificate` and `ssl_certificate_key`: inherited like nginx does,
//! checked the way `cutover check` will load them, and given to the TLS
//! listeners; those no listener uses are listed with the reason.

use std::collections::HashSet;
use std::path::PathBuf;

use indexmap::IndexMap;

use super::absolute;
use super::nginx::{Directive, Pos};
use super::report::Report;
use super::servers::ServerPlan;

/// An `ssl_certificate` or `ssl_certificate_key` directive.
#[derive(Debug, Clone)]
pub(super) struct CertDirective {
    path: String,
    at: Pos,
}

/// The certificate directives in effect at a level (each list is inherited
/// whole by a level that sets none, as in nginx).
#[derive(Debug, Clone, Default)]
pub(super) struct Certs {
    certs: Option<Vec<CertDirective>>,
    keys: Option<Vec<CertDirective>>,
}

/// A certificate and key cutover can load, as absolute paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TlsPair {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) cert_at: Pos,
    pub(super) key_at: Pos,
}

/// Every certificate directive seen, and which ones a listener uses.
#[derive(Debug)]
pub(super) struct CertFiles {
    /// The main config's folder, against which nginx resolves file names.
    config_dir: PathBuf,
    /// The directive's text, and why it could not be used if it could not.
    seen: IndexMap<Pos, (String, Option<String>)>,
    used: HashSet<Pos>,
}

impl CertFiles {
    pub(super) fn new(config_dir: PathBuf) -> CertFiles {
        CertFiles {
            config_dir,
            seen: IndexMap::new(),
            used: HashSet::new(),
        }
    }

    /// The certificate directives of a level whose directives are `dirs`, inheriting `parent`'s.
    pub(super) fn at_level(&mut self, parent: &Certs, dirs: &[Directive], report: &mut Report) -> Certs {
        let mut out = Certs::default();
        for d in dirs {
            let list = match d.name.as_str() {
                "ssl_certificate" => &mut out.certs,
                "ssl_certificate_key" => &mut out.keys,
                _ => continue,
            };
            let Some(path) = d.arg(0).filter(|_| d.args.len() == 1) else {
                report.skip(d, "invalid directive");
                continue;
            };
            self.seen.insert(d.at.clone(), (d.text(), None));
            list.get_or_insert_with(Vec::new).push(CertDirective {
                path: path.to_string(),
                at: d.at.clone(),
            });
        }
        Certs {
            certs: out.certs.or_else(|| parent.certs.clone()),
            keys: out.keys.or_else(|| parent.keys.clone()),
        }
    }

    /// The certificate pairs of a server with `listen ... ssl`, checked the way
    /// `cutover check` will check them.
    pub(super) fn server_tls(&mut self, certs: &Certs) -> Result<Vec<TlsPair>, String> {
        let cs = certs.certs.clone().unwrap_or_default();
        let ks = certs.keys.clone().unwrap_or_default();
        let result = self.load_pairs(&cs, &ks);
        if let Err(why) = &result {
            for d in cs.iter().chain(&ks) {
                if let Some(entry) = self.seen.get_mut(&d.at) {
                    entry.1.get_or_insert_with(|| why.clone());
                }
            }
        }
        result
    }

    fn load_pairs(&self, cs: &[CertDirective], ks: &[CertDirective]) -> Result<Vec<TlsPair>, String> {
        if cs.is_empty() {
            return Err("the server has no ssl_certificate".to_string());
        }
        if cs.len() != ks.len() {
            return Err("ssl_certificate and ssl_certificate_key do not pair up".to_string());
        }
        let mut pairs = Vec::new();
        for (c, k) in cs.iter().zip(ks) {
            if c.path.contains('$') || k.path.contains('$') {
                return Err("certificates named by variables are not converted".to_string());
            }
            let (cert, key) = (absolute(&self.config_dir, &c.path), absolute(&self.config_dir, &k.path));
            let source = crate::tls::CertSource {
                cert: cert.clone(),
                key: key.clone(),
            };
            if let Err(e) = crate::tls::load(&source) {
                return Err(format!("cutover cannot load it here ({e})"));
            }
            pairs.push(TlsPair {
                cert,
                key,
                cert_at: c.at.clone(),
                key_at: k.at.clone(),
            });
        }
        Ok(pairs)
    }

    /// The certificates of a listener address with `listen ... ssl`: those of
    /// its default server first, then of the other servers on it. When none can
    /// be used the listener serves plain HTTP and the `listen`s are listed.
    pub(super) fn listener_tls(&mut self, addr: &str, servers: &[ServerPlan], default: Option<usize>, report: &mut Report) -> Vec<TlsPair> {
        let mut on_addr: Vec<usize> = (0..servers.len())
            .filter(|&i| servers[i].listens.iter().any(|l| l.addr == addr && l.ssl))
            .collect();
        if on_addr.is_empty() {
            return Vec::new();
        }
        if let Some(d) = default
            && let Some(pos) = on_addr.iter().position(|&i| i == d)
        {
            let first = on_addr.remove(pos);
            on_addr.insert(0, first);
        }
        let mut pairs: Vec<TlsPair> = Vec::new();
        for &i in &on_addr {
            if let Some(Ok(ps)) = &servers[i].tls {
                for p in ps {
                    if !pairs.iter().any(|q| q.cert == p.cert && q.key == p.key) {
                        pairs.push(p.clone());
                    }
                }
            }
        }
        for p in &pairs {
            self.used.insert(p.cert_at.clone());
            self.used.insert(p.key_at.clone());
        }
        if pairs.is_empty() {
            for &i in &on_addr {
                let why = match &servers[i].tls {
                    Some(Err(why)) => why.clone(),
                    _ => "no certificate".to_string(),
                };
                for l in servers[i].listens.iter().filter(|l| l.addr == addr && l.ssl) {
                    report.list(
                        l.at.clone(),
                        "listen",
                        l.text.clone(),
                        format!(
                            "TLS not converted ({why}): this listener serves plain HTTP; terminate TLS in front of cutover, \
                             or add tls: {{ certs: [...] }} where cutover can read the files"
                        ),
                    );
                }
            }
            report.note(format!(
                "{addr}: TLS not converted: `listen ... ssl` became a plain HTTP listener because its certificates could not be loaded"
            ));
        }
        pairs
    }

    /// Lists the certificate directives no listener uses.
    pub(super) fn report_unused(&self, report: &mut Report) {
        for (at, (text, why)) in self.seen.iter().filter(|(at, _)| !self.used.contains(*at)) {
            report.list(
                at.clone(),
                text.split(' ').next().unwrap_or_default(),
                text.clone(),
                match why {
                    Some(why) => format!("TLS not converted: {why}"),
                    None => "no TLS listener uses it".to_string(),
                },
            );
        }
    }
}
