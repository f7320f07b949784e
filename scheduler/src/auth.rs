//! Who may call what: bearer tokens for clients, client certificates for
//! workers.
//!
//! - Client calls (Tasks, TaskGroups, Workers.ListWorkers, the content
//!   services): when `--client-tokens-file` is set, every call must carry
//!   `authorization: Bearer <token>` with one of its tokens, else
//!   UNAUTHENTICATED. Tokens are compared in constant time.
//! - The worker stream (`Workers.Connect`): when `--worker-ca` is set, the
//!   TLS connection must present a client certificate signed by that CA (the
//!   TLS layer refuses a certificate signed by anyone else). A call without
//!   one is UNAUTHENTICATED, or PERMISSION_DENIED when it carries a valid
//!   client token: client tokens never open the worker stream.
//! - Health and reflection take no credentials, so that probes work.
//!
//! Calls a follower relays to the leader (see [`crate::cluster`]) keep their
//! metadata, so the leader checks the client's token again; the relay
//! connection itself presents this replica's own certificate as its client
//! certificate, which the leader accepts on the worker stream when the same
//! CA signed it (see README, "Security").

use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// The credentials checks; cheap to clone.
#[derive(Clone, Default)]
pub struct Auth {
    /// The accepted client tokens; `None` when client calls are open.
    tokens: Option<Arc<Vec<Vec<u8>>>>,
    /// Workers must present a client certificate (`--worker-ca`).
    worker_certificates: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.as_ref().map(|t| t.len()))
            .field("worker_certificates", &self.worker_certificates)
            .finish()
    }
}

impl Auth {
    /// Open to everyone (no tokens, no worker certificates).
    pub fn open() -> Auth {
        Auth::default()
    }

    /// Checks as configured: `tokens` (from [`read_tokens_file`]) and
    /// whether workers need a client certificate.
    pub fn new(tokens: Option<Vec<String>>, worker_certificates: bool) -> Auth {
        Auth {
            tokens: tokens.map(|t| Arc::new(t.into_iter().map(String::into_bytes).collect())),
            worker_certificates,
        }
    }

    /// Checks a client call.
    pub fn client<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.check_client(request.metadata())
    }

    fn check_client(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(tokens) = &self.tokens else {
            return Ok(());
        };
        match bearer(metadata) {
            None => Err(Status::unauthenticated(
                "missing credentials: send the metadata `authorization: Bearer <token>`",
            )),
            Some(given) if known(tokens, given) => Ok(()),
            Some(_) => Err(Status::unauthenticated("the bearer token is not valid")),
        }
    }

    /// Checks a worker stream.
    pub fn worker<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let has_certificate = request.peer_certs().is_some_and(|c| !c.is_empty());
        let client_token = match (&self.tokens, bearer(request.metadata())) {
            (Some(tokens), Some(given)) => known(tokens, given),
            _ => false,
        };
        if client_token && !has_certificate {
            return Err(Status::permission_denied(
                "a client token cannot open the worker stream: workers authenticate with a client certificate",
            ));
        }
        if self.worker_certificates && !has_certificate {
            return Err(Status::unauthenticated(
                "the worker stream needs a client certificate signed by the scheduler's --worker-ca",
            ));
        }
        Ok(())
    }

    /// An interceptor checking client calls, for `Server::with_interceptor`.
    pub fn client_interceptor(
        &self,
    ) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let auth = self.clone();
        move |request: Request<()>| {
            auth.check_client(request.metadata())?;
            Ok(request)
        }
    }
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer(metadata: &MetadataMap) -> Option<&[u8]> {
    let value = metadata.get("authorization")?.as_bytes();
    let prefix = b"Bearer ";
    (value.len() > prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &value[prefix.len()..])
}

/// Whether `given` is one of `tokens`, in time independent of where they
/// differ (every token is compared; only lengths may leak).
fn known(tokens: &[Vec<u8>], given: &[u8]) -> bool {
    let mut found = subtle::Choice::from(0);
    for token in tokens {
        found |= token.as_slice().ct_eq(given);
    }
    found.into()
}

/// Reads a tokens file: one token per line; blank lines and lines starting
/// with `#` are ignored, surrounding spaces trimmed.
pub fn read_tokens_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the client tokens file {}", path.display()))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        anyhow::bail!(
            "the client tokens file {} holds no token (one per line)",
            path.display()
        );
    }
    if let Some(bad) = tokens
        .iter()
        .find(|t| t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        anyhow::bail!(
            "the client tokens file {} holds a token of {} characters: give tokens of at least 16 visible ASCII characters without spaces",
            path.display(),
            bad.len()
        );
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
        request
    }

    #[test]
    fn client_calls_need_a_known_token_when_tokens_are_set() {
        let auth = Auth::new(Some(vec!["a-long-enough-token".into()]), false);
        assert!(
            auth.client(&with_header("Bearer a-long-enough-token"))
                .is_ok()
        );
        assert!(
            auth.client(&with_header("bearer a-long-enough-token"))
                .is_ok()
        );
        for bad in [
            "Bearer wrong",
            "Bearer a-long-enough-tokeN",
            "a-long-enough-token",
        ] {
            let err = auth.client(&with_header(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad}");
        }
        let err = auth.client(&Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(Auth::open().client(&Request::new(())).is_ok());
    }

    #[test]
    fn a_client_token_cannot_open_the_worker_stream() {
        let auth = Auth::new(Some(vec!["a-long-enough-token".into()]), true);
        let err = auth
            .worker(&with_header("Bearer a-long-enough-token"))
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        let err = auth.worker(&Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(Auth::open().worker(&Request::new(())).is_ok());
    }

    #[test]
    fn tokens_file_is_one_token_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "# ops\n  first-token-0123456789  \n\nsecond-token-0123456789\n",
        )
        .unwrap();
        assert_eq!(
            read_tokens_file(&path).unwrap(),
            ["first-token-0123456789", "second-token-0123456789"]
        );
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(read_tokens_file(&path).is_err());
        std::fs::write(&path, "short\n").unwrap();
        assert!(read_tokens_file(&path).is_err());
    }
}
