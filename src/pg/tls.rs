//! TLS to PostgreSQL with rustls (ring provider), following libpq's `sslmode` semantics rather
//! than tokio-postgres' stricter defaults: `prefer` and `require` encrypt without verifying the
//! certificate, `verify-ca` checks the chain only, `verify-full` checks chain and host name.
//! Roots come from `sslrootcert` when given, else the system store. A client certificate
//! (`sslcert` + `sslkey`, PEM) is presented when the DSN names one, in every TLS mode.

use std::sync::Arc;

use rustls::client::WantsClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ConfigBuilder, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::dsn::{Dsn, SslMode};
use crate::error::{CheckError, ErrorKind};

/// Builds the TLS connector for a DSN, or `None` for `sslmode=disable`.
pub(crate) fn connector(dsn: &Dsn) -> Result<Option<MakeRustlsConnect>, CheckError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CheckError::new(ErrorKind::Tls, format!("tls set-up: {e}")))?;
    let with_client = |b: ConfigBuilder<ClientConfig, WantsClientCert>| match client_cert(dsn)? {
        Some((chain, key)) => b.with_client_auth_cert(chain, key).map_err(|e| {
            CheckError::new(
                ErrorKind::Tls,
                format!(
                    "sslcert/sslkey: the key does not fit the certificate or is not supported: {e}"
                ),
            )
        }),
        None => Ok(b.with_no_client_auth()),
    };
    let config = match dsn.sslmode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => with_client(
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider))),
        )?,
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(roots(dsn)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| CheckError::new(ErrorKind::Tls, format!("tls roots: {e}")))?;
            if dsn.sslmode == SslMode::VerifyCa {
                with_client(
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki))),
                )?
            } else {
                with_client(builder.with_webpki_verifier(webpki))?
            }
        }
    };
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// The client certificate chain and key the DSN names (`sslcert`, `sslkey`), if any. Both or
/// neither: the agent does not look in `~/.postgresql/` as libpq does, so a certificate
/// without its key is a clear error rather than a login that fails later.
fn client_cert(
    dsn: &Dsn,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, CheckError> {
    let (cert, key) = match (&dsn.sslcert, &dsn.sslkey) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) => {
            return Err(CheckError::new(
                ErrorKind::Tls,
                "the DSN sets sslcert but not sslkey: set sslkey to the client certificate's private key (PEM)",
            ));
        }
        (None, Some(_)) => {
            return Err(CheckError::new(
                ErrorKind::Tls,
                "the DSN sets sslkey but not sslcert: set sslcert to the client certificate (PEM)",
            ));
        }
    };
    let read = |what: &str, path: &std::path::Path| {
        crate::files::read(path).map_err(|e| {
            CheckError::new(
                ErrorKind::Tls,
                format!("cannot read {what} {}: {e}", path.display()),
            )
        })
    };
    let pem = read("sslcert", cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CheckError::new(ErrorKind::Tls, format!("sslcert {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(CheckError::new(
            ErrorKind::Tls,
            format!("sslcert {}: no PEM certificate in the file", cert.display()),
        ));
    }
    // The key's bytes never reach a message: only its path and what is wrong.
    let pem = read("sslkey", key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        CheckError::new(
            ErrorKind::Tls,
            format!(
                "sslkey {}: no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1) in the file",
                key.display()
            ),
        )
    })?;
    Ok(Some((chain, key_der)))
}

fn roots(dsn: &Dsn) -> Result<RootCertStore, CheckError> {
    let mut store = RootCertStore::empty();
    match &dsn.sslrootcert {
        Some(path) => {
            let pem = crate::files::read(path).map_err(|e| {
                CheckError::new(
                    ErrorKind::Tls,
                    format!("cannot read sslrootcert {}: {e}", path.display()),
                )
            })?;
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| {
                    CheckError::new(
                        ErrorKind::Tls,
                        format!("sslrootcert {}: {e}", path.display()),
                    )
                })?;
                store.add(c).map_err(|e| {
                    CheckError::new(
                        ErrorKind::Tls,
                        format!("sslrootcert {}: {e}", path.display()),
                    )
                })?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = store.add(c);
            }
        }
    }
    if store.is_empty() {
        return Err(CheckError::new(
            ErrorKind::Tls,
            "no root certificates: set sslrootcert in the DSN",
        ));
    }
    Ok(store)
}

/// libpq `prefer`/`require`: encryption without authentication of the server.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// libpq `verify-ca`: the chain must verify; the host name need not match.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
