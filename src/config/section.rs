//! A TOML section read key by key, with the spans toml's parser keeps, so that every
//! refusal of the config can name the line, the full key and the fix.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::config::ConfigError;
use crate::config::duration::{format_duration, parse_duration};
use crate::config::error::{Found, quoted};
use crate::config::keys;

pub(crate) struct Doc<'a> {
    pub(crate) file: &'a Path,
    pub(crate) src: &'a str,
    /// Byte offsets of the newlines of `src`, so that finding a key's line is a binary
    /// search: counting newlines from the start for every key made a 1 MiB config of 20 000
    /// `[actions.*]` sections take minutes to read (quadratic in the file's size).
    newlines: Vec<usize>,
}

impl<'a> Doc<'a> {
    pub(crate) fn new(file: &'a Path, src: &'a str) -> Doc<'a> {
        let newlines = src.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i).collect();
        Doc { file, src, newlines }
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        let at = span.start.min(self.src.len());
        self.newlines.partition_point(|&nl| nl < at) + 1
    }

    pub(crate) fn syntax_error(&self, e: &toml::de::Error) -> ConfigError {
        let line = e.span().map(|s| self.line_of(&s));
        if let Some(dup) = e.span().filter(|_| e.message().starts_with("duplicate key")).and_then(|s| self.duplicate(s))
        {
            return ConfigError { file: self.file.to_path_buf(), line, ..dup };
        }
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: None,
            problem: format!("not valid TOML: {}", e.message()),
            fix: "correct the syntax on that line (strings need quotes, sections [brackets])".into(),
        }
    }

    /// toml says only "duplicate key"; its span covers the key's second appearance, so the
    /// message can name the dotted key (or the section given twice).
    fn duplicate(&self, span: Range<usize>) -> Option<ConfigError> {
        let name = self.src.get(span.clone())?.trim().trim_matches(['"', '\'']);
        let line_start = self.src[..span.start].rfind('\n').map_or(0, |i| i + 1);
        let (key, problem, fix) = if self.src[line_start..].trim_start().starts_with('[') {
            let section = self.src[line_start..span.end].trim_start().trim_start_matches('[').trim();
            (
                section.to_string(),
                "this section appears twice".to_string(),
                format!("merge the two [{section}] sections"),
            )
        } else {
            // The section is the last `[header]` above the key.
            let header = self.src[..line_start]
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| l.starts_with('[') && !l.starts_with("[["))
                .map(|l| l.trim_matches(['[', ']']).trim());
            let key = header.map_or(name.to_string(), |h| format!("{h}.{name}"));
            (key, "is set twice".to_string(), format!("keep one of the two `{name} =` lines"))
        };
        Some(ConfigError { file: PathBuf::new(), line: None, key: Some(key), problem, fix })
    }
}

/// Where a key is (file, line, dotted key), kept by the pure parse so that the resolve step,
/// which reads the files the key names, can still say which line to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spot {
    file: PathBuf,
    line: Option<usize>,
    key: Option<String>,
}

impl Spot {
    #[cfg(test)]
    pub(crate) fn for_tests(file: &Path, key: &str) -> Spot {
        Spot { file: file.to_path_buf(), line: None, key: Some(key.to_string()) }
    }

    /// The refusal of this key, as [`Section::err_at`] would have made it.
    pub(crate) fn err(&self, problem: &str, fix: &str) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.line,
            key: self.key.clone(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// One `[section]` of the file (or the top level), read key by key.
pub(crate) struct Section<'a, 'd> {
    doc: &'a Doc<'a>,
    /// Dotted path of the section (`actions.reboot`), empty at the top level.
    name: String,
    table: Option<&'a DeTable<'d>>,
    /// Where the section header is, for errors about keys that are missing.
    header_line: Option<usize>,
}

type Value<'a, 'd> = &'a Spanned<DeValue<'d>>;

impl<'a, 'd> Section<'a, 'd> {
    pub(crate) fn root(doc: &'a Doc<'a>, table: &'a DeTable<'d>) -> Self {
        Section { doc, name: String::new(), table: Some(table), header_line: None }
    }

    fn key_path(&self, key: &str) -> String {
        if self.name.is_empty() { key.to_string() } else { format!("{}.{key}", self.name) }
    }

    /// A map lookup, not a scan: a section of 20 000 `[actions.*]` tables is looked up
    /// once or more per table.
    fn entry(&self, key: &str) -> Option<(Range<usize>, Value<'a, 'd>)> {
        self.table?.get_key_value(key).map(|(k, v)| (k.span(), v))
    }

    /// A sub-table; absent sections are fine (all their keys have defaults or are reported
    /// missing by name).
    pub(crate) fn table(&self, name: &str) -> Result<Section<'a, 'd>, ConfigError> {
        let path = self.key_path(name);
        match self.entry(name) {
            None => Ok(Section { doc: self.doc, name: path, table: None, header_line: None }),
            Some((span, v)) => match v.get_ref() {
                DeValue::Table(t) => Ok(Section {
                    doc: self.doc,
                    name: path,
                    table: Some(t),
                    header_line: Some(self.doc.line_of(&span)),
                }),
                other => Err(self.err_value(
                    name,
                    v,
                    &format!("is a {}, not a section", other.type_str()),
                    &format!("write it as a [{path}] section"),
                )),
            },
        }
    }

    /// The keys of this section in file order (for sections whose keys are names the
    /// operator chooses, such as `[actions.<name>]`).
    pub(crate) fn keys(&self) -> Vec<String> {
        self.table.map_or_else(Vec::new, |t| t.iter().map(|(k, _)| k.get_ref().to_string()).collect())
    }

    /// Whether `key` is a sub-table here (`[actions.reboot]` under `[actions]`).
    pub(crate) fn is_table(&self, key: &str) -> bool {
        matches!(self.entry(key), Some((_, v)) if matches!(v.get_ref(), DeValue::Table(_)))
    }

    /// Refuses every key here that is not in `known`, each with its fix: the section it
    /// belongs to when it is another section's key (`ca_file` under `[device]`: "move it to
    /// [gateway]"), a close known key ("did you mean"), or removal.
    pub(crate) fn deny(&self, known: &[&str], f: &mut Found) {
        let Some(table) = self.table else { return };
        let here = if self.name.is_empty() { "at the top level".to_string() } else { format!("in [{}]", self.name) };
        for (k, _) in table.iter() {
            let key = k.get_ref().as_ref();
            if known.contains(&key) {
                continue;
            }
            let elsewhere = keys::elsewhere(key, &self.name);
            let fix = if !elsewhere.is_empty() {
                format!("move it to {}", elsewhere.join(" or "))
            } else {
                match closest(key, known) {
                    Some(m) => format!("did you mean `{}`? Known keys here: {}", self.key_path(m), known.join(", ")),
                    None => format!("remove it; known keys here: {}", known.join(", ")),
                }
            };
            f.push(ConfigError {
                file: self.doc.file.to_path_buf(),
                line: Some(self.doc.line_of(&k.span())),
                key: Some(self.key_path(key)),
                problem: if elsewhere.is_empty() { "unknown key".into() } else { format!("is not a key {here}") },
                fix,
            });
        }
    }

    fn err_value(&self, key: &str, v: Value, problem: &str, fix: &str) -> ConfigError {
        ConfigError {
            file: self.doc.file.to_path_buf(),
            line: Some(self.doc.line_of(&v.span())),
            key: Some(self.key_path(key)),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// An error about a key that is present in the file.
    pub(crate) fn err_at(&self, key: &str, problem: &str, fix: &str) -> ConfigError {
        match self.entry(key) {
            Some((_, v)) => self.err_value(key, v, problem, fix),
            None => self.err_missing(key, problem, fix),
        }
    }

    /// Where `key` is (its value's line, or the section header when it is absent).
    pub(crate) fn spot(&self, key: &str) -> Spot {
        let e = self.err_at(key, "", "");
        Spot { file: e.file, line: e.line, key: e.key }
    }

    /// An error about a key that is absent: points at the section header if there is one.
    pub(crate) fn err_missing(&self, key: &str, problem: &str, fix: &str) -> ConfigError {
        ConfigError {
            file: self.doc.file.to_path_buf(),
            line: self.header_line,
            key: Some(self.key_path(key)),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    fn wrong_type(&self, key: &str, v: Value, wanted: &str, example: &str) -> ConfigError {
        self.err_value(
            key,
            v,
            &format!("expected {wanted}, found {}", with_article(v.get_ref().type_str())),
            &format!("write it as {} = {example}", key),
        )
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.entry(key) {
            None => Ok(None),
            Some((_, v)) => match v.get_ref() {
                DeValue::String(s) => Ok(Some(s.to_string())),
                _ => Err(self.wrong_type(key, v, "a string", "\"...\"")),
            },
        }
    }

    pub(crate) fn required_str(&self, key: &str, example: &str) -> Result<String, ConfigError> {
        self.str(key)?.ok_or_else(|| {
            self.err_missing(key, "is required and missing", &format!("add `{example}` under [{}]", self.name))
        })
    }

    pub(crate) fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(s) = self.str(key)? else { return Ok(None) };
        if s.is_empty() {
            return Err(self.err_at(key, "is an empty path", "remove the key or give a path"));
        }
        let p = PathBuf::from(s);
        // Relative paths are taken from the config file's folder, so a config and its token
        // can travel together.
        Ok(Some(if p.is_relative() { self.doc.file.parent().unwrap_or(Path::new(".")).join(p) } else { p }))
    }

    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.entry(key) {
            None => Ok(default),
            Some((_, v)) => v.get_ref().as_bool().ok_or_else(|| self.wrong_type(key, v, "true or false", "true")),
        }
    }

    pub(crate) fn int_or(&self, key: &str, default: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
        let Some((_, v)) = self.entry(key) else { return Ok(default) };
        let DeValue::Integer(i) = v.get_ref() else {
            return Err(self.wrong_type(key, v, "an integer", &default.to_string()));
        };
        let n = i64::from_str_radix(i.as_str(), i.radix()).ok().filter(|n| (min..=max).contains(n));
        n.ok_or_else(|| {
            self.err_value(
                key,
                v,
                &format!("{} is out of range", i.as_str()),
                &format!("use a value from {min} to {max}"),
            )
        })
    }

    /// A duration from `min` to `max`; the refusal names the bound that was crossed.
    pub(crate) fn duration_or(
        &self,
        key: &str,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some((_, v)) = self.entry(key) else { return Ok(default) };
        let DeValue::String(s) = v.get_ref() else {
            return Err(self.wrong_type(key, v, "a duration string", &format!("\"{}\"", format_duration(default))));
        };
        let d = parse_duration(s).map_err(|e| {
            self.err_value(
                key,
                v,
                &e.0,
                &format!("write a duration such as \"{}\" or \"500ms\"", format_duration(default)),
            )
        })?;
        if d < min {
            return Err(self.err_value(
                key,
                v,
                &format!("{} is too short", quoted(s)),
                &format!("use at least \"{}\"", format_duration(min)),
            ));
        }
        if d > max {
            return Err(self.err_value(
                key,
                v,
                &format!("{} is too long (the maximum is \"{}\")", quoted(s), format_duration(max)),
                &format!("use at most \"{}\"", format_duration(max)),
            ));
        }
        Ok(d)
    }

    pub(crate) fn str_list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some((_, v)) = self.entry(key) else { return Ok(None) };
        let DeValue::Array(items) = v.get_ref() else {
            return Err(self.wrong_type(key, v, "a list of strings", "[\"...\"]"));
        };
        items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::String(s) => Ok(s.to_string()),
                _ => Err(self.wrong_type(key, item, "a list of strings", "[\"...\"]")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

fn with_article(noun: &str) -> String {
    let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {noun}")
}

/// The known key nearest to a typo, if it is close enough to be what was meant.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_suggestions_only_for_close_names() {
        assert_eq!(closest("intervall", &["interval", "timeout"]), Some("interval"));
        assert_eq!(closest("zzz", &["interval", "timeout"]), None);
    }
}
