//! The rustls client configuration: ring provider chosen explicitly, TLS 1.2 and 1.3, the
//! server certificate always verified (there is no switch to turn that off).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::os::bounded_read::{self, Links};

/// Reads every certificate of a PEM file; the error is a phrase for a config message.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = read_cert_chain(path)?;
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err(format!("{} holds no usable CA certificate", path.display()));
    }
    Ok(certs)
}

pub fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not valid PEM ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{} holds no usable PEM private key ({e})", path.display()))
}

/// The largest PEM file read: a full public CA bundle is about 250 KB.
pub const PEM_CAP: u64 = 4 << 20;

fn read(path: &Path) -> Result<Vec<u8>, String> {
    bounded_read::read(path, PEM_CAP, Links::Follow).map(|c| c.bytes).map_err(|e| e.to_string())
}

/// Builds the client config. `roots`: only these CAs (from `ca_file`), or webpki-roots when
/// `None`. `client_auth`: certificate chain and key for mTLS.
pub fn client_config(
    roots: Option<Vec<CertificateDer<'static>>>,
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Some(certs) => {
            store.add_parsable_certificates(certs);
        }
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(store);
    match client_auth {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the client certificate and key are not usable together: {e}")),
    }
}
