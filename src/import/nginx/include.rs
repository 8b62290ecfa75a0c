//! `include`: the files it names, parsed in its place.
//!
//! Relative `include` paths are resolved the way nginx resolves them: against
//! the folder of the main config file (nginx's "conf prefix"), not of the
//! file that contains the `include`. When nothing is found there, the
//! including file's own folder is tried as well, so snippets written for
//! either convention are found. Patterns (`*`, `?`, `[...]`) are expanded
//! like glob(3) without flags — `*` does not match a leading dot — and sorted;
//! a pattern that matches nothing is not an error, as in nginx.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::{Arg, Directive, MAX_INCLUDE_DEPTH, MissingInclude, ParseError, Parser, Pos};

impl Parser {
    /// Expands `include PATTERN;` into `out`.
    pub(super) fn include(
        &mut self,
        at: &Pos,
        args: &[Arg],
        from: &Path,
        depth: usize,
        out: &mut Vec<Directive>,
    ) -> Result<(), ParseError> {
        let [pattern] = args else {
            return Err(ParseError::IncludeArgs { at: at.clone() });
        };
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(ParseError::IncludeDepth { at: at.clone() });
        }
        let pattern = Path::new(&pattern.text);
        let from_dir = from.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut bases = vec![self.prefix.clone()];
        if pattern.is_relative() && from_dir != self.prefix {
            bases.push(from_dir);
        }
        let is_glob = pattern.to_string_lossy().contains(['*', '?', '[']);
        let mut files = Vec::new();
        let mut first_error = None;
        for base in &bases {
            let full = base.join(pattern);
            if is_glob {
                files = glob(&full);
            } else {
                match std::fs::metadata(&full) {
                    Ok(m) if m.is_file() => files = vec![full],
                    Ok(_) => {
                        first_error.get_or_insert((full, "not a file".to_string()));
                    }
                    Err(e) => {
                        first_error.get_or_insert((full, e.to_string()));
                    }
                }
            }
            if !files.is_empty() {
                break;
            }
        }
        if files.is_empty() {
            if let Some((path, error)) = first_error {
                self.missing.push(MissingInclude {
                    at: at.clone(),
                    path,
                    error,
                });
            }
            return Ok(());
        }
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    self.missing.push(MissingInclude {
                        at: at.clone(),
                        path: file,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            self.files.push(file.clone());
            let file: Arc<Path> = Arc::from(file.as_path());
            out.extend(self.parse_text(file, &text, depth + 1)?);
        }
        Ok(())
    }
}

/// The files matching `pattern` (wildcards in any component), sorted.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut current = vec![PathBuf::new()];
    for component in pattern.components() {
        match component {
            Component::Normal(part) if part.to_string_lossy().contains(['*', '?', '[']) => {
                let part = part.to_string_lossy();
                let mut next = Vec::new();
                for dir in &current {
                    let listing = if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir.as_path()
                    };
                    let Ok(entries) = std::fs::read_dir(listing) else {
                        continue;
                    };
                    for entry in entries.flatten() {
                        let name = entry.file_name();
                        let name = name.to_string_lossy();
                        if name.starts_with('.') && !part.starts_with('.') {
                            continue;
                        }
                        if wildcard_match(part.as_bytes(), name.as_bytes()) {
                            next.push(dir.join(name.as_ref()));
                        }
                    }
                }
                current = next;
            }
            other => {
                for path in &mut current {
                    path.push(other.as_os_str());
                }
            }
        }
    }
    current.retain(|p| p.is_file());
    current.sort();
    current
}

/// Shell wildcard matching of one path component: `*`, `?`, `[a-z]`, `[!x]`/`[^x]`.
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| wildcard_match(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && wildcard_match(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            match class_match(rest, c) {
                Some((matched, after)) => matched && wildcard_match(after, name_rest),
                // No closing bracket: a literal '['.
                None => c == b'[' && wildcard_match(rest, name_rest),
            }
        }
        Some((&p, rest)) => name.first() == Some(&p) && wildcard_match(rest, &name[1..]),
    }
}

/// Matches `c` against a bracket expression (after its `[`); returns whether
/// it matched and the pattern after the closing `]`.
fn class_match(class: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let (negated, mut i) = match class.first() {
        Some(b'!' | b'^') => (true, 1),
        _ => (false, 0),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        let &b = class.get(i)?;
        if b == b']' && !first {
            return Some((matched != negated, &class[i + 1..]));
        }
        first = false;
        if class.get(i + 1) == Some(&b'-') && class.get(i + 2).is_some_and(|&e| e != b']') {
            let e = class[i + 2];
            matched |= (b..=e).contains(&c);
            i += 3;
        } else {
            matched |= b == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_shell_rules() {
        assert!(wildcard_match(b"*.conf", b"a.conf"));
        assert!(!wildcard_match(b"*.conf", b"a.conf.bak"));
        assert!(wildcard_match(b"site-?.conf", b"site-1.conf"));
        assert!(wildcard_match(b"[a-c]*", b"b.conf"));
        assert!(!wildcard_match(b"[!a-c]*", b"b.conf"));
        assert!(wildcard_match(b"[]x]", b"]"));
    }
}
