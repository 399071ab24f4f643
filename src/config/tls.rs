//! The rustls client configuration: ring provider chosen explicitly, TLS 1.2 and 1.3, the
//! server certificate always verified (there is no switch to turn that off).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::os::bounded_read::{self, Links, ReadError};

/// Why the TLS material could not be used: a phrase for the config error that names the
/// key. The operator should fix the file, or the key's path, and load again.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read (missing, too large, not a regular file, permissions).
    #[error("{0}")]
    Read(#[from] ReadError),
    #[error("{} holds no usable CA certificate", .0.display())]
    NoUsableCa(std::path::PathBuf),
    #[error("{} is not valid PEM ({why})", .path.display())]
    BadPem { path: std::path::PathBuf, why: String },
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(std::path::PathBuf),
    #[error("{} holds no usable PEM private key ({why})", .path.display())]
    NoKey { path: std::path::PathBuf, why: String },
    #[error("TLS set-up failed: {0}")]
    Setup(String),
    #[error("the client certificate and key are not usable together: {0}")]
    KeyMismatch(String),
}

/// Reads every certificate of a PEM file.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = read_cert_chain(path)?;
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err(TlsError::NoUsableCa(path.to_path_buf()));
    }
    Ok(certs)
}

pub fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadPem { path: path.to_path_buf(), why: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::NoKey { path: path.to_path_buf(), why: e.to_string() })
}

/// The largest PEM file read: a full public CA bundle is about 250 KB.
pub const PEM_CAP: u64 = 4 << 20;

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    Ok(bounded_read::read(path, PEM_CAP, Links::Follow)?.bytes)
}

/// Builds the client config. `roots`: only these CAs (from `ca_file`), or webpki-roots when
/// `None`. `client_auth`: certificate chain and key for mTLS.
pub fn client_config(
    roots: Option<Vec<CertificateDer<'static>>>,
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, TlsError> {
    let mut store = RootCertStore::empty();
    match roots {
        Some(certs) => {
            store.add_parsable_certificates(certs);
        }
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(store);
    match client_auth {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => {
            builder.with_client_auth_cert(chain, key).map_err(|e| TlsError::KeyMismatch(e.to_string()))
        }
    }
}
