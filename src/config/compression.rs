//! The `compression:` section: gzip for clients that accept it, as nginx's
//! `gzip on`. Raw and compiled forms side by side; off unless `gzip: true`.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::yaml::Positions;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    #[serde(default)]
    pub gzip: bool,
    /// zlib's level, 1 (fastest, nginx's default) to 9; 1 and 2 compress alike.
    #[serde(default = "default_level")]
    pub level: u32,
    /// Answers with a smaller `Content-Length` are sent as they are.
    #[serde(default = "default_min_bytes")]
    pub min_bytes: u64,
    /// Media types compressed (`Content-Type` without its parameters); `*` for all.
    #[serde(default = "default_types")]
    pub types: Vec<String>,
}

fn default_level() -> u32 {
    1
}

fn default_min_bytes() -> u64 {
    1024
}

/// Text a browser or API client fetches; images and archives are compressed already.
fn default_types() -> Vec<String> {
    [
        "text/html",
        "text/css",
        "text/plain",
        "text/xml",
        "text/javascript",
        "application/javascript",
        "application/json",
        "application/xml",
        "image/svg+xml",
    ]
    .map(String::from)
    .to_vec()
}

/// What is compressed, and how hard.
#[derive(Debug, Clone)]
pub struct Compression {
    pub level: flate2::Compression,
    pub min_bytes: u64,
    /// Lowercase media types; empty with `any_type`.
    types: Vec<Box<str>>,
    any_type: bool,
}

impl Compression {
    /// Whether a `Content-Type` value names a media type to compress.
    pub fn compresses(&self, content_type: &[u8]) -> bool {
        if self.any_type {
            return true;
        }
        let Ok(text) = std::str::from_utf8(content_type) else {
            return false;
        };
        let media = text.split(';').next().unwrap_or("").trim();
        self.types.iter().any(|t| t.eq_ignore_ascii_case(media))
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let types = if self.any_type {
            "every type".to_string()
        } else {
            self.types.join(", ")
        };
        write!(f, "gzip from {} bytes: {types}", self.min_bytes)
    }
}

/// The compiled section; `None` when gzip is off.
pub fn compile(raw: &RawCompression, pos: &Positions, errors: &mut Vec<ConfigError>) -> Option<Compression> {
    if !(1..=9).contains(&raw.level) {
        errors.push(ConfigError::at(pos.value(&["compression", "level"]), "level must be from 1 to 9"));
    }
    for t in &raw.types {
        if t != "*" && (t.contains([';', ' ']) || t.split('/').filter(|part| !part.is_empty()).count() != 2) {
            errors.push(ConfigError::at(
                pos.value(&["compression", "types"]),
                format!("{t:?} is not a media type (type/subtype, or * for all)"),
            ));
        }
    }
    raw.gzip.then(|| Compression {
        // zlib-rs's level 1 is zlib-ng's quick strategy: on JSON some 40%
        // more bytes than zlib's level 1, the level nginx means by 1. Its
        // level 2 is zlib's level 1 (no lazy matches), so 1 starts there.
        level: flate2::Compression::new(raw.level.clamp(2, 9)),
        min_bytes: raw.min_bytes,
        types: raw
            .types
            .iter()
            .filter(|t| *t != "*")
            .map(|t| t.to_ascii_lowercase().into())
            .collect(),
        any_type: raw.types.iter().any(|t| t == "*"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(yaml: &str) -> Result<Option<Compression>, Vec<ConfigError>> {
        let raw: RawCompression = serde_yaml::from_str(yaml).unwrap();
        let pos = Positions::default();
        let mut errors = Vec::new();
        let c = compile(&raw, &pos, &mut errors);
        if errors.is_empty() { Ok(c) } else { Err(errors) }
    }

    #[test]
    fn media_types_match_without_parameters_or_case() {
        let c = compiled("gzip: true").unwrap().unwrap();
        assert!(c.compresses(b"application/json"));
        assert!(c.compresses(b"Text/HTML; charset=utf-8"));
        assert!(!c.compresses(b"image/png"));
        assert!(!c.compresses(b"text/event-stream"), "a stream of events waits for nothing");
        assert!(compiled("{ gzip: true, types: ['*'] }").unwrap().unwrap().compresses(b"image/png"));
        assert!(compiled("gzip: false").unwrap().is_none());
    }

    #[test]
    fn a_bad_level_or_type_is_an_error() {
        assert!(compiled("{ gzip: true, level: 0 }").is_err());
        assert!(compiled("{ gzip: true, level: 10 }").is_err());
        assert!(compiled("{ gzip: true, types: [json] }").is_err());
        assert!(compiled("{ gzip: true, types: ['text/html; charset=utf-8'] }").is_err());
    }
}
