//! A parser for nginx configuration files: the same tokens as nginx's own
//! reader (words, quoted strings with escapes, `#` comments, `;`, `{`, `}`,
//! `${variables}` kept as text), a tree of directives that remembers the
//! file and line of each, and `include` expanded in place.
//!
//! Relative `include` paths are resolved the way nginx resolves them: against
//! the folder of the main config file (nginx's "conf prefix"), not of the
//! file that contains the `include`. When nothing is found there, the
//! including file's own folder is tried as well, so snippets written for
//! either convention are found. Patterns (`*`, `?`, `[...]`) are expanded
//! like glob(3) without flags — `*` does not match a leading dot — and sorted;
//! a pattern that matches nothing is not an error, as in nginx. A plain path
//! that cannot be read is recorded in [`Parsed::missing`] rather than failing
//! the parse, so a config copied without its system includes
//! (`/etc/nginx/mime.types`) can still be imported; the importer reports it.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Includes nested deeper than this are reported as a loop.
const MAX_INCLUDE_DEPTH: usize = 32;

/// Where a directive starts: a file and a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pos {
    pub file: Arc<Path>,
    pub line: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One argument of a directive, with its escapes resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub text: String,
    /// Written in single or double quotes.
    pub quoted: bool,
}

/// A directive: `name arg...;` or `name arg... { children }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<Arg>,
    pub at: Pos,
    /// The children of a block directive; `None` for a simple one.
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    /// The argument texts.
    pub fn arg_texts(&self) -> Vec<&str> {
        self.args.iter().map(|a| a.text.as_str()).collect()
    }

    pub fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(|a| a.text.as_str())
    }

    /// The children of a block, or nothing.
    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or_default()
    }

    /// The directive as it would be written, without its block or `;`:
    /// `location ^~ /static/`.
    pub fn text(&self) -> String {
        let mut out = self.name.clone();
        for a in &self.args {
            out.push(' ');
            let plain = !a.text.is_empty() && !a.text.chars().any(|c| c.is_whitespace() || "\"';{}#".contains(c));
            if plain && !a.quoted {
                out.push_str(&a.text);
            } else {
                out.push('"');
                for c in a.text.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
        out
    }
}

/// An `include` whose file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingInclude {
    /// The `include` directive.
    pub at: Pos,
    pub path: PathBuf,
    pub error: String,
}

/// A parsed configuration: the main file's directives with includes expanded.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub directives: Vec<Directive>,
    /// Every file read, the main file first.
    pub files: Vec<PathBuf>,
    pub missing: Vec<MissingInclude>,
}

/// Why a configuration could not be parsed, with the position of the fault.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{at}: unexpected \"{found}\"")]
    Unexpected { at: Pos, found: char },
    #[error("{at}: unexpected end of file, expecting {expected}")]
    UnexpectedEof { at: Pos, expected: &'static str },
    #[error("{at}: unterminated quoted string")]
    UnterminatedQuote { at: Pos },
    #[error("{at}: invalid number of arguments in \"include\" directive")]
    IncludeArgs { at: Pos },
    #[error("{at}: includes nested more than {MAX_INCLUDE_DEPTH} deep (does a file include itself?)")]
    IncludeDepth { at: Pos },
}

impl ParseError {
    /// The position of the fault, when it has one.
    pub fn pos(&self) -> Option<&Pos> {
        match self {
            ParseError::Read { .. } => None,
            ParseError::Unexpected { at, .. }
            | ParseError::UnexpectedEof { at, .. }
            | ParseError::UnterminatedQuote { at }
            | ParseError::IncludeArgs { at }
            | ParseError::IncludeDepth { at } => Some(at),
        }
    }
}

/// Reads and parses `path` and everything it includes.
pub fn parse_file(path: &Path) -> Result<Parsed, ParseError> {
    let text = std::fs::read_to_string(path).map_err(|source| ParseError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(path, &text)
}

/// Parses `text` as if read from `path`; includes are read from disk,
/// relative to `path`'s folder.
pub fn parse_str(path: &Path, text: &str) -> Result<Parsed, ParseError> {
    let prefix = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut parser = Parser {
        prefix,
        files: vec![path.to_path_buf()],
        missing: Vec::new(),
    };
    let file: Arc<Path> = Arc::from(path);
    let directives = parser.parse_text(file, text, 0)?;
    Ok(Parsed {
        directives,
        files: parser.files,
        missing: parser.missing,
    })
}

// ---------------------------------------------------------------- tokens

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(Arg),
    Semicolon,
    Open,
    Close,
    Eof,
}

/// Splits config text into tokens as `ngx_conf_read_token` does.
struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    file: Arc<Path>,
}

impl<'a> Lexer<'a> {
    fn new(file: Arc<Path>, text: &'a str) -> Self {
        Lexer {
            chars: text.chars().peekable(),
            line: 1,
            file,
        }
    }

    fn pos(&self) -> Pos {
        Pos {
            file: self.file.clone(),
            line: self.line,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// The next token and the line it starts on.
    fn next_token(&mut self) -> Result<(Token, usize), ParseError> {
        loop {
            match self.chars.peek() {
                None => return Ok((Token::Eof, self.line)),
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('#') => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                Some(_) => break,
            }
        }
        let line = self.line;
        let c = self.bump().expect("peeked");
        let token = match c {
            ';' => Token::Semicolon,
            '{' => Token::Open,
            '}' => Token::Close,
            '"' | '\'' => Token::Word(self.quoted(c, line)?),
            _ => Token::Word(self.word(c)),
        };
        Ok((token, line))
    }

    /// A quoted string; the opening quote is consumed.
    fn quoted(&mut self, quote: char, line: usize) -> Result<Arg, ParseError> {
        let mut text = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(ParseError::UnterminatedQuote {
                        at: Pos {
                            file: self.file.clone(),
                            line,
                        },
                    });
                }
                Some('\\') => match self.bump() {
                    Some(e) => push_escape(&mut text, e),
                    None => continue,
                },
                Some(c) if c == quote => break,
                Some(c) => text.push(c),
            }
        }
        // nginx wants a separator after a closing quote.
        match self.chars.peek() {
            None => {}
            Some(c) if c.is_whitespace() || *c == ';' || *c == '{' => {}
            Some(&c) => return Err(ParseError::Unexpected { at: self.pos(), found: c }),
        }
        Ok(Arg { text, quoted: true })
    }

    /// An unquoted word starting with `first`. It ends at whitespace, `;`
    /// or `{` — but `{` right after `$` opens a `${variable}`, and `}` is an
    /// ordinary character inside a word, as in nginx.
    fn word(&mut self, first: char) -> Arg {
        let mut text = String::new();
        let mut prev: Option<char>;
        let mut c = first;
        loop {
            if c == '\\' {
                match self.bump() {
                    Some(e) => push_escape(&mut text, e),
                    None => text.push('\\'),
                }
                prev = None;
            } else {
                text.push(c);
                prev = Some(c);
            }
            match self.chars.peek() {
                None => break,
                Some(&n) if n.is_whitespace() || n == ';' => break,
                Some('{') if prev != Some('$') => break,
                Some(_) => c = self.bump().expect("peeked"),
            }
        }
        Arg { text, quoted: false }
    }
}

/// nginx's escapes: `\"`, `\'`, `\\`, `\t`, `\r`, `\n`; any other escaped
/// character keeps its backslash (so `\.` in a regex stays `\.`).
fn push_escape(out: &mut String, c: char) {
    match c {
        '"' | '\'' | '\\' => out.push(c),
        't' => out.push('\t'),
        'r' => out.push('\r'),
        'n' => out.push('\n'),
        c => {
            out.push('\\');
            out.push(c);
        }
    }
}

// ---------------------------------------------------------------- the tree

struct Parser {
    /// The main file's folder: where nginx resolves relative includes.
    prefix: PathBuf,
    files: Vec<PathBuf>,
    missing: Vec<MissingInclude>,
}

impl Parser {
    fn parse_text(&mut self, file: Arc<Path>, text: &str, depth: usize) -> Result<Vec<Directive>, ParseError> {
        let mut lexer = Lexer::new(file, text);
        self.block(&mut lexer, false, depth)
    }

    /// Directives up to the end of the file or, `inside` a block, its `}`.
    fn block(&mut self, lx: &mut Lexer<'_>, inside: bool, depth: usize) -> Result<Vec<Directive>, ParseError> {
        let mut out = Vec::new();
        loop {
            let mut words: Vec<Arg> = Vec::new();
            let mut start_line = 0;
            let (end, end_line) = loop {
                let (token, line) = lx.next_token()?;
                match token {
                    Token::Word(w) => {
                        if words.is_empty() {
                            start_line = line;
                        }
                        words.push(w);
                    }
                    other => break (other, line),
                }
            };
            let at_end = Pos {
                file: lx.file.clone(),
                line: end_line,
            };
            let at = Pos {
                file: lx.file.clone(),
                line: start_line,
            };
            match end {
                Token::Semicolon | Token::Open if words.is_empty() => {
                    let found = if end == Token::Semicolon { ';' } else { '{' };
                    return Err(ParseError::Unexpected { at: at_end, found });
                }
                Token::Semicolon => {
                    let name = words.remove(0).text;
                    if name == "include" {
                        self.include(&at, &words, &lx.file, depth, &mut out)?;
                    } else {
                        out.push(Directive {
                            name,
                            args: words,
                            at,
                            block: None,
                        });
                    }
                }
                Token::Open => {
                    let name = words.remove(0).text;
                    let children = self.block(lx, true, depth)?;
                    out.push(Directive {
                        name,
                        args: words,
                        at,
                        block: Some(children),
                    });
                }
                Token::Close => {
                    if !words.is_empty() || !inside {
                        return Err(ParseError::Unexpected { at: at_end, found: '}' });
                    }
                    return Ok(out);
                }
                Token::Eof => {
                    if !words.is_empty() {
                        return Err(ParseError::UnexpectedEof {
                            at: at_end,
                            expected: "\";\" or \"}\"",
                        });
                    }
                    if inside {
                        return Err(ParseError::UnexpectedEof {
                            at: at_end,
                            expected: "\"}\"",
                        });
                    }
                    return Ok(out);
                }
                Token::Word(_) => unreachable!("words are collected above"),
            }
        }
    }

    /// Expands `include PATTERN;` into `out`.
    fn include(&mut self, at: &Pos, args: &[Arg], from: &Path, depth: usize, out: &mut Vec<Directive>) -> Result<(), ParseError> {
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

// ---------------------------------------------------------------- globbing

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
