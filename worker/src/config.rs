//! Worker configuration: command-line flags, each with a `PULP_*`
//! environment equivalent, a key in the `--config` TOML file and a
//! documented default (precedence: flag, environment, file, default; see
//! `pulp_common::settings`).
//!
//! `main` parses a [`Config`] with clap; tests build one in code with
//! [`Config::for_tests`] and adjust its public fields. [`crate::run_with`]
//! validates it once (worker name, slots, scheduler URL) and hands the parts
//! to the modules that need them; nothing reads the environment later.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use pulp_common::names::MAX_WORKER_NAME_LEN;
use pulp_common::telemetry::LogFormat;

/// Most task slots a worker may offer (the contract's limit).
pub const MAX_SLOTS: u32 = 1024;

/// Settings of one worker process.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "pulp-worker",
    version,
    about = "Runs Pulp tasks assigned by a pulp-scheduler, each in its own working directory."
)]
pub struct Config {
    /// URL of the scheduler's gRPC endpoint (plain HTTP/2). Several replicas
    /// may be given, separated by commas: each reconnect tries the next.
    #[arg(
        long,
        env = "PULP_SCHEDULER",
        value_name = "URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub scheduler: String,

    /// This worker's name, unique among live workers: letters, digits, `_`,
    /// `-`, `.`, `@` and `:` (default: `<hostname>-<pid>`).
    #[arg(
        long,
        env = "PULP_WORKER_NAME",
        value_name = "NAME",
        default_value_t = default_name(),
        hide_default_value = true
    )]
    pub name: String,

    /// How many tasks run at once, 1 to 1024 [default: the number of CPUs].
    #[arg(
        long,
        env = "PULP_SLOTS",
        value_name = "N",
        default_value_t = default_slots(),
        hide_default_value = true,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SLOTS))
    )]
    pub slots: u32,

    /// Root of the tasks' working directories. Each task gets
    /// `<DIR>/<task-id>/<random>/`; at start, directories directly under it
    /// named by a UUID are removed as stale. One worker process per root.
    #[arg(
        long,
        env = "PULP_WORKING_DIR",
        value_name = "DIR",
        default_value = ".pulp/work"
    )]
    pub working_dir: PathBuf,

    /// Address of the gRPC health server (`grpc.health.v1`), as IP:PORT, or
    /// `none` to serve no health checks.
    #[arg(
        long,
        env = "PULP_HEALTH_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:50052"
    )]
    pub health_listen: HealthListen,

    /// Seconds a cancelled or timed-out task may take to stop before it is
    /// aborted.
    #[arg(
        long,
        env = "PULP_CANCEL_GRACE",
        value_name = "SECONDS",
        default_value = "10",
        value_parser = parse_seconds
    )]
    pub cancel_grace: Duration,

    /// Seconds running tasks may take to finish after SIGTERM before they are
    /// stopped.
    #[arg(
        long,
        env = "PULP_SHUTDOWN_GRACE",
        value_name = "SECONDS",
        default_value = "30",
        value_parser = parse_seconds
    )]
    pub shutdown_grace: Duration,

    /// Timeout for tasks dispatched without one, in seconds [default: none].
    #[arg(
        long,
        env = "PULP_DEFAULT_TIMEOUT",
        value_name = "SECONDS",
        value_parser = parse_positive_seconds
    )]
    pub default_timeout: Option<Duration>,

    /// The shared database (`sqlite://PATH` or `postgres://...`), the
    /// scheduler's. Only the content tasks (`add_and_remove`) use it; without
    /// it they are not registered [default: none].
    #[arg(long, env = "PULP_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// The artifact storage directory shared with the scheduler (on
    /// Kubernetes a ReadWriteMany volume).
    #[arg(
        long,
        env = "PULP_STORAGE_DIR",
        value_name = "DIR",
        default_value = ".pulp/storage"
    )]
    pub storage_dir: PathBuf,

    /// A directory under which file-system exports may write (after
    /// resolving symbolic links and `..`). Repeat the flag for several; in
    /// the environment separate them with commas. Default: none, so every
    /// export is refused until an operator allows a place.
    #[arg(
        long = "allowed-export-path",
        env = "PULP_ALLOWED_EXPORT_PATHS",
        value_name = "DIR",
        value_delimiter = ','
    )]
    pub allowed_export_paths: Vec<PathBuf>,

    /// Log line format: `pretty` or `json`.
    #[arg(
        long,
        env = "PULP_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "pretty"
    )]
    pub log_format: LogFormat,

    /// PEM CA certificate(s) that signed the scheduler's TLS certificate;
    /// needed for an `https://` scheduler URL.
    #[arg(long, env = "PULP_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate this worker presents to the scheduler (which
    /// checks it with its `--worker-ca`); needs `--tls-key`.
    #[arg(long, env = "PULP_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "PULP_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Address to serve Prometheus metrics on (`GET /metrics`), as IP:PORT
    /// [default: no metrics endpoint].
    #[arg(long, env = "PULP_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// A TOML file of settings (keys as the flags, `working_dir` or
    /// `working-dir`); flags and `PULP_*` variables override it.
    #[arg(long, env = "PULP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the effective settings (secrets masked) and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl Config {
    /// A configuration for in-process tests: the given scheduler and working
    /// directory, a unique name, 4 slots, no health server, a 2 s cancel
    /// grace, a 10 s shutdown grace, no default timeout and no database
    /// (so no content tasks) and no allowed export path. Adjust the public fields as needed.
    pub fn for_tests(scheduler_url: impl Into<String>, working_dir: impl Into<PathBuf>) -> Config {
        Config {
            scheduler: scheduler_url.into(),
            name: format!("test-worker-{}", uuid::Uuid::new_v4().simple()),
            slots: 4,
            working_dir: working_dir.into(),
            health_listen: HealthListen::Disabled,
            cancel_grace: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
            default_timeout: None,
            database_url: None,
            storage_dir: PathBuf::from(".pulp/storage"),
            allowed_export_paths: Vec::new(),
            log_format: LogFormat::Pretty,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            metrics_listen: None,
            config: None,
            print_config: false,
        }
    }
}

/// Where the health server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthListen {
    /// No health server (`none`).
    Disabled,
    /// Listen on this address.
    Addr(SocketAddr),
}

impl FromStr for HealthListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "none" {
            return Ok(HealthListen::Disabled);
        }
        s.parse().map(HealthListen::Addr).map_err(|_| {
            format!("{s:?} is not an address: use IP:PORT such as 127.0.0.1:50052, or none")
        })
    }
}

impl fmt::Display for HealthListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthListen::Disabled => f.write_str("none"),
            HealthListen::Addr(addr) => addr.fmt(f),
        }
    }
}

/// A non-negative, finite number of seconds.
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a non-negative number of seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} seconds is too long"))
}

/// A positive, finite number of seconds.
fn parse_positive_seconds(s: &str) -> Result<Duration, String> {
    let duration = parse_seconds(s)?;
    if duration.is_zero() {
        return Err("the timeout must be positive; leave the flag out for no timeout".into());
    }
    Ok(duration)
}

/// `<hostname>-<pid>`, with characters a worker name may not hold replaced
/// by `-`.
fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "worker".to_owned());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | ':') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_WORKER_NAME_LEN - 12)
        .collect();
    format!("{host}-{}", std::process::id())
}

/// The number of CPUs this process may use, capped at [`MAX_SLOTS`].
fn default_slots() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(MAX_SLOTS).min(MAX_SLOTS))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_well_formed() {
        Config::command().debug_assert();
    }

    #[test]
    fn parses_flags() {
        let config = Config::try_parse_from([
            "pulp-worker",
            "--scheduler",
            "http://sched:1",
            "--name",
            "w1",
            "--slots",
            "3",
            "--health-listen",
            "none",
            "--cancel-grace",
            "0.5",
            "--default-timeout",
            "60",
            "--log-format",
            "json",
            "--allowed-export-path",
            "/srv/a",
            "--allowed-export-path",
            "/srv/b",
        ])
        .unwrap();
        assert_eq!(
            config.allowed_export_paths,
            [PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
        );
        assert_eq!(config.scheduler, "http://sched:1");
        assert_eq!(config.name, "w1");
        assert_eq!(config.slots, 3);
        assert_eq!(config.health_listen, HealthListen::Disabled);
        assert_eq!(config.cancel_grace, Duration::from_millis(500));
        assert_eq!(config.default_timeout, Some(Duration::from_secs(60)));
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn refuses_bad_values() {
        for args in [
            ["--slots", "0"],
            ["--slots", "1025"],
            ["--health-listen", "localhost"],
            ["--cancel-grace", "-1"],
            ["--cancel-grace", "NaN"],
            ["--default-timeout", "0"],
            ["--log-format", "xml"],
        ] {
            let argv = ["pulp-worker", args[0], args[1]];
            assert!(Config::try_parse_from(argv).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn default_name_is_a_valid_worker_name() {
        let name = default_name();
        assert!(
            pulp_common::names::WorkerName::parse(&name).is_ok(),
            "{name}"
        );
        assert!(name.ends_with(&format!("-{}", std::process::id())));
    }
}
