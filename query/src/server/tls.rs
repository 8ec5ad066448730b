//! TLS for the SQL server (`query.tls`): the certificate chain and key from PEM
//! files, rustls with the ring provider (as the rest of Spur), PostgreSQL's ALPN
//! name for clients that negotiate TLS directly. pgwire answers the client's
//! `SSLRequest` with it; SCRAM then binds the login to the certificate
//! (`SCRAM-SHA-256-PLUS`) for clients that support channel binding.

use std::sync::Arc;

use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::tokio_rustls::rustls::ServerConfig;
use pgwire::tokio::tokio_rustls::rustls::crypto::ring;
use pgwire::tokio::tokio_rustls::rustls::pki_types::pem::PemObject;
use pgwire::tokio::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Tls;
use crate::error::{Error, Result};

/// The certificate chain as PEM text (for SCRAM's channel binding) and the
/// acceptor that serves it.
pub(crate) struct Loaded {
    pub(crate) cert_pem: Vec<u8>,
    pub(crate) acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").finish_non_exhaustive()
    }
}

pub(crate) fn load(tls: &Tls) -> Result<Loaded> {
    let fail = |what: &str, error: &dyn std::fmt::Display| {
        Error::Config(format!("query.tls: {what}: {error}"))
    };
    let cert_pem = std::fs::read(&tls.cert)
        .map_err(|e| fail(&format!("reading {}", tls.cert.display()), &e))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(&format!("certificates in {}", tls.cert.display()), &e))?;
    if chain.is_empty() {
        return Err(fail(
            &tls.cert.display().to_string(),
            &"no PEM certificate in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| fail(&format!("private key in {}", tls.key.display()), &e))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("protocol versions", &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| fail("certificate and key", &e))?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Loaded {
        cert_pem,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}
