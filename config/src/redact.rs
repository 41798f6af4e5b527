//! `trace.redact` compiled: which argument names and which string patterns are secrets. The
//! trace writer applies them (`mesh7_actors::trace::redact`); validation reports what does not
//! compile, each at its own path.

use regex::Regex;

use crate::condition::one_line;
use crate::glob::Glob;
use crate::schema::RedactConfig;

/// The longest pattern accepted, in compiled bytes: a pattern the writer thread can afford on
/// every string of every record.
const MAX_REGEX_BYTES: usize = 1 << 20;

/// `trace.redact`, ready to match.
#[derive(Debug, Clone, Default)]
pub struct RedactRules {
    /// Lower-cased patterns, matched against lower-cased names.
    keys: Vec<Glob>,
    values: Vec<Regex>,
}

/// What does not compile: the list (`keys` or `values`), the index in it, and why.
pub type RedactError = (&'static str, usize, String);

impl RedactRules {
    /// Compiles every pattern, or names each one that is wrong: an empty or malformed glob, a
    /// regular expression that does not parse or that matches the empty string (it would match
    /// between every two characters).
    pub fn compile(cfg: &RedactConfig) -> Result<RedactRules, Vec<RedactError>> {
        let mut errors = Vec::new();
        let mut keys = Vec::with_capacity(cfg.keys.len());
        for (i, pattern) in cfg.keys.iter().enumerate() {
            let glob = Glob::new(&pattern.to_lowercase());
            if pattern.is_empty() {
                errors.push(("keys", i, "must not be empty".to_owned()));
            } else if !glob.is_valid() {
                errors.push(("keys", i, format!("malformed pattern {pattern:?}")));
            } else {
                keys.push(glob);
            }
        }
        let mut values = Vec::with_capacity(cfg.values.len());
        for (i, pattern) in cfg.values.iter().enumerate() {
            let compiled = regex::RegexBuilder::new(pattern)
                .size_limit(MAX_REGEX_BYTES)
                .build();
            let why = match compiled {
                Ok(re) if !re.is_match("") => {
                    values.push(re);
                    continue;
                }
                Ok(_) => format!("{pattern:?} matches the empty string"),
                Err(e) => format!("invalid regular expression {pattern:?}: {}", one_line(&e)),
            };
            errors.push(("values", i, why));
        }
        if errors.is_empty() {
            Ok(RedactRules { keys, values })
        } else {
            Err(errors)
        }
    }

    /// Nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.values.is_empty()
    }

    /// Whether the value of an argument named `name` is a secret (case ignored).
    pub fn secret_key(&self, name: &str) -> bool {
        if self.keys.is_empty() {
            return false;
        }
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) || !name.is_ascii() {
            lower = name.to_lowercase();
            lower.as_str()
        } else {
            name
        };
        self.keys.iter().any(|glob| glob.matches(name))
    }

    /// The patterns secrets inside strings match.
    pub fn value_patterns(&self) -> &[Regex] {
        &self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(keys: &[&str], values: &[&str]) -> RedactConfig {
        RedactConfig {
            keys: keys.iter().map(|s| (*s).to_owned()).collect(),
            values: values.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn key_patterns_are_globs_that_ignore_case() {
        let rules =
            RedactRules::compile(&cfg(&["*token*", "Password", "api_key"], &[])).expect("compiles");
        for name in [
            "token",
            "X-Auth-Token",
            "refresh_token_v2",
            "PASSWORD",
            "api_key",
        ] {
            assert!(rules.secret_key(name), "{name}");
        }
        for name in ["tok", "passwords", "apikey", "path"] {
            assert!(!rules.secret_key(name), "{name}");
        }
        assert!(!RedactRules::default().secret_key("token"));
    }

    #[test]
    fn every_pattern_that_cannot_work_is_named_with_its_index() {
        let errors = RedactRules::compile(&cfg(&["ok", "", "[z-a"], &["sk-[a-z]+", "(", "x*"]))
            .expect_err("refused");
        let at: Vec<(&str, usize)> = errors.iter().map(|(list, i, _)| (*list, *i)).collect();
        assert_eq!(at, [("keys", 1), ("keys", 2), ("values", 1), ("values", 2)]);
        assert!(errors[0].2.contains("empty"), "{errors:?}");
        assert!(errors[1].2.contains("malformed"), "{errors:?}");
        assert!(
            errors[2].2.starts_with("invalid regular expression"),
            "{errors:?}"
        );
        assert!(
            errors[3].2.contains("matches the empty string"),
            "{errors:?}"
        );
    }
}
