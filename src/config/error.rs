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
