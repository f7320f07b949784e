//! TLS for the gRPC server, and for the calls a follower relays to the
//! leader.
//!
//! With `--tls-cert`/`--tls-key` the scheduler serves only TLS. With
//! `--worker-ca` it also asks every connection for a client certificate and
//! accepts one only when that CA signed it; the certificate stays optional
//! at the TLS layer (clients authenticate with tokens instead) and the
//! worker stream insists on it (see [`crate::auth`]).
//!
//! A follower relays engine-bound calls to the leader's advertised address
//! (a pod IP on Kubernetes). With TLS on, it connects with TLS, checks the
//! leader's certificate against `--peer-ca` (default `--worker-ca`) for the
//! name `--peer-server-name`, and presents its own certificate as client
//! certificate, which is how the leader lets relayed worker streams in.

use crate::Config;
use anyhow::Context;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The TLS settings in effect.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// The server side; `None` for plain HTTP/2.
    pub server: Option<ServerTlsConfig>,
    /// How to reach the leader; `None` for plain HTTP/2.
    pub relay: Option<ClientTlsConfig>,
}

impl Tls {
    /// Reads the certificate files named in `config`.
    pub fn load(config: &Config) -> anyhow::Result<Tls> {
        let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
            return Ok(Tls::default());
        };
        let cert =
            std::fs::read(cert).with_context(|| format!("read --tls-cert {}", cert.display()))?;
        let key =
            std::fs::read(key).with_context(|| format!("read --tls-key {}", key.display()))?;
        check_pem(&cert, "--tls-cert", "CERTIFICATE")?;
        check_pem(&key, "--tls-key", "PRIVATE KEY")?;
        let identity = Identity::from_pem(&cert, &key);
        let mut server = ServerTlsConfig::new().identity(identity.clone());
        let worker_ca = match &config.worker_ca {
            Some(path) => {
                let ca = std::fs::read(path)
                    .with_context(|| format!("read --worker-ca {}", path.display()))?;
                check_pem(&ca, "--worker-ca", "CERTIFICATE")?;
                server = server
                    .client_ca_root(Certificate::from_pem(&ca))
                    .client_auth_optional(true);
                Some(ca)
            }
            None => None,
        };
        let peer_ca = match &config.peer_ca {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("read --peer-ca {}", path.display()))?,
            ),
            None => worker_ca,
        };
        let relay = peer_ca.map(|ca| {
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name(config.peer_server_name.clone())
                .identity(identity)
        });
        Ok(Tls {
            server: Some(server),
            relay,
        })
    }

    /// The URL scheme relayed calls use.
    pub fn relay_scheme(&self) -> &'static str {
        if self.server.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// A clear error for a file that is not the PEM it should be (rustls would
/// only say "invalid" at the first handshake).
fn check_pem(data: &[u8], flag: &str, label: &str) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(data);
    if !text.contains("-----BEGIN ") || !text.contains(label) {
        anyhow::bail!("{flag}: not a PEM file holding a {label}");
    }
    Ok(())
}
