//! What parity never stores or serves in clear.
//!
//! A difference's values are replaced by [`REDACTED`] when any segment of its
//! path (a JSON key, or the header name) names a secret, or when a value
//! looks like a credential whatever its key. Parts of a path that look like
//! credentials (an object keyed by API keys) are replaced in the path too.
//!
//! Names are compared normalised: lower case, without `-`, `_`, `.` or
//! spaces, so `api-key`, `API_KEY` and `apiKey` are all `apikey`.

use std::sync::LazyLock;

use regex::Regex;

use super::{Difference, Kind};

/// What stands for a hidden value.
pub const REDACTED: &str = "[redacted]";

/// A segment that contains one of these names a secret: `access_token`,
/// `password_hash`, `x-api-key`, `stripe_secret`, `session_id`,
/// `secret_key`…
pub const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "privkey",
    "accesskey",
    "signingkey",
    "encryptionkey",
    "masterkey",
    "authkey",
    "authorization",
    "bearer",
    "cookie",
    "session",
    "csrf",
    "xsrf",
    "credential",
    "signature",
    "cardnumber",
    "creditcard",
    "accountnumber",
    "securitycode",
];

/// Short or ambiguous names, secret only as a whole segment: `key` but not
/// `monkey`, `pin` but not `pinned`, `auth` but not `author`.
pub const SECRET_SEGMENTS: &[&str] = &[
    "key", "auth", "pwd", "pass", "pin", "otp", "totp", "hotp", "mfa", "ssn", "cvv", "cvv2", "cvc", "cvc2", "iban", "hash", "salt", "jwt",
];

/// Values that look like credentials, whatever their key. Not long random
/// strings in general: UUIDs and content hashes would be hidden too.
static CREDENTIAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        // An HTTP credential, with a digit or long enough not to be prose
        // ("the bearer of bad news", "basic information").
        r"(?i:\b(?:bearer|basic)\s+(?:[a-z._~+/-]*[0-9][a-z0-9._~+/-]*|[a-z._~+/-]{20,}))",
        // A JWT: a base64url JSON header (`{"` is `eyJ`), a dot, more.
        r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{2,}",
        // Vendors' key prefixes, spelled as the vendors spell them.
        r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{6,}",
        r"|whsec_[A-Za-z0-9]{6,}",
        r"|gh[pousr]_[A-Za-z0-9]{10,}",
        r"|github_pat_[A-Za-z0-9_]{10,}",
        r"|glpat-[A-Za-z0-9_-]{10,}",
        r"|xox[baprs]-[A-Za-z0-9-]{6,}",
        r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        r"|AIza[0-9A-Za-z_-]{20,}",
        r"|(?i:-----begin [a-z ]*private key)",
    ))
    .expect("the credential patterns are valid")
});

/// Hides secrets in differences, with the route's own `redact` names added
/// to the built-in ones. Compiled once, when the config is loaded.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Normalised `redact` names, matched as whole segments.
    names: Vec<String>,
}

impl Redactor {
    /// The built-in rules plus `names`; a name with nothing left once
    /// normalised is an error.
    pub fn new(names: &[String]) -> Result<Redactor, String> {
        LazyLock::force(&CREDENTIAL);
        let mut normalised = Vec::with_capacity(names.len());
        for name in names {
            let n = normalise(name);
            if n.is_empty() {
                return Err(format!("redact name {name:?} has no letter or digit"));
            }
            normalised.push(n);
        }
        Ok(Redactor { names: normalised })
    }

    /// Whether a path (JSON pointer or header name) has a segment naming a secret.
    pub fn secret_path(&self, path: &str) -> bool {
        path.split('/')
            // Array elements (`*`, or indices in an unwrap pointer) name nothing.
            .filter(|s| !s.is_empty() && *s != "*" && !s.bytes().all(|b| b.is_ascii_digit()))
            .any(|segment| {
                let s = normalise(segment);
                SECRET_WORDS.iter().any(|w| s.contains(w)) || SECRET_SEGMENTS.contains(&s.as_str()) || self.names.contains(&s)
            })
    }

    /// Whether a value looks like a credential.
    pub fn credential(text: &str) -> bool {
        CREDENTIAL.is_match(text)
    }

    /// `text` with whatever looks like a credential replaced.
    pub fn hide_credentials(text: &str) -> String {
        Redactor::hide_credentials_in(text.to_string())
    }

    /// [`Redactor::hide_credentials`], keeping `text` itself when it holds none.
    pub fn hide_credentials_in(text: String) -> String {
        match CREDENTIAL.replace_all(&text, REDACTED) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(hidden) => hidden,
        }
    }

    /// The difference as it may be stored and shown.
    pub fn redact(&self, mut d: Difference) -> Difference {
        let secret = self.secret_path(&d.path);
        let hide = |side: &mut String| {
            if secret || Redactor::credential(side) {
                *side = REDACTED.to_string();
            }
        };
        // Shape differences show types (`string`, `absent`), never values;
        // their example values are hidden like values, but for `absent`
        // (a value is JSON text: a string is quoted).
        if d.kind != Kind::Shape {
            hide(&mut d.left);
            hide(&mut d.right);
        }
        if let Some(values) = &mut d.values {
            values.iter_mut().filter(|v| v.as_str() != "absent").for_each(hide);
        }
        if Redactor::credential(&d.path) {
            d.path = Redactor::hide_credentials(&d.path);
        }
        d
    }
}

/// Lower case, without the separators names are spelled with.
fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(path: &str, left: &str, right: &str) -> Difference {
        Difference::new(Kind::Value, path, left.into(), right.into())
    }

    #[test]
    fn any_segment_naming_a_secret_hides_the_values() {
        let redactor = Redactor::default();
        for path in [
            "/tokens/*",
            "/secrets/stripe",
            "/user/password_hash/value",
            "/api-key",
            "/API_KEY",
            "/apiKey",
            "/session/key",
            "/private_key",
            "/card_number",
            "/otp",
            "/user/auth_token",
            "/passwd",
            "/data/0/credentials/aws",
            "/csrfmiddlewaretoken",
            "/X-Xsrf-Token",
            "/mfa",
            "/pin",
            "/ssn",
            "/cvv",
            "/iban",
            "/account_number",
            "/signature",
            "/credit_card/number",
            "/sessionid",
            "/secret_key",
            "/aws_access_key_id",
            "set-cookie",
            "authorization",
            "x-api-key",
        ] {
            let d = redactor.redact(value(path, "\"left-value\"", "\"right-value\""));
            assert_eq!((d.left.as_str(), d.right.as_str()), (REDACTED, REDACTED), "{path}");
            assert_eq!(d.path, path, "the path itself is kept");
        }
    }

    #[test]
    fn ordinary_names_keep_their_values() {
        let redactor = Redactor::default();
        for path in [
            "/monkey",
            "/author",
            "/keyboard/layout",
            "/pinned",
            "/hotkey",
            "/user/email",
            "/results/*/id",
            "/notes",
            "/total",
            "content-type",
            "",
        ] {
            let d = redactor.redact(value(path, "\"left-value\"", "\"right-value\""));
            assert_eq!(d.left, "\"left-value\"", "{path}");
        }
    }

    #[test]
    fn configured_names_are_normalised_and_match_whole_segments() {
        let redactor = Redactor::new(&["E-Mail".into(), "date_of_birth".into()]).unwrap();
        for path in ["/user/email", "/user/EMAIL", "/dateOfBirth", "/date-of-birth/*"] {
            assert_eq!(redactor.redact(value(path, "1", "2")).left, REDACTED, "{path}");
        }
        assert_eq!(redactor.redact(value("/email_verified", "1", "2")).left, "1");
        assert!(Redactor::new(&["--".into()]).is_err());
    }

    #[test]
    fn credential_looking_values_are_hidden_under_any_name() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        for secret in [
            "\"Bearer abcdef123456\"",
            "bearer abcdef123456",
            "\"Basic dXNlcjpwYXNzd29yZA==\"",
            &format!("\"{jwt}\""),
            // Cut where samples cut values.
            &super::super::truncate(&format!("\"{jwt}\""), 80),
            "\"sk_live_4eC39HqLyjWDarjtT1zdp7dc\"",
            "\"sk_test_4eC39HqLyjWDarjtT1zdp7dc\"",
            "\"rk_live_4eC39HqLyjWDarjtT1zdp7dc\"",
            "\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
            "\"ghp_16C7e42F292c6912E7710c838347Ae178B4a\"",
            "\"gho_16C7e42F292c6912E7710c838347Ae178B4a\"",
            "\"github_pat_11ABCDEFG0123456789_abcdefghijkl\"",
            "\"glpat-xxxxxxxxxxxxxxxxxxxx\"",
            "\"xoxb-123456789012-abcdefghijkl\"",
            "\"xoxp-123456789012-abcdefghijkl\"",
            "\"AKIAIOSFODNN7EXAMPLE\"",
            "\"AIzaSyA-1234567890abcdefghijklmnopqrs\"",
            "\"-----BEGIN RSA PRIVATE KEY-----\\nMIIEow…\"",
            "\"-----BEGIN PRIVATE KEY-----\"",
            "\"-----BEGIN OPENSSH PRIVATE KEY-----\"",
        ] {
            let d = Redactor::default().redact(value("/notes", secret, "\"plain\""));
            assert_eq!(d.left, REDACTED, "{secret}");
            assert_eq!(d.right, "\"plain\"", "only the side that looks like a credential");
        }
    }

    #[test]
    fn ordinary_values_are_kept() {
        for plain in [
            "\"3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b\"",
            "\"d41d8cd98f00b204e9800998ecf8427e\"",
            "\"da39a3ee5e6b4b0d3255bfef95601890afd80709\"",
            "\"2026-11-22T10:00:00Z\"",
            "\"hello world\"",
            "\"skeleton_key\"",
            "\"the bearer of bad news\"",
            "\"basic information for beginners\"",
            "\"Eyjafjallajokull.is\"",
            "12345",
            "\"-----BEGIN CERTIFICATE-----\"",
            "\"-----BEGIN PUBLIC KEY-----\"",
        ] {
            let d = Redactor::default().redact(value("/notes", plain, plain));
            assert_eq!(d.left, plain, "{plain}");
        }
    }

    #[test]
    fn shape_differences_show_types_and_paths_lose_credentials() {
        let shape = Difference::new(Kind::Shape, "/password", "string".into(), "absent".into());
        assert_eq!(Redactor::default().redact(shape.clone()), shape);
        let with_values = Difference {
            values: Some(Box::new(["\"hunter2\"".into(), "absent".into()])),
            ..shape
        };
        assert_eq!(Redactor::default().redact(with_values).example_values(), [REDACTED, "absent"]);
        let keyed = Redactor::default().redact(value("/keys/sk_live_4eC39HqLyjWDarjtT1zdp7dc/label", "\"a\"", "\"b\""));
        assert_eq!(keyed.path, "/keys/[redacted]/label");
    }
}
