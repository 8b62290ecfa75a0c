//! A parser for nginx configuration files: the same tokens as nginx's own
//! reader (words, quoted strings with escapes, `#` comments, `;`, `{`, `}`,
//! `${variables}` kept as text), a tree of directives that remembers the
//! file and line of each, and `include` expanded in place.
//!
//! An `include` whose file cannot be read is recorded in [`Parsed::missing`]
//! rather than failing the parse, so a config copied without its system
//! includes (`/etc/nginx/mime.types`) can still be imported; the importer
//! reports it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod include;
mod lexer;

use lexer::{Lexer, Token};

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

    /// The directive as it would be written, without its block or `;`, on
    /// one line: `location ^~ /static/`.
    pub fn text(&self) -> String {
        let mut out = self.name.clone();
        for a in &self.args {
            out.push(' ');
            let plain = !a.text.is_empty() && !a.text.chars().any(|c| c.is_whitespace() || "\"';{}#".contains(c));
            if plain && !a.quoted {
                out.push_str(&a.text);
            } else {
                out.push('"');
                // nginx's escapes, so the text stays on one line and reads back the same.
                for c in a.text.chars() {
                    match c {
                        '"' | '\\' => {
                            out.push('\\');
                            out.push(c);
                        }
                        '\n' => out.push_str("\\n"),
                        '\t' => out.push_str("\\t"),
                        '\r' => out.push_str("\\r"),
                        c => out.push(c),
                    }
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
}
