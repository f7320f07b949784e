//! Shared pieces of the Pulp scheduler and worker.
//!
//! # Layout
//! - [`proto`]: the gRPC contract generated from `proto/` (protox, no system
//!   `protoc`), plus the encoded descriptor set for reflection.
//! - [`names`]: validated domain types built once at the gRPC edge
//!   (`TaskName`, `ResourceName`, `TaskId`, ...). Prost types stop there.
//! - [`state`]: the task state machine (`TaskState`) and its string form in
//!   the database.
//! - [`json`]: conversions between protobuf `Value`/`Struct`/`ListValue` and
//!   `serde_json`, which is what the database stores.
//! - [`time`]: timestamps as microseconds since the epoch (the database form)
//!   and as protobuf `Timestamp`.
//! - [`db`]: connecting to SQLite or PostgreSQL and migrating the schema.
//!   Both services run the same migrations.
//! - [`content`]: the content domain (artifacts, content units,
//!   repositories and their versions) shared by the scheduler's content API
//!   and the worker's content tasks, and the artifact storage directory.
//! - [`catalog`]: the task names that ship with the worker.
//! - [`telemetry`]: the tracing subscriber both binaries install.
//! - [`settings`]: flags over `PULP_*` environment over a TOML file, and
//!   `--print-config` with secrets masked.
//! - [`metrics`]: the Prometheus recorder and `/metrics` endpoint both
//!   binaries serve with `--metrics-listen`.

pub mod catalog;
pub mod content;
pub mod db;
pub mod json;
pub mod metrics;
pub mod names;
pub mod settings;
pub mod state;
pub mod telemetry;
pub mod time;

/// Generated gRPC code for the public contract.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    /// `pulp.tasking.v1`: tasks, task groups, workers.
    pub mod tasking {
        /// Version 1 of the tasking API.
        pub mod v1 {
            tonic::include_proto!("pulp.tasking.v1");
        }
    }

    /// `pulp.content.v1`: artifacts, content units, repositories.
    pub mod content {
        /// Version 1 of the content API.
        pub mod v1 {
            tonic::include_proto!("pulp.content.v1");
        }
    }

    /// The encoded `FileDescriptorSet` of every proto file, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/pulp_descriptor.bin"));
}
