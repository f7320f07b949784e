//! `pulp.content.v1.Contents` read back: GetContent returns what
//! CreateContent stored (type, natural key, files sorted by relative path
//! with their artifacts and digests, on-demand files without), and
//! ListContents lists units in creation order, filtered by type, one page
//! at a time through `page_token`.

use super::ContentApp;
use pulp_common::proto::content::v1 as pb;
use pulp_tests::{Backend, both_databases};
use tonic::Code;

both_databases!(
    get_content_returns_the_stored_unit,
    list_contents_filters_and_pages_in_creation_order,
);

fn file(path: &str, artifact: Option<&pb::Artifact>) -> pb::ContentArtifact {
    pb::ContentArtifact {
        relative_path: path.into(),
        artifact_id: artifact.map(|a| a.id.clone()),
        sha256: String::new(),
    }
}

async fn create(
    app: &ContentApp,
    pulp_type: &str,
    key: &str,
    files: Vec<pb::ContentArtifact>,
) -> pb::Content {
    app.contents()
        .create_content(pb::CreateContentRequest {
            pulp_type: pulp_type.into(),
            natural_key: key.into(),
            artifacts: files,
        })
        .await
        .unwrap_or_else(|s| panic!("create {pulp_type} {key}: {s}"))
        .into_inner()
}

async fn get(app: &ContentApp, id: &str) -> Result<pb::Content, tonic::Status> {
    app.contents()
        .get_content(pb::GetContentRequest { id: id.into() })
        .await
        .map(|r| r.into_inner())
}

async fn list(
    app: &ContentApp,
    pulp_type: &str,
    page_size: i32,
    page_token: &str,
) -> Result<pb::ListContentsResponse, tonic::Status> {
    app.contents()
        .list_contents(pb::ListContentsRequest {
            pulp_type: pulp_type.into(),
            page_size,
            page_token: page_token.into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Every page of a listing, and how many pages it took.
async fn all_pages(app: &ContentApp, pulp_type: &str, page_size: i32) -> (Vec<pb::Content>, usize) {
    let (mut units, mut pages, mut token) = (Vec::new(), 0, String::new());
    loop {
        let page = list(app, pulp_type, page_size, &token)
            .await
            .expect("list contents");
        pages += 1;
        let limit = if page_size == 0 {
            100
        } else {
            page_size as usize
        };
        assert!(
            page.contents.len() <= limit,
            "a page of {} units for page_size {page_size}",
            page.contents.len()
        );
        units.extend(page.contents);
        if page.next_page_token.is_empty() {
            return (units, pages);
        }
        token = page.next_page_token;
    }
}

fn ids(units: &[pb::Content]) -> Vec<&str> {
    units.iter().map(|c| c.id.as_str()).collect()
}

/// A unit with two downloaded files and one on-demand file, given out of
/// order, and a unit of another type with no file: GetContent returns each
/// field as stored, the files sorted by path, each downloaded one with its
/// artifact's id and SHA-256.
async fn get_content_returns_the_stored_unit(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let alpha = app.upload(b"alpha bytes").await;
    let beta = app.upload(b"beta bytes, longer").await;
    assert_ne!(alpha.sha256, beta.sha256);

    let created = create(
        &app,
        "file.file",
        "docs/a.txt:1234",
        vec![
            file("z/last.txt", Some(&alpha)),
            file("a/first.txt", Some(&beta)),
            file("m/later.bin", None),
        ],
    )
    .await;
    let bare = create(&app, "rpm.package", "pkg-1.0-1.noarch", vec![]).await;

    let got = get(&app, &created.id).await.expect("get content");
    assert_eq!(
        got, created,
        "GetContent returns what CreateContent returned"
    );
    assert_eq!(got.pulp_type, "file.file");
    assert_eq!(got.natural_key, "docs/a.txt:1234");
    let files: Vec<(&str, Option<&str>, &str)> = got
        .artifacts
        .iter()
        .map(|a| {
            (
                a.relative_path.as_str(),
                a.artifact_id.as_deref(),
                a.sha256.as_str(),
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            ("a/first.txt", Some(beta.id.as_str()), beta.sha256.as_str()),
            ("m/later.bin", None, ""),
            ("z/last.txt", Some(alpha.id.as_str()), alpha.sha256.as_str()),
        ]
    );
    assert!(got.created_at.is_some());

    let got = get(&app, &bare.id).await.expect("get content");
    assert_eq!(got, bare);
    assert_eq!(
        (
            got.pulp_type.as_str(),
            got.natural_key.as_str(),
            got.artifacts.len()
        ),
        ("rpm.package", "pkg-1.0-1.noarch", 0)
    );

    let err = get(&app, "not-a-uuid").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let unknown = uuid::Uuid::now_v7().to_string();
    let err = get(&app, &unknown).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(err.message().contains(&unknown), "{}", err.message());
}

/// Five units of two types, created one after the other: ListContents
/// gives them in creation order, whole (files included), with or without a
/// type filter, in pages of any size that follow each other through
/// `page_token`; bad filters and paging are INVALID_ARGUMENT.
async fn list_contents_filters_and_pages_in_creation_order(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let artifact = app.upload(b"shared file").await;
    let mut created = Vec::new();
    for (pulp_type, key) in [
        ("file.file", "f-0"),
        ("rpm.package", "r-0"),
        ("file.file", "f-1"),
        ("rpm.package", "r-1"),
        ("file.file", "f-2"),
    ] {
        let files = vec![
            file(&format!("{key}.txt"), Some(&artifact)),
            file("extra", None),
        ];
        created.push(create(&app, pulp_type, key, files).await);
    }
    let of_type = |t: &str| -> Vec<pb::Content> {
        created
            .iter()
            .filter(|c| c.pulp_type == t)
            .cloned()
            .collect()
    };

    // Everything on one page (page_size 0 is 100): whole units, in order.
    let page = list(&app, "", 0, "").await.expect("list contents");
    assert_eq!(page.contents, created, "creation order, every field");
    assert_eq!(page.next_page_token, "", "one page holds them all");

    // Pages of 2: 2 + 2 + 1, each following the last through its token.
    let (units, pages) = all_pages(&app, "", 2).await;
    assert_eq!(ids(&units), ids(&created));
    assert_eq!(pages, 3);
    // Pages of 1 walk them one by one.
    let (units, _) = all_pages(&app, "", 1).await;
    assert_eq!(ids(&units), ids(&created));

    // The type filter, alone and while paging.
    let (units, _) = all_pages(&app, "rpm.package", 0).await;
    assert_eq!(units, of_type("rpm.package"));
    let first = list(&app, "file.file", 2, "").await.expect("list contents");
    assert_eq!(ids(&first.contents), ids(&of_type("file.file")[..2]));
    assert_ne!(first.next_page_token, "", "a full page has a next page");
    let second = list(&app, "file.file", 2, &first.next_page_token)
        .await
        .expect("list contents");
    assert_eq!(second.contents, of_type("file.file")[2..]);
    assert_eq!(second.next_page_token, "", "the last page");
    let (units, pages) = all_pages(&app, "deb.package", 0).await;
    assert!(units.is_empty() && pages == 1, "no unit of that type");

    for (case, pulp_type, page_size, token, says) in [
        ("bad type", "File", 0, "", "pulp_type"),
        ("page too large", "", 1001, "", "page_size"),
        ("negative page", "", -1, "", "page_size"),
        ("bad token", "", 0, "garbage", "page_token"),
    ] {
        let err = list(&app, pulp_type, page_size, token)
            .await
            .expect_err(case);
        assert_eq!(err.code(), Code::InvalidArgument, "{case}: {err}");
        assert!(err.message().contains(says), "{case}: {}", err.message());
    }
}
