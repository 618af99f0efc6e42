//! The xl.cfg parser, for the subset of keys this toolstack supports.
//!
//! SKELETON: signatures are stable; bodies land in the next commit.

use std::path::Path;

use super::{CfgValue, DomainConfig};

/// A position in a source: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1, in characters.
    pub column: u32,
}

/// One parsed setting: its final value after `+=` concatenation, and where it was last set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The value.
    pub value: CfgValue,
    /// The source that last set it (a file name, or "command line").
    pub source: String,
    /// Where its value starts.
    pub pos: Pos,
    /// Whether the last assignment was `+=`.
    pub appended: bool,
}

/// A parse or interpretation error: `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{}{message}", pos.map(|p| format!("{}:{}: ", p.line, p.column)).unwrap_or_else(|| " ".into()))]
pub struct Error {
    /// The file name (or "command line").
    pub source_name: String,
    /// Where, when the error is at a place.
    pub pos: Option<Pos>,
    /// What was wrong and what was expected.
    pub message: String,
}

/// A warning (an unknown key, say): `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file name (or "command line").
    pub source_name: String,
    /// Where.
    pub pos: Pos,
    /// What.
    pub message: String,
}

/// A parsed xl.cfg: the settings by key, in first-assignment order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XlConfig {
    settings: Vec<(String, Setting)>,
}

impl XlConfig {
    /// Parses `text`, naming it `source_name` in errors.
    ///
    /// # Errors
    ///
    /// The first syntax error.
    pub fn parse(source_name: &str, text: &[u8]) -> Result<XlConfig, Error> {
        let _ = (source_name, text);
        todo!()
    }

    /// Applies command-line overrides, as `xl create cfg 'name="x"' 'memory=256'` does.
    ///
    /// # Errors
    ///
    /// The first syntax error, located in "command line".
    pub fn apply_override(&mut self, line: &str) -> Result<(), Error> {
        let _ = line;
        todo!()
    }

    /// The setting for `key`.
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|(k, _)| k == key).map(|(_, s)| s)
    }

    /// Interprets the settings into a [`DomainConfig`], with warnings for unknown keys.
    ///
    /// # Errors
    ///
    /// The first bad value or failed validation.
    pub fn to_domain_config(&self) -> Result<(DomainConfig, Vec<Warning>), Error> {
        todo!()
    }
}

/// Reads and parses `path`, applies `overrides`, and interprets the result.
///
/// # Errors
///
/// As [`XlConfig::parse`] and [`XlConfig::to_domain_config`], or an unreadable file.
pub fn load(path: &Path, overrides: &[&str]) -> Result<(DomainConfig, Vec<Warning>), Error> {
    let _ = (path, overrides);
    todo!()
}

/// Renders `config` as xl.cfg text that parses back to it.
pub fn render(config: &DomainConfig) -> String {
    let _ = config;
    todo!()
}
