//! The xl.cfg parser, for the subset of keys this toolstack supports.
//!
//! (Over 800 lines on purpose: the lexer, the parser and the reading of each key follow one
//! grammar, libxlu's, and their error positions are shared; split apart they would each need
//! the others' types and the reader would lose the grammar's one place. The builder's keys
//! will go to a module of their own.)
//!
//! # Syntax
//!
//! The grammar is libxlu's (xen `tools/libs/util/libxlu_cfg_y.y` and `libxlu_cfg_l.l`):
//!
//! ```text
//! file   := { stmt } [ assignment ]          (the last one may lack its line end)
//! stmt   := assignment end | end
//! end    := NEWLINE | ";"
//! assignment := KEY "=" value | KEY "+=" value
//! value  := STRING | NUMBER | "[" { NEWLINE } [ value { NEWLINE }
//!                   { "," { NEWLINE } value { NEWLINE } } [ "," { NEWLINE } ] ] "]"
//! KEY    := [a-z][._0-9a-z]*
//! NUMBER := [0-9][0-9a-fx]*                  (read as C's strtol base 0: 0x.. hex, 0.. octal)
//! STRING := "..." or '...' on one line, with C escapes (\n \t \" \' \\ \xHH \NNN ...)
//! ```
//!
//! `#` starts a comment to the end of the line. A later assignment replaces an earlier one; `+=`
//! appends to an earlier string or list. Lists may nest and span lines, with a trailing comma.
//! Where we differ from libxlu, we are stricter or fix its bugs, and say so: a `\r` before a
//! line end is taken as white space (libxlu calls it a lexical error); octal escapes are octal
//! (libxlu reads them as decimal); a string may not contain NUL (libxlu truncates it there);
//! lists nest at most [`MAX_NESTING`] deep.
//!
//! # Keys
//!
//! `name` (required), `type` (`pv`, the default, or `pvh`; the deprecated `builder="generic"`
//! means pv), `memory` and `maxmem` (MiB; memory defaults to 32, maxmem to memory), `vcpus`
//! (default 1), `uuid`, `kernel`, `ramdisk`, `extra`, `root`, `cmdline` (which replaces `root`
//! and `extra`, as in xl), `tsc_mode` (`default`, `always_emulate`, `native`, or xl's deprecated
//! numbers 0-2), `disk` and `vif` (lists of specs, see
//! [`DiskSpec`] and [`VifSpec`]), `on_poweroff`, `on_reboot`, `on_crash`,
//! `on_watchdog` (see [`Action`]).
//! Other keys are kept in [`DomainConfig::unknown`] and reported as [`Warning`]s, as xl ignores
//! them.
//!
//! # Errors
//!
//! Every error names the source, line and column, and says what was expected:
//!
//! ```
//! use toolstack::config::xlcfg::XlConfig;
//!
//! let cfg = XlConfig::parse("guest.cfg", b"name = \"g\"\n\nmemory = \"lots\"\n").unwrap();
//! let err = cfg.to_domain_config().unwrap_err();
//! assert_eq!(err.to_string(), r#"guest.cfg:3:10: expected a number for "memory", found "lots""#);
//!
//! let err = XlConfig::parse("guest.cfg", b"name = \"g\"\nvcpus 2\n").unwrap_err();
//! assert_eq!(err.to_string(), r#"guest.cfg:2:7: expected "=" or "+=" after "vcpus", found a number"#);
//! ```
//!
//! # Overrides
//!
//! Like `xl create guest.cfg 'name="x"' 'memory=256'`, settings given on the command line are
//! applied after the file, with the same syntax:
//!
//! ```
//! use toolstack::config::xlcfg::XlConfig;
//!
//! let mut cfg = XlConfig::parse("guest.cfg", b"name = 'g'\nmemory = 128\n").unwrap();
//! cfg.apply_override("memory=256").unwrap();
//! let (dom, warnings) = cfg.to_domain_config().unwrap();
//! assert_eq!(dom.memory_kib, 256 * 1024);
//! assert!(warnings.is_empty());
//! ```

use std::fmt;
use std::path::Path;

use super::{
    Action, CfgValue, DiskSpec, DomainConfig, DomainType, TscMode, Uuid, ValidationError, VifSpec,
};

/// The deepest list nesting accepted.
pub const MAX_NESTING: usize = 32;

/// The source name used for command-line overrides.
pub const COMMAND_LINE: &str = "command line";

/// A position in a source: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1, in characters.
    pub column: u32,
}

/// A place in a named source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    /// The file name, or [`COMMAND_LINE`].
    pub source_name: String,
    /// Where in it.
    pub pos: Pos,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.source_name, self.pos.line, self.pos.column
        )
    }
}

/// One parsed setting: its final value after `+=` concatenation, and where it was last set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The value.
    pub value: CfgValue,
    /// Where the value starts (of the last `=`; of the first of a `+=` chain).
    pub loc: Loc,
    /// For a list, where each item starts.
    pub items: Vec<Loc>,
    /// Whether `+=` was used on it.
    pub appended: bool,
}

/// Why [`load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{}: cannot read the config file", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file (or an override) is not a valid config.
    #[error(transparent)]
    Parse(#[from] Error),
}

/// A parse or interpretation error: `file:line:column: message`, or `file: message` for one
/// that has no place (a missing key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    /// The file name (or [`COMMAND_LINE`]).
    pub source_name: String,
    /// Where, when the error is at a place.
    pub pos: Option<Pos>,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(p) => write!(
                f,
                "{}:{}:{}: {}",
                self.source_name, p.line, p.column, self.message
            ),
            None => write!(f, "{}: {}", self.source_name, self.message),
        }
    }
}

impl Error {
    fn at(loc: &Loc, message: String) -> Error {
        Error {
            source_name: loc.source_name.clone(),
            pos: Some(loc.pos),
            message,
        }
    }
}

/// A warning (an unknown key): `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where.
    pub loc: Loc,
    /// What.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: {}", self.loc, self.message)
    }
}

/// A parsed xl.cfg: the settings by key, in first-assignment order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XlConfig {
    settings: Vec<(String, Setting)>,
}

impl XlConfig {
    /// Parses `text`, naming it `source_name` in errors. Never panics, whatever the bytes.
    ///
    /// # Errors
    ///
    /// The first syntax error.
    pub fn parse(source_name: &str, text: &[u8]) -> Result<XlConfig, Error> {
        let mut cfg = XlConfig::default();
        cfg.parse_more(source_name, text)?;
        Ok(cfg)
    }

    /// Parses more text into this config, as if it followed what was parsed so far (later
    /// assignments replace, `+=` appends).
    ///
    /// # Errors
    ///
    /// The first syntax error; the settings before it are applied.
    pub fn parse_more(&mut self, source_name: &str, text: &[u8]) -> Result<(), Error> {
        Parser::new(source_name, text).file(self)
    }

    /// Applies a command-line override, as `xl create cfg 'name="x"' 'memory=256'` does: one
    /// or more settings in xl.cfg syntax, located in [`COMMAND_LINE`] in errors.
    ///
    /// # Errors
    ///
    /// The first syntax error.
    pub fn apply_override(&mut self, line: &str) -> Result<(), Error> {
        self.parse_more(COMMAND_LINE, line.as_bytes())
    }

    /// The setting for `key`.
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|(k, _)| k == key).map(|(_, s)| s)
    }

    /// The settings, in first-assignment order.
    pub fn settings(&self) -> impl Iterator<Item = (&str, &Setting)> {
        self.settings.iter().map(|(k, s)| (k.as_str(), s))
    }

    fn store(&mut self, key: String, op: Op, value: PValue, op_loc: &Loc) -> Result<(), Error> {
        let (value, items) = value.split();
        let existing = self.settings.iter_mut().find(|(k, _)| *k == key);
        match (op, existing) {
            (Op::Append, Some((_, prev))) => {
                let joined = match (
                    std::mem::replace(&mut prev.value, CfgValue::List(vec![])),
                    value,
                ) {
                    (CfgValue::List(mut a), CfgValue::List(b)) => {
                        a.extend(b);
                        prev.items.extend(items);
                        CfgValue::List(a)
                    }
                    (CfgValue::List(_), _) | (_, CfgValue::List(_)) => {
                        return Err(Error::at(
                            op_loc,
                            format!(
                                "cannot append with += to \"{key}\": one of the values is a \
                                 list and the other is not"
                            ),
                        ))
                    }
                    (a, b) => CfgValue::String(atom_text(&a).to_owned() + atom_text(&b)),
                };
                prev.value = joined;
                prev.appended = true;
            }
            (op, Some((_, prev))) => {
                *prev = Setting {
                    value,
                    loc: op_loc.clone(),
                    items,
                    appended: op == Op::Append,
                };
            }
            (op, None) => self.settings.push((
                key,
                Setting {
                    value,
                    loc: op_loc.clone(),
                    items,
                    appended: op == Op::Append,
                },
            )),
        }
        Ok(())
    }

    /// Interprets the settings into a [`DomainConfig`] (applying xl's defaults and checking it
    /// with [`DomainConfig::validate`]), with a warning for each key it does not interpret.
    ///
    /// # Errors
    ///
    /// The first bad value, missing name, or failed validation, located at the setting.
    pub fn to_domain_config(&self) -> Result<(DomainConfig, Vec<Warning>), Error> {
        let mut warnings = Vec::new();
        let name_setting = self.get("name").ok_or_else(|| Error {
            source_name: self.first_source(),
            pos: None,
            message: "no \"name\" is given (expected name = \"...\")".into(),
        })?;
        let mut cfg = DomainConfig::new(self.string("name", name_setting)?);

        let mut type_from = None;
        if let Some(s) = self.get("type") {
            let t = self.string("type", s)?;
            cfg.domain_type = match t.as_str() {
                "pv" => DomainType::Pv,
                "pvh" => DomainType::Pvh,
                "hvm" => {
                    return Err(Error::at(
                        &s.loc,
                        "expected pv or pvh for \"type\", found \"hvm\" (HVM guests are not \
                         supported)"
                            .into(),
                    ))
                }
                _ => {
                    return Err(Error::at(
                        &s.loc,
                        format!("expected pv or pvh for \"type\", found {t:?}"),
                    ))
                }
            };
            type_from = Some(cfg.domain_type);
        }
        if let Some(s) = self.get("builder") {
            let b = self.string("builder", s)?;
            let t = match b.as_str() {
                "generic" => DomainType::Pv,
                _ => {
                    return Err(Error::at(
                        &s.loc,
                        format!(
                            "expected \"generic\" for the deprecated \"builder\" (or use \
                             type = \"pv\" or \"pvh\"), found {b:?}"
                        ),
                    ))
                }
            };
            if type_from.is_some_and(|from| from != t) {
                return Err(Error::at(
                    &s.loc,
                    "\"builder\" contradicts \"type\" (drop the deprecated \"builder\")".into(),
                ));
            }
            cfg.domain_type = t;
        }

        if let Some(s) = self.get("memory") {
            cfg.memory_kib = self.mib("memory", s)?;
            cfg.maxmem_kib = cfg.memory_kib;
        }
        if let Some(s) = self.get("maxmem") {
            cfg.maxmem_kib = self.mib("maxmem", s)?;
        }
        if let Some(s) = self.get("vcpus") {
            let n = self.number("vcpus", s)?;
            cfg.vcpus = u32::try_from(n).map_err(|_| {
                Error::at(
                    &s.loc,
                    format!(
                        "expected a number of vcpus from 1 to {} for \"vcpus\", found {n}",
                        u32::MAX
                    ),
                )
            })?;
        }
        if let Some(s) = self.get("uuid") {
            let u = self.string("uuid", s)?;
            cfg.uuid = Some(parse_uuid(&u).ok_or_else(|| {
                Error::at(
                    &s.loc,
                    format!(
                        "expected a UUID like 01234567-89ab-cdef-0123-456789abcdef for \
                         \"uuid\", found {u:?}"
                    ),
                )
            })?);
        }
        for (key, slot) in [
            ("kernel", &mut cfg.kernel),
            ("ramdisk", &mut cfg.ramdisk),
            ("extra", &mut cfg.extra),
            ("root", &mut cfg.root),
            ("cmdline", &mut cfg.cmdline),
        ] {
            if let Some(s) = self.get(key) {
                *slot = Some(self.string(key, s)?);
            }
        }
        if cfg.cmdline.is_some() && (cfg.root.is_some() || cfg.extra.is_some()) {
            if let Some(s) = self.get("cmdline") {
                warnings.push(Warning {
                    loc: s.loc.clone(),
                    message: "\"root\" and \"extra\" are ignored in favour of \"cmdline\"".into(),
                });
            }
        }
        if let Some(s) = self.get("tsc_mode") {
            // xl takes a name, or (deprecated) libxl's number.
            cfg.tsc_mode = match &s.value {
                CfgValue::Number(_) => {
                    let n = self.number("tsc_mode", s)?;
                    usize::try_from(n)
                        .ok()
                        .and_then(|i| TscMode::ALL.get(i).copied())
                        .ok_or_else(|| {
                            Error::at(
                                &s.loc,
                                format!(
                                    "expected 0 (default), 1 (always_emulate) or 2 (native) for \
                                     \"tsc_mode\", found {n}"
                                ),
                            )
                        })?
                }
                _ => {
                    let v = self.string("tsc_mode", s)?;
                    v.parse::<TscMode>().map_err(|e| {
                        Error::at(
                            &s.loc,
                            format!("expected {} for \"tsc_mode\", found {v:?}", e.expected),
                        )
                    })?
                }
            };
        }
        if let Some(s) = self.get("disk") {
            cfg.disks = self.spec_list("disk", s, DiskSpec::parse)?;
        }
        if let Some(s) = self.get("vif") {
            cfg.vifs = self.spec_list("vif", s, VifSpec::parse)?;
        }
        if let Some(s) = self.get("vkb") {
            cfg.vkbs = self.spec_list("vkb", s, VifSpec::parse)?;
        }
        if let Some(s) = self.get("channel") {
            cfg.consoles = self.spec_list("channel", s, VifSpec::parse_channel)?;
        }
        for (key, slot) in [
            ("on_poweroff", &mut cfg.on_poweroff),
            ("on_reboot", &mut cfg.on_reboot),
            ("on_crash", &mut cfg.on_crash),
            ("on_watchdog", &mut cfg.on_watchdog),
        ] {
            if let Some(s) = self.get(key) {
                let v = self.string(key, s)?;
                *slot = v.parse::<Action>().map_err(|e| {
                    Error::at(
                        &s.loc,
                        format!("expected {} for \"{key}\", found {v:?}", e.expected),
                    )
                })?;
            }
        }
        for (key, s) in &self.settings {
            if !KNOWN_KEYS.contains(&key.as_str()) {
                warnings.push(Warning {
                    loc: s.loc.clone(),
                    message: format!("unknown key \"{key}\" is not used (kept as written)"),
                });
                cfg.unknown.insert(key.clone(), s.value.clone());
            }
        }

        cfg.validate().map_err(|e| {
            let key = match e {
                ValidationError::Name { .. } => "name",
                ValidationError::NoMemory => "memory",
                ValidationError::MemoryAboveMaxmem { .. } => "maxmem",
                ValidationError::NoVcpus => "vcpus",
            };
            match self.get(key) {
                Some(s) => Error::at(&s.loc, e.to_string()),
                None => Error {
                    source_name: self.first_source(),
                    pos: None,
                    message: e.to_string(),
                },
            }
        })?;
        Ok((cfg, warnings))
    }

    fn first_source(&self) -> String {
        self.settings
            .first()
            .map(|(_, s)| s.loc.source_name.clone())
            .unwrap_or_else(|| "config".into())
    }

    fn string(&self, key: &str, s: &Setting) -> Result<String, Error> {
        match &s.value {
            CfgValue::String(v) | CfgValue::Number(v) => Ok(v.clone()),
            CfgValue::List(_) => Err(Error::at(
                &s.loc,
                format!("expected a string for \"{key}\", found a list"),
            )),
        }
    }

    fn number(&self, key: &str, s: &Setting) -> Result<i64, Error> {
        let text = match &s.value {
            CfgValue::String(v) | CfgValue::Number(v) => v,
            CfgValue::List(_) => {
                return Err(Error::at(
                    &s.loc,
                    format!("expected a number for \"{key}\", found a list"),
                ))
            }
        };
        if s.appended {
            return Err(Error::at(
                &s.loc,
                format!("expected a number for \"{key}\", but += cannot be used with numbers"),
            ));
        }
        parse_c_long(text).ok_or_else(|| {
            Error::at(
                &s.loc,
                format!("expected a number for \"{key}\", found {text:?}"),
            )
        })
    }

    fn mib(&self, key: &str, s: &Setting) -> Result<u64, Error> {
        let n = self.number(key, s)?;
        u64::try_from(n)
            .ok()
            .and_then(|mib| mib.checked_mul(1024))
            .ok_or_else(|| {
                Error::at(
                    &s.loc,
                    format!("expected a size in MiB for \"{key}\", found {n}"),
                )
            })
    }

    fn spec_list<T>(
        &self,
        key: &str,
        s: &Setting,
        parse: impl Fn(&str) -> Result<T, super::SpecError>,
    ) -> Result<Vec<T>, Error> {
        let CfgValue::List(items) = &s.value else {
            return Err(Error::at(
                &s.loc,
                format!("expected a list of strings for \"{key}\" ({key} = [ \"...\", ... ]), found a string"),
            ));
        };
        items
            .iter()
            .zip(&s.items)
            .map(|(item, loc)| match item {
                CfgValue::String(v) | CfgValue::Number(v) => parse(v).map_err(|e| {
                    Error::at(loc, format!("bad {key} spec {:?}: {}", e.spec, e.reason))
                }),
                CfgValue::List(_) => Err(Error::at(
                    loc,
                    format!("expected a string in the \"{key}\" list, found a list"),
                )),
            })
            .collect()
    }
}

/// The keys [`XlConfig::to_domain_config`] interprets.
pub const KNOWN_KEYS: [&str; 21] = [
    "name",
    "type",
    "builder",
    "memory",
    "maxmem",
    "vcpus",
    "uuid",
    "kernel",
    "ramdisk",
    "extra",
    "root",
    "cmdline",
    "tsc_mode",
    "disk",
    "vif",
    "vkb",
    "channel",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "on_watchdog",
];

fn atom_text(v: &CfgValue) -> &str {
    match v {
        CfgValue::String(s) | CfgValue::Number(s) => s,
        CfgValue::List(_) => "",
    }
}

/// `libxl_uuid_from_string`: exactly the 36-character hyphenated form, any case.
fn parse_uuid(s: &str) -> Option<Uuid> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    Uuid::try_parse(s).ok()
}

/// C's `strtol(s, &end, 0)` with `*end == 0` required: leading white space, a sign, then hex
/// (`0x`), octal (leading `0`) or decimal digits, and nothing after. `None` on overflow.
pub fn parse_c_long(s: &str) -> Option<i64> {
    let s = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (16, h)
    } else if s.len() > 1 && s.starts_with('0') {
        (8, &s[1..])
    } else {
        (10, s)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Reads and parses `path`, applies `overrides` (each like a command-line argument of
/// `xl create`), and interprets the result.
///
/// # Errors
///
/// [`LoadError::Read`] if the file cannot be read; [`LoadError::Parse`] as
/// [`XlConfig::parse`] and [`XlConfig::to_domain_config`].
pub fn load(path: &Path, overrides: &[&str]) -> Result<(DomainConfig, Vec<Warning>), LoadError> {
    let name = path.display().to_string();
    let text = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut cfg = XlConfig::parse(&name, &text)?;
    for o in overrides {
        cfg.apply_override(o)?;
    }
    Ok(cfg.to_domain_config()?)
}

/// Renders `config` as xl.cfg text.
///
/// What [`XlConfig::to_domain_config`] made parses back to an equal config. Memory that is not
/// a whole number of MiB is rounded up (xl.cfg speaks MiB). Unknown keys are written after the
/// known ones, except those that are not valid xl.cfg keys or that would shadow a known key.
pub fn render(config: &DomainConfig) -> String {
    use fmt::Write;
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k} = {v}");
    };
    line("name", quote(&config.name));
    line("type", quote(config.domain_type.as_str()));
    line("memory", config.memory_kib.div_ceil(1024).to_string());
    line("maxmem", config.maxmem_kib.div_ceil(1024).to_string());
    line("vcpus", config.vcpus.to_string());
    if let Some(u) = config.uuid {
        line("uuid", quote(&u.hyphenated().to_string()));
    }
    for (k, v) in [
        ("kernel", &config.kernel),
        ("ramdisk", &config.ramdisk),
        ("extra", &config.extra),
        ("root", &config.root),
        ("cmdline", &config.cmdline),
    ] {
        if let Some(v) = v {
            line(k, quote(v));
        }
    }
    if !config.tsc_mode.is_default() {
        line("tsc_mode", quote(config.tsc_mode.as_str()));
    }
    if !config.disks.is_empty() {
        line(
            "disk",
            quote_list(config.disks.iter().map(|d| d.spec.as_str())),
        );
    }
    if !config.vifs.is_empty() {
        line(
            "vif",
            quote_list(config.vifs.iter().map(|v| v.spec.as_str())),
        );
    }
    if !config.vkbs.is_empty() {
        line(
            "vkb",
            quote_list(config.vkbs.iter().map(|v| v.spec.as_str())),
        );
    }
    // The primary console (devid 0) is every domain's, not a channel: it is not written.
    let channels: Vec<&str> = config
        .consoles
        .iter()
        .filter(|c| c.get("devid") != Some("0"))
        .map(|c| c.spec.as_str())
        .collect();
    if !channels.is_empty() {
        line("channel", quote_list(channels.into_iter()));
    }
    line("on_poweroff", quote(config.on_poweroff.as_str()));
    line("on_reboot", quote(config.on_reboot.as_str()));
    line("on_crash", quote(config.on_crash.as_str()));
    line("on_watchdog", quote(config.on_watchdog.as_str()));
    for (k, v) in &config.unknown {
        if is_key(k) && !KNOWN_KEYS.contains(&k.as_str()) {
            line(k, render_value(v));
        }
    }
    out
}

fn is_key(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'_')
}

fn is_number_token(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_digit()
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c) || c == b'x')
}

fn render_value(v: &CfgValue) -> String {
    match v {
        CfgValue::Number(n) if is_number_token(n) => n.clone(),
        CfgValue::Number(s) | CfgValue::String(s) => quote(s),
        CfgValue::List(items) => {
            let inner: Vec<String> = items.iter().map(render_value).collect();
            format!("[ {} ]", inner.join(", "))
        }
    }
}

fn quote_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let inner: Vec<String> = items.map(quote).collect();
    format!("[ {} ]", inner.join(", "))
}

/// Quotes `s` as an xl.cfg double-quoted string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Assign,
    Append,
}

/// A value with the places of its list items.
enum PValue {
    Atom(CfgValue),
    List(Vec<(PValue, Loc)>),
}

impl PValue {
    fn into_value(self) -> CfgValue {
        match self {
            PValue::Atom(v) => v,
            PValue::List(items) => {
                CfgValue::List(items.into_iter().map(|(v, _)| v.into_value()).collect())
            }
        }
    }

    fn split(self) -> (CfgValue, Vec<Loc>) {
        match self {
            PValue::Atom(v) => (v, Vec::new()),
            PValue::List(items) => {
                let locs = items.iter().map(|(_, l)| l.clone()).collect();
                (
                    CfgValue::List(items.into_iter().map(|(v, _)| v.into_value()).collect()),
                    locs,
                )
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Key(String),
    Number(String),
    Str(String),
    Comma,
    Open,
    Close,
    Assign,
    Append,
    Semi,
    Newline,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Key(k) => format!("the word \"{k}\""),
            Tok::Number(_) => "a number".into(),
            Tok::Str(_) => "a string".into(),
            Tok::Comma => "\",\"".into(),
            Tok::Open => "\"[\"".into(),
            Tok::Close => "\"]\"".into(),
            Tok::Assign => "\"=\"".into(),
            Tok::Append => "\"+=\"".into(),
            Tok::Semi => "\";\"".into(),
            Tok::Newline => "the end of the line".into(),
            Tok::Eof => "the end of the file".into(),
        }
    }
}

struct Parser<'a> {
    name: &'a str,
    text: &'a [u8],
    at: usize,
    /// The current token and where it starts.
    tok: Tok,
    tok_at: usize,
}

impl<'a> Parser<'a> {
    fn new(name: &'a str, text: &'a [u8]) -> Self {
        Parser {
            name,
            text,
            at: 0,
            tok: Tok::Eof,
            tok_at: 0,
        }
    }

    fn loc(&self, offset: usize) -> Loc {
        let before = &self.text[..offset.min(self.text.len())];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before[line_start..]
            .iter()
            .filter(|&&b| !(0x80..0xc0).contains(&b))
            .count()
            + 1;
        Loc {
            source_name: self.name.to_owned(),
            pos: Pos {
                line: u32::try_from(line).unwrap_or(u32::MAX),
                column: u32::try_from(column).unwrap_or(u32::MAX),
            },
        }
    }

    fn err(&self, offset: usize, message: String) -> Error {
        Error::at(&self.loc(offset), message)
    }

    fn expected(&self, what: &str) -> Error {
        self.err(
            self.tok_at,
            format!("expected {what}, found {}", self.tok.describe()),
        )
    }

    /// Reads the next token into `self.tok`.
    fn advance(&mut self) -> Result<(), Error> {
        let t = self.text;
        loop {
            match t.get(self.at) {
                Some(b' ' | b'\t') => self.at += 1,
                Some(b'\r') if t.get(self.at + 1) == Some(&b'\n') => self.at += 1,
                Some(b'#') => {
                    while t.get(self.at).is_some_and(|&b| b != b'\n') {
                        self.at += 1;
                    }
                }
                _ => break,
            }
        }
        self.tok_at = self.at;
        let start = self.at;
        let Some(&c) = t.get(self.at) else {
            self.tok = Tok::Eof;
            return Ok(());
        };
        self.at += 1;
        self.tok = match c {
            b'\n' => Tok::Newline,
            b',' => Tok::Comma,
            b'[' => Tok::Open,
            b']' => Tok::Close,
            b'=' => Tok::Assign,
            b';' => Tok::Semi,
            b'+' if t.get(self.at) == Some(&b'=') => {
                self.at += 1;
                Tok::Append
            }
            b'a'..=b'z' => {
                while t.get(self.at).is_some_and(|&b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_'
                }) {
                    self.at += 1;
                }
                Tok::Key(ascii(&t[start..self.at]))
            }
            b'0'..=b'9' => {
                while t
                    .get(self.at)
                    .is_some_and(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'x')
                {
                    self.at += 1;
                }
                Tok::Number(ascii(&t[start..self.at]))
            }
            b'"' | b'\'' => Tok::Str(self.string(c, start)?),
            b'A'..=b'Z' => {
                return Err(self.err(
                    start,
                    "unexpected capital letter (keys are lower case: a-z, 0-9, '.', '_')".into(),
                ))
            }
            b'+' | b'-' | b'.' | b'(' | b')' | b':' => {
                return Err(self.err(
                    start,
                    format!(
                        "unexpected {:?} (xl.cfg is not Python: values are \"strings\", \
                         numbers or [lists])",
                        char::from(c)
                    ),
                ))
            }
            _ => {
                let shown = std::str::from_utf8(&t[start..t.len().min(start + 4)])
                    .ok()
                    .and_then(|s| s.chars().next())
                    .map_or_else(|| format!("byte 0x{c:02x}"), |ch| format!("{ch:?}"));
                return Err(self.err(start, format!("unexpected {shown}")));
            }
        };
        Ok(())
    }

    /// Reads a quoted string whose opening quote `q` is at `start`; `self.at` is after it.
    fn string(&mut self, q: u8, start: usize) -> Result<String, Error> {
        let t = self.text;
        let mut bytes = Vec::new();
        loop {
            let here = self.at;
            match t.get(here) {
                None | Some(b'\n') => {
                    return Err(self.err(
                        start,
                        format!(
                            "unterminated string: expected a closing {} on the same line",
                            char::from(q)
                        ),
                    ))
                }
                Some(&c) if c == q => {
                    self.at += 1;
                    break;
                }
                Some(b'\\') => {
                    self.at += 1;
                    let Some(&e) = t.get(self.at).filter(|&&b| b != b'\n') else {
                        return Err(self.err(
                            here,
                            "expected a character after the backslash, found the end of the line"
                                .into(),
                        ));
                    };
                    self.at += 1;
                    let b = match e {
                        b'"' | b'\'' | b'\\' => e,
                        b'a' => 0x07,
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'v' => 0x0b,
                        b'x' => {
                            let hex = t
                                .get(self.at..self.at + 2)
                                .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                            let Some(hex) = hex else {
                                return Err(self.err(
                                    here,
                                    "expected two hex digits after \\x in a string".into(),
                                ));
                            };
                            self.at += 2;
                            hex.iter().fold(0u8, |acc, &d| acc * 16 + hex_val(d))
                        }
                        b'0'..=b'7' => {
                            let mut v: u32 = u32::from(e - b'0');
                            for _ in 0..2 {
                                match t.get(self.at) {
                                    Some(&d @ b'0'..=b'7') => {
                                        v = v * 8 + u32::from(d - b'0');
                                        self.at += 1;
                                    }
                                    _ => break,
                                }
                            }
                            u8::try_from(v).map_err(|_| {
                                self.err(here, format!("octal escape \\{v:o} is above \\377"))
                            })?
                        }
                        _ => {
                            return Err(self.err(
                                here,
                                format!(
                                    "unknown escape in a string (expected one of \\\" \\' \\\\ \
                                     \\a \\b \\f \\n \\r \\t \\v \\xHH \\NNN), found \\{}",
                                    escape_shown(e)
                                ),
                            ))
                        }
                    };
                    if b == 0 {
                        return Err(self.err(here, "a string cannot contain NUL (\\0)".into()));
                    }
                    bytes.push(b);
                }
                Some(0) => return Err(self.err(here, "a string cannot contain NUL".into())),
                Some(&c) => {
                    self.at += 1;
                    bytes.push(c);
                }
            }
        }
        String::from_utf8(bytes)
            .map_err(|_| self.err(start, "the string is not valid UTF-8".into()))
    }

    fn file(&mut self, cfg: &mut XlConfig) -> Result<(), Error> {
        self.advance()?;
        loop {
            match &self.tok {
                Tok::Eof => return Ok(()),
                Tok::Newline | Tok::Semi => self.advance()?,
                Tok::Key(k) => {
                    let key = k.clone();
                    self.advance()?;
                    let op = match self.tok {
                        Tok::Assign => Op::Assign,
                        Tok::Append => Op::Append,
                        _ => return Err(self.expected(&format!("\"=\" or \"+=\" after \"{key}\""))),
                    };
                    self.advance()?;
                    let value_loc = self.loc(self.tok_at);
                    let value = self.value(0)?;
                    match self.tok {
                        Tok::Newline | Tok::Semi | Tok::Eof => {}
                        _ => {
                            return Err(self.expected(&format!(
                                "\";\" or the end of the line after the value of \"{key}\""
                            )))
                        }
                    }
                    cfg.store(key, op, value, &value_loc)?;
                }
                _ => return Err(self.expected("a setting (key = value)")),
            }
        }
    }

    fn skip_newlines(&mut self) -> Result<(), Error> {
        while self.tok == Tok::Newline {
            self.advance()?;
        }
        Ok(())
    }

    /// Parses a value starting at the current token; leaves the token after it current.
    fn value(&mut self, depth: usize) -> Result<PValue, Error> {
        let v = match std::mem::replace(&mut self.tok, Tok::Eof) {
            Tok::Str(s) => PValue::Atom(CfgValue::String(s)),
            Tok::Number(n) => PValue::Atom(CfgValue::Number(n)),
            Tok::Open => {
                if depth >= MAX_NESTING {
                    return Err(self.err(
                        self.tok_at,
                        format!("lists are nested more than {MAX_NESTING} deep"),
                    ));
                }
                self.advance()?;
                self.skip_newlines()?;
                let mut items = Vec::new();
                loop {
                    if self.tok == Tok::Close {
                        break;
                    }
                    let loc = self.loc(self.tok_at);
                    items.push((self.value(depth + 1)?, loc));
                    self.skip_newlines()?;
                    match self.tok {
                        Tok::Comma => {
                            self.advance()?;
                            self.skip_newlines()?;
                        }
                        Tok::Close => break,
                        _ => return Err(self.expected("\",\" or \"]\" in a list")),
                    }
                }
                PValue::List(items)
            }
            other => {
                self.tok = other;
                return Err(self.expected("a value (a \"string\", a number or a [list])"));
            }
        };
        self.advance()?;
        Ok(v)
    }
}

fn ascii(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

fn hex_val(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d.wrapping_sub(b'A').wrapping_add(10),
    }
}

fn escape_shown(b: u8) -> String {
    if b.is_ascii_graphic() {
        char::from(b).to_string()
    } else {
        format!("(byte 0x{b:02x})")
    }
}
