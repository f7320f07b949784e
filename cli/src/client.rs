//! The connection to the scheduler and the generated clients on it.
//!
//! The generated clients have no `connect` constructor: one
//! [`tonic::transport::Endpoint`] is connected eagerly (so a wrong address
//! fails at once with a clear message), and each client wraps a clone of the
//! same channel.

use std::time::Duration;

use pulp_common::proto::content::v1::{
    artifacts_client::ArtifactsClient, contents_client::ContentsClient,
    exporters_client::ExportersClient, publications_client::PublicationsClient,
    repositories_client::RepositoriesClient,
};
use pulp_common::proto::tasking::v1::{
    task_groups_client::TaskGroupsClient, tasks_client::TasksClient, workers_client::WorkersClient,
};
use tonic::transport::{Channel, Endpoint};

use crate::error::CliError;

/// Largest message of a repository call (a Modify naming many units).
const LARGE_MESSAGE: usize = 16 * 1024 * 1024;

/// How long to wait for the TCP (and HTTP/2) connection to the scheduler.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected scheduler.
#[derive(Debug, Clone)]
pub struct Scheduler {
    channel: Channel,
}

impl Scheduler {
    /// Connects to the scheduler at `url` (e.g. `http://127.0.0.1:50051`).
    pub async fn connect(url: &str) -> Result<Self, CliError> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|source| CliError::InvalidUrl {
                url: url.to_owned(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| CliError::Connect {
                url: url.to_owned(),
                source,
            })?;
        Ok(Scheduler { channel })
    }

    /// A client of the `Publications` service.
    pub fn publications(&self) -> PublicationsClient<Channel> {
        PublicationsClient::new(self.channel.clone())
    }

    /// A client of the `Exporters` service.
    pub fn exporters(&self) -> ExportersClient<Channel> {
        ExportersClient::new(self.channel.clone())
    }

    /// A client of the `Tasks` service.
    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    /// A client of the `TaskGroups` service.
    pub fn groups(&self) -> TaskGroupsClient<Channel> {
        TaskGroupsClient::new(self.channel.clone())
    }

    /// A client of the `Repositories` service (it accepts Modify requests
    /// and answers up to 16 MiB, as the scheduler does).
    pub fn repositories(&self) -> RepositoriesClient<Channel> {
        RepositoriesClient::new(self.channel.clone())
            .max_encoding_message_size(LARGE_MESSAGE)
            .max_decoding_message_size(LARGE_MESSAGE)
    }

    /// A client of the `Contents` service.
    pub fn contents(&self) -> ContentsClient<Channel> {
        ContentsClient::new(self.channel.clone())
    }

    /// A client of the `Artifacts` service.
    pub fn artifacts(&self) -> ArtifactsClient<Channel> {
        ArtifactsClient::new(self.channel.clone())
    }

    /// A client of the `Workers` service.
    pub fn workers(&self) -> WorkersClient<Channel> {
        WorkersClient::new(self.channel.clone())
    }
}
