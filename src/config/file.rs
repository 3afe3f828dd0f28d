//! `--config FILE.toml`: every flag of `run`, `serve` and `produce` from a file, layered
//! under the command line and the environment.
//!
//! Precedence, highest first: **flag > environment variable (`WEATHERFLOW_*`) > file >
//! default**. The file is flat: its keys are the command's long flag names, spelled as on
//! the command line (`max-ahead`, `kafka-option`), so the set of keys is exactly the set
//! of flags clap knows, never a list kept by hand. A snake_case key is refused with the
//! kebab-case spelling suggested: one spelling keeps files greppable and
//! [`--print-config`](ConfigFileArgs::print_config) output canonical.
//!
//! How the layers are merged, so that clap stays the only parser and validator:
//!
//! 1. The arguments are parsed once by a copy of the command without environment
//!    variables and without required flags, to learn which flags were typed
//!    (`ValueSource::CommandLine`) and where the file is.
//! 2. For every flag not typed, its environment variable (read through the `env`
//!    function given, so tests need not touch the process environment) is appended as
//!    `--flag=value`. Then every file key whose flag is still unset, and which does not
//!    conflict with a typed or environment flag, is appended the same way.
//! 3. The result is parsed by a copy with required flags restored, and clap fills in the
//!    defaults. In that copy a boolean flag accepts `--flag=true|false`, which is how an
//!    environment or file `false` is passed on (and how a typed `--no-ml=false` overrides
//!    a file's `true`).
//!
//! Values from the file and the environment are checked by the flag's own value parser
//! before they are appended, so an error names the file and line, or the variable.
//! Relative paths in the file are resolved against the file's directory (a value that
//! is a bare number, as in `stations = 100`, is a count, not a path); paths from flags
//! and the environment stay relative to the working directory, as usual.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, CommandFactory, FromArgMatches, ValueHint};

use super::Cli;

/// The id of the `--config` flag.
const CONFIG: &str = "config";
/// The id of the `--print-config` flag.
const PRINT_CONFIG: &str = "print_config";

/// `--config` and `--print-config`, flattened into the commands that take a file.
///
/// These two are read by [`parse`] while it merges the layers; the rest of the program
/// never needs them.
#[derive(Clone, Debug, Default, Args)]
pub struct ConfigFileArgs {
    /// TOML file of flag values: keys are the long flag names (`max-ahead = "2m"`,
    /// `kafka-option = ["security.protocol=SSL"]`, `no-ml = true`). A flag or a
    /// WEATHERFLOW_* variable overrides the file; the file overrides the defaults.
    /// Relative paths in it are relative to the file's directory.
    #[arg(long, env = "WEATHERFLOW_CONFIG", value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (flags, environment, file and defaults merged)
    /// as a TOML file for `--config`, each line commented with where its value came from,
    /// and exit. Values are not validated beyond their type. Secrets given with
    /// `--kafka-option` are printed as they are.
    #[arg(long)]
    pub print_config: bool,
}

/// Why the command line, environment and file could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// clap's own outcome: `--help`, `--version` or a usage error. `exit()` prints it.
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// The file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML (the message carries line and column).
    #[error("{} is not valid TOML", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: toml::de::Error,
    },
    /// A key that is not a flag of the command.
    #[error("{}:{line}: unknown key `{key}` for `{command}`{hint}", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// 1-based line of the key.
        line: usize,
        /// The key as written.
        key: String,
        /// The command whose flags the keys are.
        command: String,
        /// A suggestion, with its leading separator, or empty.
        hint: String,
    },
    /// A value of the wrong type or one the flag rejects.
    #[error("{}:{line}: `{key}`: {problem}", path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// An environment variable the flag rejects.
    #[error("environment variable {var}: {problem}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        problem: String,
    },
}

/// Where an effective value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Typed on the command line.
    Flag,
    /// From this environment variable.
    Env(String),
    /// From the config file, at this line.
    File(usize),
    /// The flag's default.
    Default,
}

/// The merged command line.
#[derive(Debug)]
pub struct Layered {
    /// The parsed command line, every layer applied.
    pub cli: Cli,
    /// Where each key's value came from (keys not set anywhere are absent).
    pub sources: BTreeMap<String, Source>,
    /// The effective configuration as TOML, when `--print-config` was given.
    pub print: Option<String>,
}

/// Reads an environment variable; `std::env::var_os` in the program, a map in tests.
pub type Env<'a> = &'a dyn Fn(&OsStr) -> Option<OsString>;

/// Parses `args` (program name first) with environment `env` and the `--config` file.
pub fn parse<I, T>(args: I, env: Env<'_>) -> Result<Layered, FileError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let base = Cli::command();
    let mut lenient = parsing_command(&base, true);
    let mut strict = parsing_command(&base, false);
    let typed = match lenient.try_get_matches_from_mut(&args) {
        Ok(m) => m,
        Err(e) if e.use_stderr() => return Err(e.into()),
        // Help and version: rendered by the real command, which shows the variables.
        Err(e) => return Err(base.clone().try_get_matches_from(&args).err().unwrap_or(e).into()),
    };
    let (name, typed_sub, target, base_target) = match typed.subcommand() {
        Some((name, sub)) => (
            name.to_owned(),
            sub,
            find_subcommand(&lenient, name)?,
            find_subcommand(&base, name)?,
        ),
        None => ("run".to_owned(), &typed, &lenient, &base),
    };
    let mut layers = Layers {
        keys: keys(target),
        target,
        sources: BTreeMap::new(),
        extra: Vec::new(),
    };
    layers.flags(typed_sub);
    layers.environment(base_target, env)?;
    // `--config`, else its variable.
    let file = match typed_sub.try_get_one::<PathBuf>(CONFIG).ok().flatten() {
        Some(path) => Some(path.clone()),
        None => env_name(base_target, CONFIG).and_then(env).map(PathBuf::from),
    };
    if let Some(path) = &file {
        layers.file(path, &name)?;
    }
    let Layers {
        keys, sources, extra, ..
    } = layers;
    // Before a `--`, whose followers belong to someone else (`bench -- RUN FLAGS`).
    let mut merged = args;
    let at = merged.iter().position(|a| a == "--").unwrap_or(merged.len());
    merged.splice(at..at, extra);
    let matches = strict.try_get_matches_from_mut(&merged)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let final_sub = match matches.subcommand() {
        Some((_, sub)) => sub,
        None => &matches,
    };
    let mut sources = sources;
    for arg in &keys {
        if final_sub.value_source(arg.get_id().as_str()) == Some(ValueSource::DefaultValue) {
            sources.entry(key_of(arg)).or_insert(Source::Default);
        }
    }
    let print = final_sub
        .try_get_one::<bool>(PRINT_CONFIG)
        .ok()
        .flatten()
        .is_some_and(|&p| p)
        .then(|| render(&name, &keys, final_sub, &sources));
    Ok(Layered { cli, sources, print })
}

/// The layers below the command line, gathered as `--flag=value` arguments to append.
struct Layers<'c> {
    /// The flags a file may set.
    keys: Vec<Arg>,
    /// The lenient command of the subcommand being run, for checking values.
    target: &'c Command,
    /// Where each key set so far came from.
    sources: BTreeMap<String, Source>,
    /// Arguments to append to the command line.
    extra: Vec<OsString>,
}

impl Layers<'_> {
    /// Notes the flags typed on the command line: nothing below may change them.
    fn flags(&mut self, typed: &ArgMatches) {
        for arg in &self.keys {
            if typed.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
                self.sources.insert(key_of(arg), Source::Flag);
            }
        }
    }

    /// Appends the environment variables of the flags not typed. `base` is the real
    /// command, which knows the variables' names.
    fn environment(&mut self, base: &Command, env: Env<'_>) -> Result<(), FileError> {
        for arg in &self.keys {
            let key = key_of(arg);
            if self.sources.contains_key(&key) {
                continue;
            }
            let Some(var) = env_name(base, arg.get_id().as_str()) else {
                continue;
            };
            let Some(value) = env(var) else { continue };
            let var = var.to_string_lossy().into_owned();
            check_value(self.target, arg, &value).map_err(|problem| FileError::Env {
                var: var.clone(),
                problem,
            })?;
            // A boolean `false` is the default: it only has to hide the file's value.
            if !(matches!(arg.get_action(), ArgAction::SetTrue) && value == "false") {
                self.extra.push(assignment(arg, &value));
            }
            self.sources.insert(key, Source::Env(var));
        }
        Ok(())
    }

    /// Appends the file's keys whose flags are neither set above nor in conflict with
    /// one that is.
    fn file(&mut self, path: &Path, command: &str) -> Result<(), FileError> {
        let entries = read_file(path, self.target, command, &self.keys)?;
        let set: BTreeSet<String> = self.sources.keys().cloned().collect();
        let conflicts = conflicts(self.target, &self.keys);
        for entry in entries {
            let taken = set.contains(entry.key.as_str())
                || conflicts
                    .get(entry.key.as_str())
                    .is_some_and(|others| others.iter().any(|o| set.contains(o)));
            if !taken {
                self.extra.extend(entry.args);
                self.sources.insert(entry.key, Source::File(entry.line));
            }
        }
        Ok(())
    }
}

/// The environment variable of the flag `id` of `cmd`.
fn env_name<'c>(cmd: &'c Command, id: &str) -> Option<&'c OsStr> {
    cmd.get_arguments().find(|a| a.get_id() == id).and_then(Arg::get_env)
}

fn find_subcommand<'c>(cmd: &'c Command, name: &str) -> Result<&'c Command, FileError> {
    cmd.find_subcommand(name).ok_or_else(|| {
        FileError::Cli(clap::Error::raw(
            clap::error::ErrorKind::InvalidSubcommand,
            format!("unknown subcommand {name}"),
        ))
    })
}

/// The command as the merge parses it: no environment variables (they are merged by
/// hand, through `env`), boolean flags that take an optional `=true|false`, and, when
/// `lenient`, no required flags (those may come from the environment or the file).
fn parsing_command(base: &Command, lenient: bool) -> Command {
    fn adapt(cmd: Command, lenient: bool) -> Command {
        cmd.mut_args(|arg| {
            let mut arg = arg.env(None::<&str>);
            if matches!(arg.get_action(), ArgAction::SetTrue) {
                arg = arg.num_args(0..=1).require_equals(true);
            }
            if lenient { arg.required(false) } else { arg }
        })
        .mut_subcommands(|sub| adapt(sub, lenient))
    }
    let mut cmd = adapt(base.clone(), lenient);
    cmd.build();
    cmd
}

/// The flags a file may set: every long flag except help, version and the file's own.
fn keys(cmd: &Command) -> Vec<Arg> {
    cmd.get_arguments()
        .filter(|a| a.get_long().is_some())
        .filter(|a| matches!(a.get_action(), ArgAction::Set | ArgAction::Append | ArgAction::SetTrue))
        .filter(|a| a.get_id() != CONFIG && a.get_id() != PRINT_CONFIG)
        .cloned()
        .collect()
}

fn key_of(arg: &Arg) -> String {
    arg.get_long().unwrap_or_default().to_owned()
}

/// For each key, the keys it may not be combined with (both directions of
/// `conflicts_with`), so that a file value never fights a typed flag.
fn conflicts(cmd: &Command, keys: &[Arg]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for arg in keys {
        for other in cmd.get_arg_conflicts_with(arg) {
            if other.get_long().is_some() {
                out.entry(key_of(arg)).or_default().push(key_of(other));
                out.entry(key_of(other)).or_default().push(key_of(arg));
            }
        }
    }
    out
}

/// `--flag=value`.
fn assignment(arg: &Arg, value: &OsStr) -> OsString {
    let mut text = OsString::from(format!("--{}=", key_of(arg)));
    text.push(value);
    text
}

/// Runs the flag's own parser on `value` by parsing `--flag=value` alone with `cmd` (the
/// lenient command: nothing else is required). clap offers no public way to call a
/// value parser by itself.
fn check_value(cmd: &Command, arg: &Arg, value: &OsStr) -> Result<(), String> {
    cmd.clone()
        .try_get_matches_from([OsString::from(cmd.get_name()), assignment(arg, value)])
        .map(drop)
        .map_err(|e| clap_problem(&e))
}

/// The useful part of a clap error: the value parser's own message when it has one, else
/// clap's first paragraph (which lists the possible values) without usage and tips.
fn clap_problem(e: &clap::Error) -> String {
    if let Some(source) = std::error::Error::source(e) {
        return source.to_string();
    }
    let text = e.to_string();
    let paragraph: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = paragraph.join(" ");
    joined.strip_prefix("error: ").unwrap_or(&joined).to_owned()
}

/// The directory relative paths in the file at `path` are relative to: the file's own,
/// made absolute so that `--print-config` output means the same wherever it is saved.
fn base_dir(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        // `run.toml`: its directory is the working directory.
        _ => Path::new("."),
    };
    // `absolute` drops `.` components and fails only without a working directory.
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_owned())
}

/// One file key, ready to append.
struct Entry {
    key: String,
    line: usize,
    args: Vec<OsString>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(1, |t| t.matches('\n').count() + 1)
}

/// Reads and checks the file: every key a flag of `command`, every value of the flag's
/// type and accepted by its parser.
fn read_file(path: &Path, cmd: &Command, command: &str, keys: &[Arg]) -> Result<Vec<Entry>, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>> =
        toml::from_str(&text).map_err(|source| FileError::Syntax {
            path: path.to_owned(),
            source,
        })?;
    let dir = base_dir(path);
    let mut entries: Vec<Entry> = Vec::new();
    for (key, value) in table {
        let line = line_of(&text, key.span().start);
        let key = key.into_inner();
        let Some(arg) = keys.iter().find(|a| a.get_long() == Some(key.as_str())) else {
            let kebab = key.replace('_', "-");
            let hint = if keys.iter().any(|a| a.get_long() == Some(kebab.as_str())) {
                format!(" (keys are spelled like the flags: `{kebab}`)")
            } else {
                String::new()
            };
            return Err(FileError::UnknownKey {
                path: path.to_owned(),
                line,
                key,
                command: command.to_owned(),
                hint,
            });
        };
        let value_line = line_of(&text, value.span().start);
        let problem = |problem: String| FileError::Value {
            path: path.to_owned(),
            line: value_line,
            key: key.clone(),
            problem,
        };
        let values = values(arg, value.get_ref()).map_err(problem)?;
        let mut args = Vec::new();
        for value in values {
            let value = if is_path(arg) { resolve(&dir, &value) } else { value };
            check_value(cmd, arg, OsStr::new(&value)).map_err(problem)?;
            // A boolean `false` is the default: nothing to pass, but the key is still
            // the file's (and may override nothing below it).
            if matches!(arg.get_action(), ArgAction::SetTrue) && value == "false" {
                continue;
            }
            args.push(assignment(arg, OsStr::new(&value)));
        }
        entries.push(Entry { key, line, args });
    }
    Ok(entries)
}

/// The value(s) of one key as flag values, or what is wrong with its type.
fn values(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, String> {
    use toml::Value as V;
    let scalar = |v: &V| match v {
        V::String(s) => Some(s.clone()),
        V::Integer(i) => Some(i.to_string()),
        V::Float(f) => Some(f.to_string()),
        V::Datetime(d) => Some(d.to_string()),
        V::Boolean(_) | V::Array(_) | V::Table(_) => None,
    };
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, V::Boolean(b)) => Ok(vec![b.to_string()]),
        (ArgAction::SetTrue, other) => Err(format!("expected true or false, found {}", a(other))),
        (_, V::Table(_)) => Err("expected a value, found a table (the file is flat: one key per flag)".into()),
        (ArgAction::Append, V::Array(items)) => items
            .iter()
            .map(|v| scalar(v).ok_or_else(|| format!("expected an array of strings or numbers, found {} in it", a(v))))
            .collect(),
        (ArgAction::Append, v) => scalar(v)
            .map(|s| vec![s])
            .ok_or_else(|| format!("expected a string, a number or an array of them, found {}", a(v))),
        (_, V::Array(_)) => Err("takes one value, found an array".into()),
        (_, v) => scalar(v)
            .map(|s| vec![s])
            .ok_or_else(|| format!("expected a string or a number, found {}", a(v))),
    }
}

/// "a string", "an array", … for messages.
fn a(value: &toml::Value) -> String {
    let kind = value.type_str();
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {kind}")
}

fn is_path(arg: &Arg) -> bool {
    matches!(
        arg.get_value_hint(),
        ValueHint::AnyPath | ValueHint::FilePath | ValueHint::DirPath | ValueHint::ExecutablePath
    )
}

/// `value` against `dir` when it is a relative path (and not a bare count).
fn resolve(dir: &Path, value: &str) -> String {
    let is_count = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    if is_count || value.is_empty() || Path::new(value).is_absolute() {
        return value.to_owned();
    }
    dir.join(value).to_string_lossy().into_owned()
}

/// The effective configuration as a `--config` file.
fn render(command: &str, keys: &[Arg], matches: &ArgMatches, sources: &BTreeMap<String, Source>) -> String {
    let mut out = format!(
        "# weatherflow {command}: effective configuration (flag > environment > file > default).\n\
         # Feed it back with --config; keys not set are commented out.\n"
    );
    let cwd = std::path::absolute(".").ok();
    for arg in keys {
        let key = key_of(arg);
        let id = arg.get_id().as_str();
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        // Paths from flags and the environment are relative to the working directory;
        // written out absolute, they mean the same from the file's directory.
        let from_file = matches!(sources.get(&key), Some(Source::File(_)));
        let raw: Vec<String> = match (&cwd, is_path(arg) && !from_file) {
            (Some(cwd), true) => raw.iter().map(|v| resolve(cwd, v)).collect(),
            _ => raw,
        };
        let value = match arg.get_action() {
            ArgAction::SetTrue => Some(toml::Value::Boolean(matches.get_flag(id))),
            ArgAction::Append => Some(toml::Value::Array(raw.iter().map(|v| scalar_value(v)).collect())),
            _ => raw.first().map(|v| scalar_value(v)),
        };
        // Writing to a String cannot fail.
        let _ = match (value, sources.get(&key)) {
            (Some(value), source) => writeln!(out, "{key} = {value}  # {}", describe(source)),
            // A hidden flag is internal (`--bench-report`): listed only when set.
            (None, _) if arg.is_hide_set() => Ok(()),
            (None, _) => writeln!(out, "# {key} (not set)"),
        };
    }
    out
}

/// An integer when it reads back as the same text, else a string.
fn scalar_value(text: &str) -> toml::Value {
    match text.parse::<i64>() {
        Ok(n) if n.to_string() == text => toml::Value::Integer(n),
        _ => toml::Value::String(text.to_owned()),
    }
}

fn describe(source: Option<&Source>) -> String {
    match source {
        Some(Source::Flag) => "flag".into(),
        Some(Source::Env(var)) => format!("environment {var}"),
        Some(Source::File(line)) => format!("file, line {line}"),
        Some(Source::Default) | None => "default".into(),
    }
}

#[cfg(test)]
mod tests;
