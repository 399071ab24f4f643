//! The one error type of the config layer, apart from the structs so that the TOML reader
//! (`section`) and the actions' config can name it without importing the whole config.

use std::path::PathBuf;

/// The config was refused. The caller should print it and exit 78 (EX_CONFIG): retrying
/// with the same file cannot succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line of the offending key or value, when it is in the file.
    pub line: Option<usize>,
    /// Dotted key path (`gateway.urls`), when one key is at fault.
    pub key: Option<String>,
    pub problem: String,
    pub fix: String,
}

impl ConfigError {
    fn render(&self) -> String {
        let mut s = format!("config error in {}", self.file.display());
        if let Some(line) = self.line {
            s.push_str(&format!(", line {line}"));
        }
        if let Some(key) = &self.key {
            s.push_str(&format!(", key `{key}`"));
        }
        format!("{s}: {}. Fix: {}", self.problem, self.fix)
    }
}

/// A value from the config file or the environment as a refusal quotes it: in double
/// quotes, its control characters escaped (`\x1b`, `\n`) and cut at 200 characters with
/// `…`, so that neither `check`'s terminal nor the journal gets an escape sequence, and a
/// value of a megabyte does not make a line of a megabyte.
pub(crate) fn quoted(value: &str) -> String {
    format!("\"{}\"", crate::protocol::escape::escape(value))
}

/// Every refusal found in one reading of the config (at least one), in the order the file
/// is read: an operator fixing a fleet's config sees all its mistakes in one `check`, each
/// on its own line naming the file, line, key and fix. The caller should print them and
/// exit 78 (EX_CONFIG), or, on a reload, log them and keep the running config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// The first refusal (the one nearest the top of the file's reading).
    pub fn first(&self) -> &ConfigError {
        &self.0[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    #[allow(clippy::len_without_is_empty)] // never empty
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// Collects refusals while a config is read, so reading goes on past the first one.
#[derive(Debug, Default)]
pub(crate) struct Found(Vec<ConfigError>);

impl Found {
    /// The value, or `None` with its refusals kept.
    pub(crate) fn ok<T, E: Into<ConfigErrors>>(&mut self, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.extend(e.into().0);
                None
            }
        }
    }

    pub(crate) fn push(&mut self, e: ConfigError) {
        self.0.push(e);
    }

    /// `value` when nothing was refused; every refusal otherwise.
    pub(crate) fn finish<T>(self, value: Option<T>, file: &std::path::Path) -> Result<T, ConfigErrors> {
        match (self.0.is_empty(), value) {
            (true, Some(v)) => Ok(v),
            (false, _) => Err(ConfigErrors(self.0)),
            // A reader gave neither a value nor a refusal: a bug, but still a refusal.
            (true, None) => Err(ConfigErrors(vec![ConfigError {
                file: file.to_path_buf(),
                line: None,
                key: None,
                problem: "the config could not be read (internal error)".into(),
                fix: "report this with the config file".into(),
            }])),
        }
    }
}
