//! The rustls client configuration: ring provider chosen explicitly, TLS 1.2 and 1.3, the
//! server certificate always verified (there is no switch to turn that off).
//!
//! Trust comes from `gateway.ca_file` or else from the system's CA bundle, not from a copy of
//! Mozilla's list compiled in: the OS keeps its bundle current (a distrusted CA is removed by
//! a package update, not by a new agent release), and the 65 KB of webpki-roots stay off
//! the board's flash.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

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

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        format!("cannot read {} ({why})", path.display())
    })
}

/// Where Linux distributions keep the system CA bundle, in the order Go's crypto/x509 tries
/// them.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Arch, Alpine, Gentoo
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/pki/tls/cacert.pem",            // OpenELEC
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
    "/etc/ssl/cert.pem",                  // Alpine, Buildroot
];

/// The first of `candidates` that exists, and its certificates. The error is a phrase for a
/// config message: no bundle, or the first one found is unusable.
pub fn system_roots(candidates: &[&str]) -> Result<(PathBuf, Vec<CertificateDer<'static>>), String> {
    let Some(found) = candidates.iter().map(Path::new).find(|p| p.exists()) else {
        return Err(format!("no system CA bundle found (looked for {})", candidates.join(", ")));
    };
    Ok((found.to_path_buf(), read_ca_file(found)?))
}

/// Builds the client config that trusts only `roots`. `client_auth`: certificate chain and
/// key for mTLS.
pub fn client_config(
    roots: Vec<CertificateDer<'static>>,
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, String> {
    let mut store = RootCertStore::empty();
    // A system bundle may hold a certificate webpki cannot parse; the rest still count.
    store.add_parsable_certificates(roots);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem(name: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn the_first_system_bundle_that_exists_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (absent, first, second) =
            (dir.path().join("absent.pem"), dir.path().join("a.pem"), dir.path().join("b.pem"));
        fs::write(&first, ca_pem("first") + &ca_pem("second")).unwrap();
        fs::write(&second, ca_pem("third")).unwrap();
        let names: Vec<String> = [&absent, &first, &second].iter().map(|p| p.display().to_string()).collect();
        let candidates: Vec<&str> = names.iter().map(String::as_str).collect();
        let (found, certs) = system_roots(&candidates).unwrap();
        assert_eq!(found, first);
        assert_eq!(certs.len(), 2);
    }

    #[test]
    fn without_a_system_bundle_the_error_says_where_it_looked() {
        let e = system_roots(&["/nonexistent/ca.crt", "/nonexistent/cert.pem"]).unwrap_err();
        assert!(e.contains("no system CA bundle found") && e.contains("/nonexistent/cert.pem"), "{e}");
    }

    #[test]
    fn a_system_bundle_without_certificates_is_reported_rather_than_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "").unwrap();
        let e = system_roots(&[empty.to_str().unwrap()]).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }

    #[test]
    fn the_client_config_trusts_exactly_the_given_roots() {
        let pem = ca_pem("only");
        let roots: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().unwrap();
        assert!(client_config(roots, None).is_ok());
    }
}
