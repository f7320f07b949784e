//! The connection to the scheduler and the generated clients on it.
//!
//! The generated clients have no `connect` constructor: one
//! [`tonic::transport::Endpoint`] is connected eagerly (so a wrong address
//! fails at once with a clear message), and each client wraps a clone of the
//! same channel.
//!
//! With `--tls-ca` an `https://` scheduler is verified against that CA;
//! with `--token`/`--token-file` every call carries
//! `authorization: Bearer <token>` (an interceptor on the channel).

use std::time::Duration;

use pulp_common::proto::content::v1::{
    artifacts_client::ArtifactsClient, contents_client::ContentsClient,
    exporters_client::ExportersClient, publications_client::PublicationsClient,
    repositories_client::RepositoriesClient,
};
use pulp_common::proto::tasking::v1::{
    task_groups_client::TaskGroupsClient, tasks_client::TasksClient, workers_client::WorkersClient,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::error::CliError;

/// The channel every client uses: the connection plus the bearer token.
pub type Transport = InterceptedService<Channel, BearerToken>;

/// Adds `authorization: Bearer <token>` to every call, when a token is set.
#[derive(Debug, Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// How to authenticate to the scheduler.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// PEM CA certificate(s) for an `https://` scheduler.
    pub tls_ca: Option<Vec<u8>>,
    /// The bearer token.
    pub token: Option<String>,
}

/// Largest message of a repository call (a Modify naming many units).
const LARGE_MESSAGE: usize = 16 * 1024 * 1024;

/// How long to wait for the TCP (and HTTP/2) connection to the scheduler.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected scheduler.
#[derive(Debug, Clone)]
pub struct Scheduler {
    channel: Transport,
}

impl Scheduler {
    /// Connects to the scheduler at `url` (e.g. `http://127.0.0.1:50051`).
    pub async fn connect(url: &str) -> Result<Self, CliError> {
        Self::connect_with(url, &Credentials::default()).await
    }

    /// Connects to the scheduler at `url` with `credentials`.
    pub async fn connect_with(url: &str, credentials: &Credentials) -> Result<Self, CliError> {
        let invalid = |source| CliError::InvalidUrl {
            url: url.to_owned(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(invalid)?
            .connect_timeout(CONNECT_TIMEOUT);
        match (endpoint.uri().scheme_str(), &credentials.tls_ca) {
            (Some("https"), Some(ca)) => {
                endpoint = endpoint
                    .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
                    .map_err(invalid)?;
            }
            (Some("https"), None) => {
                return Err(CliError::Credentials(format!(
                    "{url} is https://: give --tls-ca, the CA that signed the scheduler's certificate"
                )));
            }
            (_, Some(_)) => {
                return Err(CliError::Credentials(format!(
                    "--tls-ca is given but {url} is not https://"
                )));
            }
            _ => {}
        }
        let token = match &credentials.token {
            None => None,
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| {
                        CliError::Credentials("the token holds characters a header cannot".into())
                    })?,
            ),
        };
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| CliError::Connect {
                url: url.to_owned(),
                source,
            })?;
        Ok(Scheduler {
            channel: InterceptedService::new(channel, BearerToken(token)),
        })
    }

    /// A client of the `Publications` service.
    pub fn publications(&self) -> PublicationsClient<Transport> {
        PublicationsClient::new(self.channel.clone())
    }

    /// A client of the `Exporters` service.
    pub fn exporters(&self) -> ExportersClient<Transport> {
        ExportersClient::new(self.channel.clone())
    }

    /// A client of the `Tasks` service.
    pub fn tasks(&self) -> TasksClient<Transport> {
        TasksClient::new(self.channel.clone())
    }

    /// A client of the `TaskGroups` service.
    pub fn groups(&self) -> TaskGroupsClient<Transport> {
        TaskGroupsClient::new(self.channel.clone())
    }

    /// A client of the `Repositories` service (it accepts Modify requests
    /// and answers up to 16 MiB, as the scheduler does).
    pub fn repositories(&self) -> RepositoriesClient<Transport> {
        RepositoriesClient::new(self.channel.clone())
            .max_encoding_message_size(LARGE_MESSAGE)
            .max_decoding_message_size(LARGE_MESSAGE)
    }

    /// A client of the `Contents` service.
    pub fn contents(&self) -> ContentsClient<Transport> {
        ContentsClient::new(self.channel.clone())
    }

    /// A client of the `Artifacts` service.
    pub fn artifacts(&self) -> ArtifactsClient<Transport> {
        ArtifactsClient::new(self.channel.clone())
    }

    /// A client of the `Workers` service.
    pub fn workers(&self) -> WorkersClient<Transport> {
        WorkersClient::new(self.channel.clone())
    }
}
