//! `add_and_remove` dispatched raw, through `Tasks.Dispatch` and
//! `Tasks.Enqueue` instead of `Repositories.Modify`: the scheduler applies
//! Modify's checks to the kwargs and requires the repository's resource
//! among the exclusive ones. Refused dispatches store nothing (no task, no
//! version); well-formed ones run and create their versions.

use super::bad_input::snapshot;
use super::{ContentApp, result, set, summary};
use pulp_common::content::repositories;
use pulp_common::names::RepositoryId;
use pulp_common::proto::tasking::v1 as tasking;
use pulp_tests::{Backend, both_databases, dispatch_request, state};
use serde_json::{Value as Json, json};
use std::future::Future;
use std::pin::Pin;
use tonic::Code;

both_databases!(raw_add_and_remove_is_checked_like_modify);

type Call<'a> = Pin<Box<dyn Future<Output = Result<tasking::Task, tonic::Status>> + Send + 'a>>;

/// Enqueue's fields: `resources` (exclusive), kwargs, and typed refs.
fn enqueue_request(
    resources: &[&str],
    kwargs: Json,
    exclusive_refs: Vec<tasking::ResourceRef>,
) -> tasking::EnqueueRequest {
    let Json::Object(kwargs) = kwargs else {
        unreachable!("kwargs are an object")
    };
    tasking::EnqueueRequest {
        func: "add_and_remove".into(),
        resources: resources.iter().map(|s| s.to_string()).collect(),
        kwargs: Some(pulp_common::json::json_to_struct(&kwargs)),
        exclusive_resource_refs: exclusive_refs,
        ..Default::default()
    }
}

/// A table of bad raw dispatches (each refused with its code and a message
/// naming the problem), then good ones by Dispatch, by Enqueue with
/// `resources`, and by Enqueue with a typed resource reference.
async fn raw_add_and_remove_is_checked_like_modify(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let _worker = app.content_worker("w", 1).await;
    let repo = app.repo("target").await;
    let other = app.repo("other").await;
    let u = app.units("u", 3).await;
    let incomplete = app.incomplete_version(&other.id).await;
    let before = snapshot(&app).await;

    let own = repo.resource.as_str();
    let unknown = uuid::Uuid::now_v7().to_string();
    let unknown_resource =
        repositories::resource(RepositoryId::parse(&unknown).unwrap()).to_string();
    let add = |units: &[String]| json!({"repository_pk": repo.id, "add_content_units": units});
    let tasks = app.tasks();
    let dispatch = |kwargs: Json, exclusive: &[&str], shared: &[&str]| -> Call<'_> {
        let mut tasks = tasks.clone();
        let request = dispatch_request("add_and_remove", kwargs, exclusive, shared);
        Box::pin(async move { tasks.dispatch(request).await.map(|r| r.into_inner()) })
    };
    let enqueue = |request: tasking::EnqueueRequest| -> Call<'_> {
        let mut tasks = tasks.clone();
        Box::pin(async move {
            tasks
                .enqueue(request)
                .await
                .map(|r| r.into_inner().task.expect("a task"))
        })
    };
    let cases: Vec<(&str, Call<'_>, Code, &str)> = vec![
        (
            "\"*\" with another unit",
            dispatch(
                json!({"repository_pk": repo.id, "remove_content_units": ["*", u[0]]}),
                &[own],
                &[],
            ),
            Code::InvalidArgument,
            "cannot be combined",
        ),
        (
            "\"*\" to add",
            dispatch(add(&["*".into()]), &[own], &[]),
            Code::InvalidArgument,
            "kwargs.add_content_units[0]",
        ),
        (
            "malformed content id",
            dispatch(add(&["x".into()]), &[own], &[]),
            Code::InvalidArgument,
            "kwargs.add_content_units[0]",
        ),
        (
            "units not a list",
            dispatch(
                json!({"repository_pk": repo.id, "remove_content_units": u[0]}),
                &[own],
                &[],
            ),
            Code::InvalidArgument,
            "must be a list",
        ),
        (
            "no repository_pk",
            dispatch(json!({"add_content_units": [u[0]]}), &[own], &[]),
            Code::InvalidArgument,
            "kwargs.repository_pk is required",
        ),
        (
            "malformed repository_pk",
            dispatch(json!({"repository_pk": "repo-1"}), &[own], &[]),
            Code::InvalidArgument,
            "kwargs.repository_pk",
        ),
        (
            "unknown kwarg",
            dispatch(
                json!({"repository_pk": repo.id, "add_content_units": [u[0]], "units": []}),
                &[own],
                &[],
            ),
            Code::InvalidArgument,
            "kwargs.units is not an argument",
        ),
        (
            "malformed base version",
            dispatch(
                json!({"repository_pk": repo.id, "base_version_pk": "v1"}),
                &[own],
                &[],
            ),
            Code::InvalidArgument,
            "kwargs.base_version_pk",
        ),
        (
            "positional args",
            {
                let mut tasks = tasks.clone();
                let mut request = dispatch_request("add_and_remove", add(&u[..1]), &[own], &[]);
                request.args = Some(pulp_common::json::json_to_list(&json!([repo.id])));
                Box::pin(async move { tasks.dispatch(request).await.map(|r| r.into_inner()) })
            },
            Code::InvalidArgument,
            "keyword arguments only",
        ),
        (
            "no resource at all",
            dispatch(add(&u[..1]), &[], &[]),
            Code::InvalidArgument,
            "exclusive_resources",
        ),
        (
            "the repository only shared",
            dispatch(add(&u[..1]), &[], &[own]),
            Code::InvalidArgument,
            "exclusive_resources",
        ),
        (
            "another repository exclusive",
            dispatch(add(&u[..1]), &[other.resource.as_str()], &[own]),
            Code::InvalidArgument,
            own,
        ),
        (
            "the id without the resource form",
            dispatch(add(&u[..1]), &[repo.id.as_str()], &[]),
            Code::InvalidArgument,
            own,
        ),
        (
            "unknown repository, its resource claimed",
            dispatch(
                json!({"repository_pk": unknown, "add_content_units": [u[0]]}),
                &[unknown_resource.as_str()],
                &[],
            ),
            Code::NotFound,
            "repository",
        ),
        (
            "unknown content unit",
            dispatch(add(std::slice::from_ref(&unknown)), &[own], &[]),
            Code::NotFound,
            "content unit",
        ),
        (
            "unknown base version",
            dispatch(
                json!({"repository_pk": repo.id, "base_version_pk": unknown}),
                &[own],
                &[],
            ),
            Code::NotFound,
            "base version",
        ),
        (
            "incomplete base version",
            dispatch(
                json!({"repository_pk": repo.id, "base_version_pk": incomplete}),
                &[own],
                &[other.resource.as_str()],
            ),
            Code::InvalidArgument,
            "not complete",
        ),
        (
            "enqueue: \"*\" with another unit",
            enqueue(enqueue_request(
                &[own],
                json!({"repository_pk": repo.id, "remove_content_units": [u[0], "*"]}),
                vec![],
            )),
            Code::InvalidArgument,
            "cannot be combined",
        ),
        (
            "enqueue: no resource",
            enqueue(enqueue_request(&[], add(&u[..1]), vec![])),
            Code::InvalidArgument,
            "exclusive_resources",
        ),
    ];
    pulp_tests::assert_refusals(cases).await;
    assert_eq!(
        snapshot(&app).await,
        before,
        "a refused dispatch stored something"
    );
    let untouched = app.get_repo(&repo.id).await;
    assert_eq!(
        (untouched.latest_version_number, untouched.next_version),
        (0, 1)
    );

    // Dispatch with the resource string: v1 = {u0, u1}.
    let first = dispatch(add(&u[..2]), &[own], &[]).await.expect("dispatch");
    assert_eq!(first.exclusive_resources, [own]);
    // Enqueue with `resources`: "*" then u2, v2 = {u2}.
    let second = enqueue(enqueue_request(
        &[own],
        json!({"repository_pk": repo.id, "remove_content_units": ["*"], "add_content_units": [u[2]]}),
        vec![],
    ))
    .await
    .expect("enqueue");
    // Enqueue with a typed reference to the same resource: u0 back, v3 =
    // {u0, u2}.
    let third = enqueue(enqueue_request(
        &[],
        add(&u[..1]),
        vec![tasking::ResourceRef {
            kind: "repositories".into(),
            id: repo.id.clone(),
        }],
    ))
    .await
    .expect("enqueue with a reference");
    assert_eq!(third.exclusive_resources, [own]);

    for (number, task) in [(1, first), (2, second), (3, third)] {
        let done = app.wait_final(&task.id).await;
        assert_eq!(
            state(&done),
            tasking::TaskState::Completed,
            "v{number}: {:?}",
            done.error
        );
        assert_eq!(result(&done)["version_number"], number);
        let created =
            repositories::version_resource(RepositoryId::parse(&repo.id).unwrap(), number);
        assert_eq!(done.created_resources, [created.to_string()]);
    }
    let versions = app.versions(&repo.id).await;
    assert_eq!(
        versions.iter().map(|v| v.number).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(app.content_of(&versions[1].id).await, set(&[&u[0], &u[1]]));
    assert_eq!(app.content_of(&versions[2].id).await, set(&[&u[2]]));
    assert_eq!(app.content_of(&versions[3].id).await, set(&[&u[0], &u[2]]));
    assert_eq!(summary(&versions[2]), (1, 2, 1));
}
