//! Settings of the real binaries: a `--config` TOML file, `PULP_*`
//! variables and flags, in that rising order of precedence;
//! `--print-config` shows where each value came from with secrets masked;
//! bad settings stop the start with a message naming what to fix.

use pulp_tests::binary;
use std::process::{Command, Output};

fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary(name));
    command.args(args);
    // Only the variables the test sets: none inherited from the machine.
    for (key, _) in std::env::vars() {
        if key.starts_with("PULP_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("run the binary")
}

fn line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

#[test]
fn scheduler_flags_beat_environment_beat_file_and_secrets_are_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scheduler.toml");
    std::fs::write(
        &file,
        r#"
database_url = "postgres://pulp:s3cret@db.example:5432/pulp"
worker_ttl = 12.5
db-max-connections = 3
log_format = "json"
max_upload_bytes = 1000
"#,
    )
    .unwrap();
    let out = run(
        "pulp-scheduler",
        &[
            "--config",
            file.to_str().unwrap(),
            "--max-upload-bytes",
            "2000",
            "--print-config",
        ],
        &[
            ("PULP_DB_MAX_CONNECTIONS", "5"),
            ("PULP_MAX_UPLOAD_BYTES", "3000"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("s3cret"), "the password leaked:\n{text}");
    assert_eq!(
        line(&text, "database_url"),
        r#"database_url = "postgres://pulp:***@db.example:5432/pulp"  # file"#
    );
    assert_eq!(line(&text, "worker_ttl"), r#"worker_ttl = "12.5"  # file"#);
    assert_eq!(line(&text, "log_format"), r#"log_format = "json"  # file"#);
    assert_eq!(
        line(&text, "db_max_connections"),
        r#"db_max_connections = "5"  # environment"#
    );
    assert_eq!(
        line(&text, "max_upload_bytes"),
        r#"max_upload_bytes = "2000"  # flag"#
    );
    assert_eq!(
        line(&text, "listen"),
        r#"listen = "127.0.0.1:50051"  # default"#
    );
}

#[test]
fn worker_reads_the_same_three_sources() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("worker.toml");
    std::fs::write(
        &file,
        "slots = 3\nname = \"from-file\"\nworking_dir = \"/srv/work\"\ndatabase_url = \"postgres://w:pw@db/pulp\"\n",
    )
    .unwrap();
    let out = run(
        "pulp-worker",
        &["--print-config", "--name", "from-flag"],
        &[("PULP_CONFIG", file.to_str().unwrap()), ("PULP_SLOTS", "4")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(line(&text, "slots"), r#"slots = "4"  # environment"#);
    assert_eq!(line(&text, "name"), r#"name = "from-flag"  # flag"#);
    assert_eq!(
        line(&text, "working_dir"),
        r#"working_dir = "/srv/work"  # file"#
    );
    assert!(!text.contains(":pw@"), "the password leaked:\n{text}");
}

#[test]
fn bad_settings_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    for (name, toml, args, expect) in [
        (
            "pulp-scheduler",
            "no_such_setting = 1\n",
            vec![],
            "unknown setting \"no_such_setting\"",
        ),
        (
            "pulp-scheduler",
            "worker_ttl = \"soon\"\n",
            vec![],
            "bad.toml",
        ),
        (
            "pulp-scheduler",
            "",
            vec!["--worker-ttl", "0"],
            "--worker-ttl 0 is out of range",
        ),
        (
            "pulp-scheduler",
            "tls_cert = \"/nonexistent.pem\"\ntls_key = \"/nonexistent.key\"\n",
            vec![],
            "--tls-cert /nonexistent.pem: no such file",
        ),
        ("pulp-worker", "slots = 0\n", vec![], "bad.toml"),
        (
            "pulp-worker",
            "slots = [1]\n",
            vec![],
            "slots: give a string or a number",
        ),
    ] {
        std::fs::write(&file, toml).unwrap();
        let mut all = vec!["--config", file.to_str().unwrap(), "--print-config"];
        all.extend(args);
        let out = run(name, &all, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} {toml} accepted");
        assert!(stderr.contains(expect), "{name} {toml}: {stderr}");
    }
}
