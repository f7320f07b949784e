//! Artifact uploads: streamed in chunks, verified against the stated
//! digest and size before the artifact exists; a refused upload leaves no
//! artifact and no file in storage.

use super::ContentApp;
use futures::StreamExt;
use pulp_common::content::artifacts::Sha256Digest;
use pulp_common::proto::content::v1 as pb;
use pulp_common::proto::content::v1::upload_artifact_request::Part;
use pulp_tests::{Backend, both_databases};
use sea_orm::ConnectionTrait;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tonic::Code;

both_databases!(
    multi_megabyte_upload_is_streamed_and_verified,
    corrupt_uploads_are_refused_and_leave_nothing,
);

fn sha256(bytes: &[u8]) -> String {
    Sha256Digest::from_hash(&Sha256::digest(bytes)).to_string()
}

/// Deterministic pseudo-random bytes.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn header(sha256: &str, size: i64) -> pb::UploadArtifactRequest {
    pb::UploadArtifactRequest {
        part: Some(Part::Header(pb::UploadHeader {
            sha256: sha256.into(),
            size,
        })),
    }
}

fn chunks(data: &[u8], size: usize) -> Vec<pb::UploadArtifactRequest> {
    data.chunks(size)
        .map(|c| pb::UploadArtifactRequest {
            part: Some(Part::Chunk(c.to_vec())),
        })
        .collect()
}

async fn upload(
    app: &ContentApp,
    messages: Vec<pb::UploadArtifactRequest>,
) -> Result<pb::Artifact, tonic::Status> {
    app.artifacts()
        .upload_artifact(futures::stream::iter(messages))
        .await
        .map(|r| r.into_inner())
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

async fn artifact_rows(app: &ContentApp) -> i64 {
    let db = app.database().await;
    let row = db
        .query_one_raw(pulp_common::db::stmt(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM artifacts",
            [],
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get("", "n").unwrap()
}

/// 6 MiB in 256 KiB chunks: stored by digest with exactly its bytes,
/// readable with GetArtifact, and idempotent when sent again.
async fn multi_megabyte_upload_is_streamed_and_verified(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let data = bytes(6 * 1024 * 1024 + 123, 1);
    let digest = sha256(&data);
    let mut messages = vec![header(&digest.to_uppercase(), data.len() as i64)];
    messages.extend(chunks(&data, 256 * 1024));
    let artifact = upload(&app, messages).await.expect("upload");
    assert_eq!(artifact.sha256, digest);
    assert_eq!(artifact.size, data.len() as i64);

    let path = app
        .storage()
        .join("artifacts")
        .join(&digest[..2])
        .join(&digest);
    assert_eq!(std::fs::read(&path).expect("the artifact's file"), data);
    assert_eq!(
        files_under(app.storage()),
        [path],
        "no temporary file is left"
    );
    let got = app
        .artifacts()
        .get_artifact(pb::GetArtifactRequest {
            id: artifact.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, artifact);

    // The same bytes again, in other chunks: the same artifact.
    let mut messages = vec![header(&digest, data.len() as i64)];
    messages.extend(chunks(&data, 1024 * 1024));
    assert_eq!(upload(&app, messages).await.unwrap().id, artifact.id);
    assert_eq!(artifact_rows(&app).await, 1);

    // Content can name it; its digest shows.
    let content = app
        .contents()
        .create_content(pb::CreateContentRequest {
            pulp_type: "file.file".into(),
            natural_key: "big.bin".into(),
            artifacts: vec![pb::ContentArtifact {
                relative_path: "data/big.bin".into(),
                artifact_id: Some(artifact.id.clone()),
                sha256: String::new(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(content.artifacts[0].sha256, digest);
}

/// A wrong digest, too few bytes, too many bytes, a missing header, a size
/// over the limit (refused before the stream ends): INVALID_ARGUMENT each
/// time, and neither an artifact nor a file remains.
async fn corrupt_uploads_are_refused_and_leave_nothing(backend: Backend) {
    let limit = 1024 * 1024;
    let Some(app) = ContentApp::spawn_with(backend, |c| c.max_upload_bytes = limit).await else {
        return;
    };
    let data = bytes(300 * 1024, 2);
    let digest = sha256(&data);
    let size = data.len() as i64;
    let mut corrupt = data.clone();
    corrupt[1000] ^= 0xff;
    let with = |head: pb::UploadArtifactRequest, body: &[u8]| {
        let mut messages = vec![head];
        messages.extend(chunks(body, 64 * 1024));
        messages
    };
    let cases: Vec<(&str, Vec<pb::UploadArtifactRequest>, &str)> = vec![
        (
            "corrupt bytes",
            with(header(&digest, size), &corrupt),
            "SHA-256",
        ),
        (
            "too few bytes",
            with(header(&digest, size), &data[..1000]),
            "header said",
        ),
        (
            "too many bytes",
            with(header(&digest, size - 1), &data),
            "more than",
        ),
        ("no header", chunks(&data, 64 * 1024), "header"),
        (
            "bad digest",
            with(header("abc", size), &data),
            "not a SHA-256",
        ),
        ("negative size", vec![header(&digest, -1)], "negative"),
        ("empty stream", vec![], "empty"),
        (
            "two headers",
            vec![header(&digest, size), header(&digest, size)],
            "one header",
        ),
    ];
    for (case, messages, says) in cases {
        let err = upload(&app, messages).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{case}: {err}");
        assert!(err.message().contains(says), "{case}: {}", err.message());
    }

    // Over the limit: refused on the header, though the stream never ends.
    let endless = futures::stream::iter([header(&digest, limit as i64 + 1)])
        .chain(futures::stream::pending());
    let err = tokio::time::timeout(pulp_tests::WAIT, app.artifacts().upload_artifact(endless))
        .await
        .expect("refused without waiting for the stream")
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(
        err.message().contains("--max-upload-bytes"),
        "{}",
        err.message()
    );

    assert_eq!(artifact_rows(&app).await, 0);
    assert_eq!(files_under(app.storage()), Vec::<PathBuf>::new());

    // The right bytes still go through afterwards.
    let artifact = upload(&app, with(header(&digest, size), &data))
        .await
        .unwrap();
    assert_eq!(artifact.size, size);
}
