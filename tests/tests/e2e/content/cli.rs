//! `pulpctl`'s content commands against the real scheduler and a content
//! worker: upload a file, create a unit with it, create a repository,
//! modify it with `--wait`, and read versions and content back, in JSON
//! and as text; list and show content units.

use super::ContentApp;
use crate::cli::Pulpctl;
use pulp_common::content::artifacts::Sha256Digest;
use pulp_tests::{Backend, both_databases};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

both_databases!(
    content_commands_upload_create_modify_and_show,
    content_list_and_show,
);

async fn content_commands_upload_create_modify_and_show(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let _worker = app.content_worker("w", 1).await;
    let ctl = Pulpctl::new(&app);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let artifact = ctl
        .json(&["artifact", "upload", file.to_str().unwrap()])
        .await;
    let digest = Sha256Digest::from_hash(&Sha256::digest(&data)).to_string();
    assert_eq!(artifact["sha256"], digest.as_str());
    assert_eq!(artifact["size"], data.len());
    let artifact_id = artifact["id"].as_str().unwrap().to_owned();

    let unit = ctl
        .json(&[
            "content",
            "create",
            "--key",
            "big.bin",
            "--artifact",
            &format!("data/big.bin={artifact_id}"),
            "--artifact",
            "data/later.bin",
        ])
        .await;
    assert_eq!(unit["pulp_type"], "file.file");
    assert_eq!(unit["artifacts"][0]["sha256"], digest.as_str());
    assert!(
        unit["artifacts"][1]["artifact_id"].is_null(),
        "on demand: {unit}"
    );
    let unit_id = unit["id"].as_str().unwrap().to_owned();

    let repo = ctl
        .json(&["repo", "create", "files", "--description", "d"])
        .await;
    assert_eq!(repo["latest_version_number"], 0);
    // By name; --wait follows the task and exits 0 once it completed.
    let task = ctl
        .json(&["repo", "modify", "files", "--add", &unit_id, "--wait"])
        .await;
    assert_eq!(task["state"], "completed", "{task}");
    assert_eq!(task["result"]["version_number"], 1);

    let versions = ctl.json(&["repo", "versions", "files"]).await;
    assert_eq!(versions.as_array().unwrap().len(), 2);
    assert_eq!(versions[1]["content_summary"]["added"]["file.file"], 1);
    let units = ctl.json(&["repo", "content", "files"]).await;
    assert_eq!(units[0]["id"], unit_id.as_str());
    let v0 = ctl
        .json(&["repo", "content", "files", "--version", "0"])
        .await;
    assert_eq!(v0, Json::Array(vec![]));
    let list = ctl.json(&["repo", "list"]).await;
    assert_eq!(list[0]["name"], "files");

    let (result, text) = ctl
        .run(&["repo", "show", repo["id"].as_str().unwrap()])
        .await;
    assert_eq!(result, Ok(0));
    assert!(
        text.contains("latest version:") && text.contains("file.file: 1"),
        "{text}"
    );

    // Errors show the gRPC code by name.
    let (result, _) = ctl.run(&["repo", "create", "files"]).await;
    assert!(result.unwrap_err().starts_with("ALREADY_EXISTS"));
    let (result, _) = ctl.run(&["repo", "show", "nope"]).await;
    assert!(result.unwrap_err().starts_with("NOT_FOUND"));
    let (result, _) = ctl
        .run(&[
            "repo", "modify", "files", "--remove", "*", "--remove", &unit_id,
        ])
        .await;
    assert!(result.unwrap_err().starts_with("INVALID_ARGUMENT"));
}

/// `content list` gives every unit in creation order (`--type` filters),
/// `content show` one unit with its files, in JSON with the proto field
/// names and as text; an unknown id is NOT_FOUND.
async fn content_list_and_show(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let ctl = Pulpctl::new(&app);
    let artifact = app.upload(b"listed bytes").await;
    let file = ctl
        .json(&[
            "content",
            "create",
            "--key",
            "a.txt",
            "--artifact",
            &format!("dir/a.txt={}", artifact.id),
            "--artifact",
            "dir/b.txt",
        ])
        .await;
    let package = ctl
        .json(&["content", "create", "--type", "rpm.package", "--key", "p-1"])
        .await;
    let other = ctl.json(&["content", "create", "--key", "c.txt"]).await;

    let all = ctl.json(&["content", "list"]).await;
    assert_eq!(
        all,
        Json::Array(vec![file.clone(), package.clone(), other.clone()])
    );
    let files = ctl.json(&["content", "list", "--type", "file.file"]).await;
    assert_eq!(files, Json::Array(vec![file.clone(), other.clone()]));
    let none = ctl
        .json(&["content", "list", "--type", "deb.package"])
        .await;
    assert_eq!(none, Json::Array(vec![]));

    let id = file["id"].as_str().unwrap();
    let shown = ctl.json(&["content", "show", id]).await;
    assert_eq!(shown, file);
    assert_eq!(shown["natural_key"], "a.txt");
    assert_eq!(shown["artifacts"][0]["relative_path"], "dir/a.txt");
    assert_eq!(shown["artifacts"][0]["artifact_id"], artifact.id.as_str());
    assert_eq!(shown["artifacts"][0]["sha256"], artifact.sha256.as_str());
    assert_eq!(shown["artifacts"][1]["relative_path"], "dir/b.txt");
    assert!(shown["artifacts"][1]["artifact_id"].is_null(), "{shown}");

    let (result, text) = ctl.run(&["content", "show", id]).await;
    assert_eq!(result, Ok(0));
    assert!(
        text.contains(&format!("dir/a.txt -> {}", artifact.id))
            && text.contains("dir/b.txt (on demand)")
            && text.contains("a.txt"),
        "{text}"
    );
    let (result, table) = ctl.run(&["content", "list"]).await;
    assert_eq!(result, Ok(0));
    let package_id = package["id"].as_str().unwrap();
    let row = table
        .lines()
        .find(|line| line.contains(package_id))
        .unwrap_or_else(|| panic!("no row for {package_id}:\n{table}"));
    assert!(row.contains("rpm.package") && row.contains("p-1"), "{row}");

    let unknown = uuid::Uuid::now_v7().to_string();
    let (result, _) = ctl.run(&["content", "show", &unknown]).await;
    assert!(result.unwrap_err().starts_with("NOT_FOUND"));
    let (result, _) = ctl.run(&["content", "list", "--type", "Bad"]).await;
    assert!(result.unwrap_err().starts_with("INVALID_ARGUMENT"));
}
