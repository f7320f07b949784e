//! The command line: global flags, commands and their arguments (clap
//! derive). Values are validated here through [`crate::input`], so a
//! [`Cli`] that parsed is ready to send.

use clap::{Args, Parser, Subcommand};
use pulp_common::state::TaskState;

use crate::input::{TaskArgs, TaskKwargs, parse_state, parse_timeout};

/// Where the scheduler listens when neither `--scheduler` nor
/// `PULP_SCHEDULER` says otherwise.
pub const DEFAULT_SCHEDULER: &str = "http://127.0.0.1:50051";

/// How many tasks `list` shows without `--limit` or `--all`.
pub const DEFAULT_LIST_LIMIT: u32 = 50;

/// `pulpctl`: dispatch, follow and cancel tasks of a Pulp scheduler.
#[derive(Debug, Parser)]
#[command(name = "pulpctl", version, about, propagate_version = true)]
pub struct Cli {
    /// The scheduler's gRPC address.
    #[arg(
        long,
        global = true,
        env = "PULP_SCHEDULER",
        default_value = DEFAULT_SCHEDULER,
        value_name = "URL"
    )]
    pub scheduler: String,

    /// PEM CA certificate(s) that signed the scheduler's TLS certificate
    /// (for an `https://` scheduler URL).
    #[arg(long, global = true, env = "PULP_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// Bearer token to send with every call (prefer `--token-file` or the
    /// environment: a flag shows in the process list).
    #[arg(
        long,
        global = true,
        env = "PULP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// File holding the bearer token (its first line that is not blank or a
    /// `#` comment).
    #[arg(
        long,
        global = true,
        env = "PULP_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<std::path::PathBuf>,

    /// Machine-readable output: one JSON document per command.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dispatch a task and print it.
    Dispatch(DispatchArgs),
    /// Show one task in detail.
    Get {
        /// The task's id.
        id: String,
    },
    /// List tasks in dispatch order.
    List(ListArgs),
    /// Cancel a task and print it.
    Cancel {
        /// The task's id.
        id: String,
    },
    /// Follow a task until it ends; exit 0 when it completed, 1 otherwise.
    Watch {
        /// The task's id.
        id: String,
    },
    /// List the workers the scheduler knows.
    Workers,
    /// Create, show, finish and cancel task groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Create, list and show repositories, their versions and content, and
    /// change their content (`modify` dispatches `add_and_remove`).
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Upload files as artifacts.
    #[command(subcommand)]
    Artifact(ArtifactCommand),
    /// Create, list and show content units.
    #[command(subcommand)]
    Content(ContentCommand),
    /// Publish repository versions and list publications.
    #[command(subcommand)]
    Publication(PublicationCommand),
    /// Create, list, show and delete file-system exporters.
    #[command(subcommand)]
    Exporter(ExporterCommand),
    /// Export a publication or a repository version with an exporter.
    Export(ExportArgs),
}

/// The `pulpctl publication` commands. VERSION is a version id, or
/// `REPO[:NUMBER]` (a repository id or name; the latest version without a
/// number).
#[derive(Debug, Subcommand)]
pub enum PublicationCommand {
    /// Publish a complete version: dispatches `publish`.
    #[command(disable_version_flag = true)]
    Create {
        /// The version.
        version: String,
        /// Publish every file of the version without a snapshot.
        #[arg(long)]
        pass_through: bool,
        /// Follow the task until it ends; exit 0 when it completed.
        #[arg(long)]
        wait: bool,
    },
    /// List publications.
    List,
    /// Show one publication.
    Show {
        /// The publication's id.
        id: String,
    },
}

/// How an exporter lays files out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    /// Copy the bytes (sizes checked, files synced).
    Write,
    /// Hard-link the artifacts (a copy across file systems).
    Hardlink,
    /// Symbolically link to the artifacts.
    Symlink,
}

/// The `pulpctl exporter` commands. EXPORTER is an id or a name.
#[derive(Debug, Subcommand)]
pub enum ExporterCommand {
    /// Create a file-system exporter.
    Create {
        /// Its name, unique.
        name: String,
        /// The absolute directory to export to; workers write only under
        /// their `--allowed-export-path`s.
        #[arg(long, value_name = "DIR")]
        path: String,
        /// How files are laid out.
        #[arg(long, value_enum, default_value = "write")]
        method: MethodArg,
    },
    /// List exporters.
    List,
    /// Show an exporter and the exports it made.
    Show {
        /// The exporter.
        exporter: String,
    },
    /// Delete an exporter (not its exported files).
    Delete {
        /// The exporter.
        exporter: String,
    },
}

/// Arguments of `pulpctl export`.
#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["publication", "version"])))]
pub struct ExportArgs {
    /// The exporter (id or name).
    pub exporter: String,
    /// Export this publication (an id).
    #[arg(long, value_name = "ID", conflicts_with = "version")]
    pub publication: Option<String>,
    /// Export this version (an id, or `REPO[:NUMBER]`).
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// With `--version`: only what was added since this version.
    #[arg(long, value_name = "VERSION", conflicts_with = "publication")]
    pub start: Option<String>,
    /// Follow the task with a progress bar of files written; exit 0 when
    /// it completed.
    #[arg(long)]
    pub wait: bool,
}

/// Arguments of `pulpctl dispatch`.
#[derive(Debug, Args)]
pub struct DispatchArgs {
    /// The registered task name, e.g. `noop` or `sleep`.
    pub func: String,

    /// Positional arguments: a JSON list.
    #[arg(long, value_name = "JSON", value_parser = TaskArgs::parse)]
    pub args: Option<TaskArgs>,

    /// Keyword arguments: a JSON object.
    #[arg(long, value_name = "JSON", value_parser = TaskKwargs::parse)]
    pub kwargs: Option<TaskKwargs>,

    /// A resource the task holds alone (repeatable).
    #[arg(long = "exclusive", value_name = "RES")]
    pub exclusive: Vec<String>,

    /// A resource the task shares with other shared holders (repeatable).
    #[arg(long = "shared", value_name = "RES")]
    pub shared: Vec<String>,

    /// The task group (a UUID) to add the task to.
    #[arg(long = "group", value_name = "ID")]
    pub group: Option<String>,

    /// Fail the task when it runs longer than this many seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = parse_timeout,
        allow_negative_numbers = true
    )]
    pub timeout: Option<f64>,

    /// Follow the task until it ends; exit 0 when it completed, 1 otherwise.
    #[arg(long)]
    pub wait: bool,
}

/// Arguments of `pulpctl list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tasks in this state (repeatable or comma-separated; any case).
    #[arg(
        long = "state",
        value_name = "S",
        value_delimiter = ',',
        value_parser = parse_state
    )]
    pub states: Vec<TaskState>,

    /// Only tasks of this func.
    #[arg(long, value_name = "F")]
    pub func: Option<String>,

    /// Only tasks of this group.
    #[arg(long, value_name = "ID")]
    pub group: Option<String>,

    /// Only tasks assigned to this worker.
    #[arg(long, value_name = "W")]
    pub worker: Option<String>,

    /// Only tasks that reserve this resource (exclusive or shared).
    #[arg(long, value_name = "R")]
    pub resource: Option<String>,

    /// Show at most this many tasks.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_LIST_LIMIT,
        value_parser = clap::value_parser!(u32).range(1..),
        conflicts_with = "all"
    )]
    pub limit: u32,

    /// Show every matching task, page after page.
    #[arg(long)]
    pub all: bool,
}

/// The `pulpctl group` commands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create an empty group and print it.
    Create {
        /// What the group is for.
        #[arg(long, value_name = "TEXT", default_value = "")]
        description: String,
    },
    /// Show a group with its counts of tasks per state.
    Show {
        /// The group's id.
        id: String,
    },
    /// Mark that no more tasks will be added to the group.
    Finish {
        /// The group's id.
        id: String,
    },
    /// Cancel every unfinished task of the group and finish it.
    Cancel {
        /// The group's id.
        id: String,
    },
}

/// The `pulpctl repo` commands. REPO is a repository's id or its name.
#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Create a repository (with its empty version 0) and print it.
    Create {
        /// Its name, unique.
        name: String,
        /// Free text.
        #[arg(long, value_name = "TEXT", default_value = "")]
        description: String,
    },
    /// List the repositories.
    List,
    /// Show a repository and the content summary of its latest version.
    Show {
        /// The repository (id or name).
        repo: String,
    },
    /// List a repository's versions with their content counts.
    Versions {
        /// The repository (id or name).
        repo: String,
    },
    /// List the content units of a version (the latest by default).
    #[command(disable_version_flag = true)]
    Content {
        /// The repository (id or name).
        repo: String,
        /// The version number.
        #[arg(long, value_name = "N")]
        version: Option<i64>,
        /// Only units of this type, e.g. `file.file`.
        #[arg(long = "type", value_name = "TYPE")]
        pulp_type: Option<String>,
    },
    /// Add and remove content units: dispatches `add_and_remove`, which
    /// creates the next version (removals first, then additions).
    Modify(ModifyArgs),
}

/// Arguments of `pulpctl repo modify`.
#[derive(Debug, Args)]
pub struct ModifyArgs {
    /// The repository (id or name).
    pub repo: String,

    /// A content unit id to add (repeatable or comma-separated).
    #[arg(long = "add", value_name = "ID", value_delimiter = ',')]
    pub add: Vec<String>,

    /// A content unit id to remove (repeatable or comma-separated), or `*`
    /// for all content of the latest version.
    #[arg(long = "remove", value_name = "ID", value_delimiter = ',')]
    pub remove: Vec<String>,

    /// Start from this version (an id, of any repository) instead of the
    /// latest.
    #[arg(long = "base", value_name = "VERSION_ID")]
    pub base: Option<String>,

    /// Follow the task until it ends; exit 0 when it completed, 1 otherwise.
    #[arg(long)]
    pub wait: bool,
}

/// The `pulpctl artifact` commands.
#[derive(Debug, Subcommand)]
pub enum ArtifactCommand {
    /// Upload a file (hashed first, then streamed and verified by the
    /// scheduler) and print the artifact.
    Upload {
        /// The file.
        file: std::path::PathBuf,
    },
}

/// The `pulpctl content` commands.
#[derive(Debug, Subcommand)]
pub enum ContentCommand {
    /// Create a content unit and print it.
    Create {
        /// Its type, e.g. `file.file`.
        #[arg(long = "type", value_name = "TYPE", default_value = "file.file")]
        pulp_type: String,
        /// Its natural key, unique within its type.
        #[arg(long, value_name = "KEY")]
        key: String,
        /// A file of the unit: `PATH=ARTIFACT_ID`, or `PATH` alone for
        /// on-demand content not downloaded yet (repeatable).
        #[arg(long = "artifact", value_name = "PATH[=ARTIFACT_ID]")]
        artifacts: Vec<String>,
    },
    /// List content units in creation order (every page).
    List {
        /// Only units of this type, e.g. `file.file`.
        #[arg(long = "type", value_name = "TYPE")]
        pulp_type: Option<String>,
    },
    /// Show a content unit with its files.
    Show {
        /// The unit's id.
        id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;
    use serde_json::json;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pulpctl").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn dispatch_takes_every_option() {
        let cli = parse(&[
            "--scheduler",
            "http://sched:1",
            "dispatch",
            "sleep",
            "--args",
            "[1, \"a\"]",
            "--kwargs",
            r#"{"seconds": 2}"#,
            "--exclusive",
            "/a/",
            "--exclusive",
            "/b/",
            "--shared",
            "/c/",
            "--group",
            "0190-group",
            "--timeout",
            "2.5",
            "--wait",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.scheduler, "http://sched:1");
        assert!(cli.json);
        let Command::Dispatch(args) = cli.command else {
            panic!("not dispatch: {:?}", cli.command);
        };
        assert_eq!(args.func, "sleep");
        assert_eq!(args.args.unwrap().values(), &[json!(1), json!("a")]);
        assert_eq!(args.kwargs.unwrap().values()["seconds"], json!(2));
        assert_eq!(args.exclusive, ["/a/", "/b/"]);
        assert_eq!(args.shared, ["/c/"]);
        assert_eq!(args.group.as_deref(), Some("0190-group"));
        assert_eq!(args.timeout, Some(2.5));
        assert!(args.wait);
    }

    #[test]
    fn dispatch_defaults() {
        let Command::Dispatch(args) = parse(&["dispatch", "noop"]).unwrap().command else {
            panic!("not dispatch");
        };
        assert!(args.args.is_none() && args.kwargs.is_none());
        assert!(args.exclusive.is_empty() && args.shared.is_empty());
        assert!(args.group.is_none() && args.timeout.is_none() && !args.wait);
    }

    #[test]
    fn bad_args_and_kwargs_are_usage_errors() {
        let err = parse(&["dispatch", "noop", "--args", r#"{"a": 1}"#]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        let text = err.to_string();
        assert!(
            text.contains("--args") && text.contains("must be a JSON list"),
            "{text}"
        );

        let err = parse(&["dispatch", "noop", "--kwargs", "[1]"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        let text = err.to_string();
        assert!(
            text.contains("--kwargs") && text.contains("must be a JSON object"),
            "{text}"
        );

        let err = parse(&["dispatch", "noop", "--args", "[1"]).unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");

        let err = parse(&["dispatch", "noop", "--timeout", "-3"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn list_states_ignore_case_and_limit_defaults() {
        let Command::List(args) =
            parse(&["list", "--state", "waiting", "--state", "RUNNING,Failed"])
                .unwrap()
                .command
        else {
            panic!("not list");
        };
        assert_eq!(
            args.states,
            [TaskState::Waiting, TaskState::Running, TaskState::Failed]
        );
        assert_eq!(args.limit, DEFAULT_LIST_LIMIT);
        assert!(!args.all);

        let Command::List(args) = parse(&[
            "list",
            "--func",
            "sleep",
            "--group",
            "g",
            "--worker",
            "w",
            "--resource",
            "/r/",
            "--limit",
            "7",
        ])
        .unwrap()
        .command
        else {
            panic!("not list");
        };
        assert_eq!(args.func.as_deref(), Some("sleep"));
        assert_eq!(args.group.as_deref(), Some("g"));
        assert_eq!(args.worker.as_deref(), Some("w"));
        assert_eq!(args.resource.as_deref(), Some("/r/"));
        assert_eq!(args.limit, 7);
    }

    #[test]
    fn unknown_state_is_a_usage_error_listing_the_valid_ones() {
        let err = parse(&["list", "--state", "done"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        let text = err.to_string();
        assert!(text.contains("unknown state 'done'"), "{text}");
        assert!(
            text.contains("waiting, running, completed, failed"),
            "{text}"
        );
    }

    #[test]
    fn list_limit_must_be_positive_and_excludes_all() {
        assert!(parse(&["list", "--limit", "0"]).is_err());
        assert_eq!(
            parse(&["list", "--limit", "3", "--all"])
                .unwrap_err()
                .kind(),
            ErrorKind::ArgumentConflict
        );
        let Command::List(args) = parse(&["list", "--all"]).unwrap().command else {
            panic!("not list");
        };
        assert!(args.all);
    }

    #[test]
    fn other_commands_parse() {
        assert!(matches!(
            parse(&["get", "t1"]).unwrap().command,
            Command::Get { id } if id == "t1"
        ));
        assert!(matches!(
            parse(&["cancel", "t1"]).unwrap().command,
            Command::Cancel { id } if id == "t1"
        ));
        assert!(matches!(
            parse(&["watch", "t1"]).unwrap().command,
            Command::Watch { id } if id == "t1"
        ));
        assert!(matches!(
            parse(&["workers", "--json"]).unwrap().command,
            Command::Workers
        ));
        assert!(matches!(
            parse(&["group", "create", "--description", "nightly"]).unwrap().command,
            Command::Group(GroupCommand::Create { description }) if description == "nightly"
        ));
        assert!(matches!(
            parse(&["group", "create"]).unwrap().command,
            Command::Group(GroupCommand::Create { description }) if description.is_empty()
        ));
        for (verb, check) in [
            (
                "show",
                (|c| matches!(c, GroupCommand::Show { .. })) as fn(&GroupCommand) -> bool,
            ),
            ("finish", |c| matches!(c, GroupCommand::Finish { .. })),
            ("cancel", |c| matches!(c, GroupCommand::Cancel { .. })),
        ] {
            let Command::Group(group) = parse(&["group", verb, "g1"]).unwrap().command else {
                panic!("not group");
            };
            assert!(check(&group), "{verb}");
        }
        assert!(parse(&["get"]).is_err());
        assert!(matches!(
            parse(&["content", "list", "--type", "file.file"]).unwrap().command,
            Command::Content(ContentCommand::List { pulp_type: Some(t) }) if t == "file.file"
        ));
        assert!(matches!(
            parse(&["content", "list"]).unwrap().command,
            Command::Content(ContentCommand::List { pulp_type: None })
        ));
        assert!(matches!(
            parse(&["content", "show", "c1"]).unwrap().command,
            Command::Content(ContentCommand::Show { id }) if id == "c1"
        ));
        assert!(parse(&["content", "show"]).is_err());
        assert!(matches!(
            parse(&["export", "e", "--version", "r:2", "--wait"]).unwrap().command,
            Command::Export(ExportArgs { version: Some(v), wait: true, .. }) if v == "r:2"
        ));
        assert!(parse(&["export", "e"]).is_err(), "a source is required");
        assert!(parse(&["export", "e", "--publication", "p", "--version", "v"]).is_err());
        assert!(parse(&["export", "e", "--publication", "p", "--start", "v"]).is_err());
        assert!(
            parse(&[
                "exporter", "create", "e", "--path", "/x", "--method", "copy"
            ])
            .is_err()
        );
    }
}
