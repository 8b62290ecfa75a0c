//! All YAML parsing lives here so the parser can be swapped in one place.
//!
//! Documents are parsed twice: once by `serde_yaml` into typed raw structs
//! (syntax errors, unknown keys and bad scalar values come back with a
//! location), and once by `yaml-rust2`'s event parser into a [`Positions`]
//! index, so that checks which only make sense after deserialisation
//! (unknown backend names, sums) can still point at the offending node.

use std::collections::HashMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::error::{ConfigError, Location};

/// Parses `text` (read from `file`) into `T` and indexes node positions.
pub fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<(T, Positions), ConfigError> {
    check_line_breaks(file, text)?;
    // An empty document is `null` to serde_yaml; treat it as an empty mapping,
    // unless YAML itself rejects the whitespace (a tab where indentation goes).
    let value: T = if text.trim().is_empty() && serde_yaml::from_str::<serde_yaml::Value>(text).is_ok() {
        serde_yaml::from_str("{}").map_err(|e| from_serde(file, e))?
    } else {
        serde_yaml::from_str(text).map_err(|e| from_serde(file, e))?
    };
    let positions = Positions::index(file, text);
    Ok((value, positions))
}

/// Line breaks must be LF or CRLF. YAML also breaks lines at a lone CR and
/// at U+0085, U+2028 and U+2029, which line-based tools (and cutover's own
/// comment-keeping weight file writer) read as part of one line, so the same
/// text would mean two different things.
fn check_line_breaks(file: &Path, text: &str) -> Result<(), ConfigError> {
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let odd = match c {
            '\r' => chars.peek().is_none_or(|&(_, next)| next != '\n'),
            '\u{85}' | '\u{2028}' | '\u{2029}' => true,
            _ => false,
        };
        if odd {
            let line = text[..at].matches('\n').count() + 1;
            let column = text[..at].rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            return Err(ConfigError::at(
                Location::new(file, line, column),
                format!("unsupported line break {:?}: end lines with \\n or \\r\\n", c),
            ));
        }
    }
    Ok(())
}

fn from_serde(file: &Path, err: serde_yaml::Error) -> ConfigError {
    let (line, column) = err.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
    let mut message = err.to_string();
    // serde_yaml appends " at line L column C"; the location is printed up front instead.
    if let Some(cut) = message.find(" at line ") {
        message.truncate(cut);
    }
    ConfigError::at(Location::new(file, line, column), message)
}

/// Line and column (1-based) of every node, keyed by its path in the
/// document: `routes.1.backends.new`. Keys of mappings are indexed under the
/// same path with a `key:` prefix, which is where a "no such name" error
/// reads best.
#[derive(Debug, Default, Clone)]
pub struct Positions {
    file: std::path::PathBuf,
    nodes: HashMap<String, (usize, usize)>,
}

impl Positions {
    fn index(file: &Path, text: &str) -> Positions {
        let mut builder = IndexBuilder::default();
        let mut parser = Parser::new_from_str(text);
        // A parse failure here was already reported by serde_yaml.
        let _ = parser.load(&mut builder, false);
        Positions {
            file: file.to_path_buf(),
            nodes: builder.nodes,
        }
    }

    /// The location of the value at `path`, or of its nearest indexed parent.
    pub fn value(&self, path: &[&str]) -> Location {
        self.lookup(path, "")
    }

    /// The location of the mapping key that names `path`, falling back to its value.
    pub fn key(&self, path: &[&str]) -> Location {
        self.lookup(path, "key:")
    }

    fn lookup(&self, path: &[&str], prefix: &str) -> Location {
        for len in (0..=path.len()).rev() {
            let joined = path[..len].join(".");
            for p in [prefix, ""] {
                if let Some(&(line, col)) = self.nodes.get(&format!("{p}{joined}")) {
                    return Location::new(&self.file, line, col);
                }
            }
        }
        Location::new(&self.file, 1, 1)
    }
}

enum Frame {
    Map { expecting_key: bool, key: Option<String> },
    Seq { index: usize },
}

#[derive(Default)]
struct IndexBuilder {
    stack: Vec<Frame>,
    path: Vec<String>,
    nodes: HashMap<String, (usize, usize)>,
}

impl IndexBuilder {
    fn record(&mut self, prefix: &str, mark: Marker) {
        let key = format!("{prefix}{}", self.path.join("."));
        // yaml-rust2 lines are 1-based and columns 0-based.
        self.nodes.entry(key).or_insert((mark.line(), mark.col() + 1));
    }

    /// Called before a value node starts: pushes its path segment.
    /// Returns false when the node is a mapping key, not a value.
    fn enter_value(&mut self, scalar: Option<&str>, mark: Marker) -> bool {
        match self.stack.last_mut() {
            Some(Frame::Map { expecting_key, key }) if *expecting_key => {
                *expecting_key = false;
                let name = scalar.unwrap_or("?").to_string();
                *key = Some(name.clone());
                // Block mappings report their start after the first key; the key is where they begin.
                let here = (mark.line(), mark.col() + 1);
                if let Some(start) = self.nodes.get_mut(&self.path.join(".")) {
                    *start = (*start).min(here);
                }
                self.path.push(name);
                self.record("key:", mark);
                self.path.pop();
                false
            }
            Some(Frame::Map { key, .. }) => {
                let name = key.take().unwrap_or_default();
                self.path.push(name);
                true
            }
            Some(Frame::Seq { index }) => {
                let name = index.to_string();
                *index += 1;
                self.path.push(name);
                true
            }
            None => true,
        }
    }

    fn leave_value(&mut self) {
        if let Some(Frame::Map { expecting_key, .. }) = self.stack.last_mut() {
            *expecting_key = true;
        }
        if !self.stack.is_empty() {
            self.path.pop();
        }
    }
}

impl MarkedEventReceiver for IndexBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(..) | Event::Alias(_) => {
                let scalar = match &ev {
                    Event::Scalar(value, ..) => Some(value.as_str()),
                    _ => None,
                };
                if self.enter_value(scalar, mark) {
                    self.record("", mark);
                    self.leave_value();
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_value = self.enter_value(None, mark);
                if is_value {
                    self.record("", mark);
                }
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map {
                        expecting_key: true,
                        key: None,
                    }
                } else {
                    Frame::Seq { index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.leave_value();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_keys_and_values_of_nested_nodes() {
        let text = "routes:\n  - name: api\n    backends:\n      legacy: {}\n      new: { weight: 1 }\n";
        let (_, pos): (serde_yaml::Value, _) = parse(Path::new("c.yaml"), text).unwrap();
        assert_eq!(pos.key(&["routes", "0", "backends", "new"]).to_string(), "c.yaml:5:7");
        assert_eq!(pos.value(&["routes", "0", "name"]).to_string(), "c.yaml:2:11");
        assert_eq!(pos.value(&["routes", "0", "backends", "new", "weight"]).to_string(), "c.yaml:5:22");
        // Unknown paths fall back to the nearest parent.
        assert_eq!(pos.value(&["routes", "0", "missing"]).to_string(), "c.yaml:2:5");
    }

    #[test]
    fn whitespace_is_empty_unless_yaml_rejects_it() {
        for text in ["", "\n\n", "  \n"] {
            let (v, _): (HashMap<String, u32>, _) = parse(Path::new("w.yaml"), text).unwrap();
            assert!(v.is_empty(), "{text:?}");
        }
        for text in [" \t\n", "\t\n"] {
            let written = format!("{text}a: 1\n");
            assert!(parse::<HashMap<String, u32>>(Path::new("w.yaml"), &written).is_err(), "{written:?}");
            assert!(parse::<HashMap<String, u32>>(Path::new("w.yaml"), text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn line_breaks_are_lf_or_crlf() {
        let ok: (HashMap<String, u32>, _) = parse(Path::new("w.yaml"), "a: 1\r\nb: 2\n").unwrap();
        assert_eq!(ok.0.len(), 2);
        for (text, at) in [
            ("a: 1\rb: 2\n", "w.yaml:1:5"),
            ("a: 1\n# x\u{2028}b: 2\n", "w.yaml:2:4"),
            ("\r#\r{}#", "w.yaml:1:1"),
        ] {
            let err = parse::<HashMap<String, u32>>(Path::new("w.yaml"), text).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{at}: unsupported line break")), "{text:?}: {err}");
        }
    }

    #[test]
    fn serde_errors_carry_their_location() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            a: u32,
        }
        let err = parse::<S>(Path::new("w.yaml"), "a: 1\nb: 2\n").unwrap_err();
        assert!(err.to_string().starts_with("w.yaml:2:1: unknown field `b`"), "{err}");
    }
}
