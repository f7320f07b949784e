//! Settings from three places, for both services: command-line flags,
//! `PULP_*` environment variables and a TOML file (`--config`), in that
//! order of precedence, over the documented defaults.
//!
//! Each service declares its settings once, as a clap `Parser` struct whose
//! flags carry an `env`. [`parse`] lets clap read the flags and the
//! environment, then fills every setting clap took from neither (its default
//! or nothing) from the TOML file, by handing the file's values back to clap
//! as flags. So one typed struct, one parser and one set of validation
//! rules serve all three sources, and a TOML value is checked exactly like
//! the flag. TOML keys are the flags' names, with `_` or `-`
//! (`database_url` or `database-url`); an unknown key is an error.
//!
//! [`render`] shows the effective settings as TOML (for `--print-config`),
//! the password of any URL masked; [`load`] reads them for a service.

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;

/// The id of the flag naming the TOML file.
pub const CONFIG_FILE: &str = "config";

/// Where the effective settings came from, for [`render`].
#[derive(Debug, Clone)]
pub struct Sources {
    matches: ArgMatches,
    from_file: Vec<String>,
}

/// Parses `args` (program name first) into `C`, layering flags over
/// environment over the TOML file named by `--config`/`PULP_CONFIG`.
/// Returns the settings and where each came from (for [`render`]). A clap
/// usage error is returned as such so that the caller can `exit()` with it.
pub fn parse<C: CommandFactory + FromArgMatches>(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<(C, Sources), SettingsError> {
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = C::command();
    let matches = command.clone().try_get_matches_from(&args)?;
    let Some(path) = matches.get_one::<PathBuf>(CONFIG_FILE).cloned() else {
        let config = C::from_arg_matches(&matches)?;
        let sources = Sources {
            matches,
            from_file: Vec::new(),
        };
        return Ok((config, sources));
    };
    let mut from_file = Vec::new();
    let text = std::fs::read_to_string(&path).map_err(|source| SettingsError::Read {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| SettingsError::Toml {
        path: path.clone(),
        source: Box::new(source),
    })?;
    for (key, value) in &table {
        let id = key.replace('-', "_");
        let arg = command
            .get_arguments()
            .find(|a| a.get_id().as_str() == id && a.get_long().is_some())
            .filter(|_| id != CONFIG_FILE)
            .ok_or_else(|| SettingsError::UnknownKey {
                path: path.clone(),
                key: key.clone(),
                known: known_keys(&command),
            })?;
        // Flags and the environment win over the file.
        if matches!(
            matches.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let long = format!("--{}", arg.get_long().expect("checked above"));
        from_file.push(id.clone());
        let bad = |why: &str| SettingsError::BadValue {
            path: path.clone(),
            key: key.clone(),
            why: why.to_owned(),
        };
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(true)) => args.push(long.into()),
            (ArgAction::SetTrue, toml::Value::Boolean(false)) => {}
            (ArgAction::SetTrue, _) => return Err(bad("give true or false")),
            (_, toml::Value::String(s)) => args.extend([long.into(), s.into()]),
            (_, toml::Value::Integer(i)) => args.extend([long.into(), i.to_string().into()]),
            (_, toml::Value::Float(f)) => args.extend([long.into(), f.to_string().into()]),
            (_, toml::Value::Boolean(b)) => args.extend([long.into(), b.to_string().into()]),
            _ => return Err(bad("give a string or a number")),
        }
    }
    let matches = command
        .try_get_matches_from(&args)
        .map_err(|err| SettingsError::FromFile {
            path: path.clone(),
            message: err.to_string(),
        })?;
    let config = C::from_arg_matches(&matches)?;
    Ok((config, Sources { matches, from_file }))
}

fn known_keys(command: &clap::Command) -> String {
    command
        .get_arguments()
        .filter(|a| a.get_long().is_some() && a.get_id().as_str() != CONFIG_FILE)
        .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::Version))
        .map(|a| a.get_id().as_str().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the settings of `C` from this process's command line, `PULP_*`
/// variables and the `--config` file; exits with a message on a usage error.
pub fn load<C: CommandFactory + FromArgMatches>() -> (C, Sources) {
    parse::<C>(std::env::args_os()).unwrap_or_else(|err| err.exit())
}

/// The effective settings of `C` as TOML lines, each with where it came
/// from; the password of any URL (a database URL) is masked.
pub fn render<C: CommandFactory>(sources: &Sources) -> String {
    let command = C::command();
    let matches = &sources.matches;
    let mut out = String::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.get_long().is_none()
            || matches!(arg.get_action(), ArgAction::Help | ArgAction::Version)
            || id == "print_config"
        {
            continue;
        }
        let source = match matches.value_source(id) {
            _ if sources.from_file.iter().any(|f| f == id) => "file",
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let value = match arg.get_action() {
            ArgAction::SetTrue => matches.get_flag(id).to_string(),
            _ => match matches.get_raw(id) {
                None => {
                    let _ = writeln!(out, "# {id} is not set");
                    continue;
                }
                Some(raw) => {
                    let shown: Vec<String> =
                        raw.map(|v| redact_url(&v.to_string_lossy())).collect();
                    toml::Value::String(shown.join(",")).to_string()
                }
            },
        };
        let _ = writeln!(out, "{id} = {value}  # {source}");
    }
    out
}

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A flag or environment variable is wrong (clap's own message).
    #[error(transparent)]
    Usage(#[from] clap::Error),
    /// The TOML file cannot be read.
    #[error("read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file is not TOML.
    #[error("the configuration file {path} is not valid TOML: {source}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// The TOML file names a setting that does not exist.
    #[error(
        "the configuration file {path} has an unknown setting {key:?}; known settings: {known}"
    )]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The settings that exist.
        known: String,
    },
    /// A value in the TOML file has the wrong type.
    #[error("the configuration file {path}: {key}: {why}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What to give instead.
        why: String,
    },
    /// A value in the TOML file is refused by the setting's parser.
    #[error("the configuration file {path}: {message}")]
    FromFile {
        /// The file.
        path: PathBuf,
        /// clap's message (naming the flag).
        message: String,
    },
}

impl SettingsError {
    /// Prints the error and exits: clap's usage errors (and `--help`,
    /// `--version`) as clap does, the others with code 2.
    pub fn exit(self) -> ! {
        match self {
            SettingsError::Usage(err) => err.exit(),
            other => {
                eprintln!("error: {other}");
                std::process::exit(2)
            }
        }
    }
}

/// `url` with the password of its user info replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password_only() {
        assert_eq!(
            redact_url("postgres://pulp:s3cret@db:5432/pulp"),
            "postgres://pulp:***@db:5432/pulp"
        );
        assert_eq!(
            redact_url("postgres://pulp@db/pulp"),
            "postgres://pulp@db/pulp"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
