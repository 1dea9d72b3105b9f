//! The toolkit every settings parser uses: a TOML table read with key paths ([`Section`]: a
//! problem names `accounts[1].region`, a key nobody read is reported as unknown), the one secret
//! resolver ([`read_secret`]: an environment variable or a file), the one time-zone parser
//! ([`time_zone`]) and relative paths ([`resolve`]).
//!
//! A leaf: it knows no subsystem. Each subsystem parses its own section with it (`alert::config`,
//! `report::config`, `api::settings`, `config::daemon`), and `config` composes them, so no
//! subsystem imports `config`. Values from the environment come only through [`Env`], which the
//! caller passes in (the binary's `cli` passes the process environment; tests pass a map).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::secret::Secret;

/// Where secrets come from. The binary passes the process environment; tests pass a map.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// A path from the configuration: absolute, or relative to the config file's directory.
pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// An array of tables (`[[alerts.rules]]`), with each item's index.
pub fn table_array<'a>(
    s: &mut Section<'a>,
    k: &str,
    problems: &mut Vec<String>,
) -> Option<Vec<(usize, &'a toml::Table)>> {
    let key = s.key(k);
    match s.take(k)? {
        toml::Value::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_table() {
                    Some(t) => out.push((i, t)),
                    None => problems.push(format!("{key}[{i}]: must be a table ([[{key}]])")),
                }
            }
            Some(out)
        }
        _ => {
            problems.push(format!("{key}: must be an array of tables ([[{key}]])"));
            None
        }
    }
}

/// The `name` key every named item has (`[[accounts]]`, `[[alerts.rules]]`, `[[alerts.sinks]]`):
/// 1 to 64 printable characters.
pub fn required_name(s: &mut Section<'_>, problems: &mut Vec<String>) -> Option<String> {
    match s.string("name", problems) {
        None => {
            if !s.has("name") {
                problems.push(format!("{}: missing", s.key("name")));
            }
            None
        }
        Some(n) if n.is_empty() || n.len() > 64 || n.chars().any(|c| c.is_control()) => {
            problems.push(format!(
                "{}: {n:?} must be 1 to 64 printable characters",
                s.key("name")
            ));
            None
        }
        Some(n) => Some(n),
    }
}

/// A secret named by `<prefix>_env` or `<prefix>_file` (one of the two).
pub fn secret_from(
    s: &mut Section<'_>,
    prefix: &str,
    base_dir: &Path,
    env: &dyn Env,
    problems: &mut Vec<String>,
) -> Option<Secret> {
    let env_key = format!("{prefix}_env");
    let file_key = format!("{prefix}_file");
    let var = s.string(&env_key, problems);
    let file = s.string(&file_key, problems);
    match (var, file) {
        (Some(_), Some(_)) => {
            problems.push(format!("{}: set only one of {env_key}, {file_key}", s.path));
            None
        }
        (Some(var), None) => read_secret(
            &s.key(&env_key),
            SecretSource::Env(&var),
            base_dir,
            env,
            problems,
        ),
        (None, Some(file)) => read_secret(
            &s.key(&file_key),
            SecretSource::File(&file),
            base_dir,
            env,
            problems,
        ),
        (None, None) => None,
    }
}

/// A TOML table being read: remembers which keys were used so leftovers are reported as unknown.
pub struct Section<'a> {
    path: String,
    table: &'a toml::Table,
    used: HashSet<String>,
}

impl<'a> Section<'a> {
    pub fn new(path: String, table: &'a toml::Table) -> Section<'a> {
        Section {
            path,
            table,
            used: HashSet::new(),
        }
    }

    pub fn key(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.path)
        }
    }

    pub fn has(&self, k: &str) -> bool {
        self.table.contains_key(k)
    }

    pub fn take(&mut self, k: &str) -> Option<&'a toml::Value> {
        self.used.insert(k.to_string());
        self.table.get(k)
    }

    pub fn table(&mut self, k: &str, problems: &mut Vec<String>) -> Option<&'a toml::Table> {
        match self.take(k)? {
            toml::Value::Table(t) => Some(t),
            _ => {
                problems.push(format!("{}: must be a table ([{k}])", self.key(k)));
                None
            }
        }
    }

    pub fn string(&mut self, k: &str, problems: &mut Vec<String>) -> Option<String> {
        match self.take(k)? {
            toml::Value::String(s) => Some(s.clone()),
            other => {
                problems.push(format!(
                    "{}: must be a string, found {}",
                    self.key(k),
                    other.type_str()
                ));
                None
            }
        }
    }

    pub fn boolean(&mut self, k: &str, problems: &mut Vec<String>) -> Option<bool> {
        match self.take(k)? {
            toml::Value::Boolean(b) => Some(*b),
            other => {
                problems.push(format!(
                    "{}: must be true or false, found {}",
                    self.key(k),
                    other.type_str()
                ));
                None
            }
        }
    }

    pub fn string_list(&mut self, k: &str, problems: &mut Vec<String>) -> Option<Vec<String>> {
        let key = self.key(k);
        match self.take(k)? {
            toml::Value::Array(items) => {
                let mut out = Vec::new();
                for (i, v) in items.iter().enumerate() {
                    match v.as_str() {
                        Some(s) => out.push(s.to_string()),
                        None => problems.push(format!("{key}[{i}]: must be a string")),
                    }
                }
                Some(out)
            }
            other => {
                problems.push(format!(
                    "{key}: must be an array of strings, found {}",
                    other.type_str()
                ));
                None
            }
        }
    }

    pub fn integer(
        &mut self,
        k: &str,
        min: i64,
        max: i64,
        problems: &mut Vec<String>,
    ) -> Option<i64> {
        let key = self.key(k);
        match self.take(k)? {
            toml::Value::Integer(v) if (min..=max).contains(v) => Some(*v),
            toml::Value::Integer(v) => {
                problems.push(format!("{key}: {v} is out of range ({min} to {max})"));
                None
            }
            other => {
                problems.push(format!(
                    "{key}: must be a whole number, found {}",
                    other.type_str()
                ));
                None
            }
        }
    }

    pub fn finish(self, problems: &mut Vec<String>) {
        let mut unknown: Vec<&String> = self
            .table
            .keys()
            .filter(|k| !self.used.contains(k.as_str()))
            .collect();
        unknown.sort();
        for k in unknown {
            problems.push(format!("{}: unknown key", self.key(k)));
        }
    }
}

/// Where a secret is read from.
#[derive(Debug, Clone, Copy)]
pub enum SecretSource<'a> {
    /// An environment variable, by name.
    Env(&'a str),
    /// A file (relative to the config file's directory), for example a systemd credential.
    File(&'a str),
}

/// The one secret resolver: the value of an environment variable or a file's content, trimmed.
/// `key` is the key path that named it (`accounts[0].api_key_env`); an unset variable, a missing
/// or empty file is a problem naming it, never the value.
pub fn read_secret(
    key: &str,
    source: SecretSource<'_>,
    base_dir: &Path,
    env: &dyn Env,
    problems: &mut Vec<String>,
) -> Option<Secret> {
    match source {
        SecretSource::Env(var) => match env.var(var) {
            Some(v) if !v.trim().is_empty() => Some(Secret::new(v.trim())),
            Some(_) => {
                problems.push(format!("{key}: the environment variable {var} is empty"));
                None
            }
            None => {
                problems.push(format!("{key}: the environment variable {var} is not set"));
                None
            }
        },
        SecretSource::File(file) => {
            let p = resolve(base_dir, file);
            match std::fs::read_to_string(&p) {
                Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim())),
                Ok(_) => {
                    problems.push(format!("{key}: the file {} is empty", p.display()));
                    None
                }
                Err(e) => {
                    problems.push(format!("{key}: cannot read {}: {e}", p.display()));
                    None
                }
            }
        }
    }
}

/// The one time-zone parser: key `k` of `s` as an IANA zone name (`None`: absent or a problem).
pub fn time_zone(
    s: &mut Section<'_>,
    k: &str,
    problems: &mut Vec<String>,
) -> Option<chrono_tz::Tz> {
    let name = s.string(k, problems)?;
    match name.parse::<chrono_tz::Tz>() {
        Ok(z) => Some(z),
        Err(_) => {
            problems.push(format!(
                "{}: {name:?} is not an IANA time zone (e.g. \"UTC\", \"Europe/Zurich\")",
                s.key(k)
            ));
            None
        }
    }
}
