//! TLS towards the scheduler: an `https://` scheduler URL is verified
//! against `--tls-ca`, and `--tls-cert`/`--tls-key` are presented as the
//! worker's client certificate (the scheduler's `--worker-ca` checks it).

use crate::Config;
use crate::error::WorkerError;
use std::path::Path;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The TLS settings for `https://` schedulers, or `None` when no TLS flag
/// is given.
pub(crate) fn load(config: &Config) -> Result<Option<ClientTlsConfig>, WorkerError> {
    if config.tls_ca.is_none() && config.tls_cert.is_none() && config.tls_key.is_none() {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = &config.tls_ca {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca, "--tls-ca")?));
    }
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read(cert, "--tls-cert")?,
                read(key, "--tls-key")?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(WorkerError::Config(
                "--tls-cert and --tls-key go together: give both or neither".into(),
            ));
        }
    }
    Ok(Some(tls))
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, WorkerError> {
    let data = std::fs::read(path)
        .map_err(|e| WorkerError::Config(format!("{flag} {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&data).contains("-----BEGIN ") {
        return Err(WorkerError::Config(format!(
            "{flag} {}: not a PEM file",
            path.display()
        )));
    }
    Ok(data)
}
