//! Certificates made at test time (rcgen): a CA, the scheduler's serving
//! certificate (for `localhost` and `127.0.0.1`, also for the replicas' name
//! `pulp-scheduler`), a worker client certificate signed by the CA, and one
//! signed by an unrelated CA. All are written as PEM files into a temporary
//! directory, with a client tokens file.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::PathBuf;

/// The client token in [`Pki::tokens_file`].
pub const TOKEN: &str = "test-client-token-0123456789abcdef";

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// The test's certificates and token file.
pub struct Pki {
    /// The CA certificate (signs the server and the good worker).
    pub ca: PathBuf,
    /// The scheduler's serving certificate.
    pub server: Pair,
    /// A worker certificate signed by the CA.
    pub worker: Pair,
    /// A worker certificate signed by another CA.
    pub rogue_worker: Pair,
    /// A tokens file holding [`TOKEN`].
    pub tokens_file: PathBuf,
    dir: tempfile::TempDir,
}

impl Pki {
    /// Makes everything in a fresh temporary directory.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temporary directory");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        let (ca_pem, ca) = make_ca("pulp test CA");
        let (_, rogue_ca) = make_ca("rogue CA");
        let leaf = |name: &str, sans: &[&str], issuer: &Issuer<'_, KeyPair>| {
            let key = KeyPair::generate().expect("key");
            let mut params =
                CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.signed_by(&key, issuer).expect("sign");
            Pair {
                cert: write(&format!("{name}.crt"), cert.pem()),
                key: write(&format!("{name}.key"), key.serialize_pem()),
            }
        };
        let server = leaf(
            "scheduler",
            &["localhost", "127.0.0.1", "pulp-scheduler"],
            &ca,
        );
        let worker = leaf("worker", &["worker"], &ca);
        let rogue_worker = leaf("rogue-worker", &["worker"], &rogue_ca);
        let ca = write("ca.crt", ca_pem);
        let tokens_file = write("tokens", format!("# test tokens\n{TOKEN}\n"));
        Pki {
            ca,
            server,
            worker,
            rogue_worker,
            tokens_file,
            dir,
        }
    }

    /// The CA certificate's PEM.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca).expect("read CA")
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

fn make_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-sign");
    (cert.pem(), Issuer::new(params, key))
}
