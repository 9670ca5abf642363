//! librdkafka properties from a file (`-F FILE`, `--client-config FILE`, as kcat's
//! `-F`), so that secrets stay out of the command line and the process list; and
//! the masking of secret values wherever client settings are shown.
//!
//! The format is the simple part of Java's `.properties`: one `key=value` a line,
//! blank lines and lines starting with `#` or `!` ignored, whitespace around the
//! key and before the value trimmed. Values are taken as written: no escapes, no
//! line continuations (a line ending in `\` is refused rather than misread).

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The properties of one file, in order, each with its line number.
#[derive(Clone, PartialEq, Eq)]
pub struct PropertiesFile {
    pub path: PathBuf,
    pub entries: Vec<(String, String, usize)>,
}

#[derive(Debug, Error)]
pub enum PropertiesError {
    #[error("cannot read the client config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {what}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        what: String,
    },
}

impl PropertiesFile {
    pub fn read(path: &Path) -> Result<PropertiesFile, PropertiesError> {
        let text = std::fs::read(path).map_err(|source| PropertiesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &[u8]) -> Result<PropertiesFile, PropertiesError> {
        let error = |line: usize, what: String| PropertiesError::Line {
            path: path.to_path_buf(),
            line,
            what,
        };
        let text = std::str::from_utf8(text).map_err(|e| {
            let line = 1 + text[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            error(line, "not valid UTF-8".into())
        })?;
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                // The line may hold a secret: name it by its number only.
                return Err(error(n, "expected KEY=VALUE".into()));
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(error(n, "empty key before '='".into()));
            }
            if value.ends_with('\\') {
                return Err(error(
                    n,
                    format!(
                        "the value of {key} ends with '\\': line continuations are not supported"
                    ),
                ));
            }
            entries.push((key.to_string(), value.trim_start().to_string(), n));
        }
        Ok(PropertiesFile {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The last value the file gives `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.as_str())
    }
}

impl std::fmt::Debug for PropertiesFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PropertiesFile")
            .field("path", &self.path)
            .field(
                "entries",
                &self
                    .entries
                    .iter()
                    .map(|(k, v, n)| (k.as_str(), masked(k, v), *n))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Whether a librdkafka property holds a secret: passwords, client secrets,
/// private keys given inline, SASL/OAuth configs that embed credentials.
/// Errs on the side of masking.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "key.pem",
        "ssl_key",
        "oauthbearer.config",
        "jaas",
        "token",
        "credentials",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// The value as it may be shown: secrets as `[masked]`.
pub fn masked<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret(key) { "[masked]" } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PropertiesFile, PropertiesError> {
        PropertiesFile::parse(Path::new("client.properties"), text.as_bytes())
    }

    #[test]
    fn key_value_lines_comments_and_blanks() {
        let f = parse(
            "# Confluent Cloud\n\nbootstrap.servers=pkc-1.example:9092\n  security.protocol = SASL_SSL\n\
             ! also a comment\nsasl.password=a=b c \r\nempty.value=\n",
        )
        .unwrap();
        let got: Vec<(&str, &str, usize)> = f
            .entries
            .iter()
            .map(|(k, v, n)| (k.as_str(), v.as_str(), *n))
            .collect();
        assert_eq!(
            got,
            [
                ("bootstrap.servers", "pkc-1.example:9092", 3),
                ("security.protocol", "SASL_SSL", 4),
                // Only the first '=' splits; the value keeps everything after it.
                ("sasl.password", "a=b c", 6),
                ("empty.value", "", 7),
            ]
        );
        assert_eq!(f.get("security.protocol"), Some("SASL_SSL"));
    }

    #[test]
    fn errors_name_the_file_and_line_but_never_the_value() {
        let e = parse("a=1\nsasl.password hunter2\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "client.properties:2: expected KEY=VALUE");
        let e = parse("a=1\n\n =x\n").unwrap_err().to_string();
        assert_eq!(e, "client.properties:3: empty key before '='");
        let e = parse("sasl.password=abc\\\n").unwrap_err().to_string();
        assert!(e.starts_with("client.properties:1: "), "{e}");
        assert!(!e.contains("abc"), "{e}");
        let e = PropertiesFile::read(Path::new("/no/such/client.properties"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/no/such/client.properties"), "{e}");
    }

    #[test]
    fn secrets_are_masked() {
        for k in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
            "sasl.jaas.config",
        ] {
            assert_eq!(masked(k, "hunter2"), "[masked]", "{k}");
        }
        assert_eq!(masked("sasl.username", "me"), "me");
        assert_eq!(masked("bootstrap.servers", "b:9092"), "b:9092");
        let f = parse("sasl.password=hunter2\n").unwrap();
        assert!(!format!("{f:?}").contains("hunter2"));
    }
}
