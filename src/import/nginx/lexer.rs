//! nginx's tokens: words, quoted strings with escapes, `#` comments, `;`,
//! `{`, `}`, with `${variables}` kept as text inside words.

use std::path::Path;
use std::sync::Arc;

use super::{Arg, ParseError, Pos};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token {
    Word(Arg),
    Semicolon,
    Open,
    Close,
    Eof,
}

/// Splits config text into tokens as `ngx_conf_read_token` does.
pub(super) struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    pub(super) file: Arc<Path>,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(file: Arc<Path>, text: &'a str) -> Self {
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
    pub(super) fn next_token(&mut self) -> Result<(Token, usize), ParseError> {
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
