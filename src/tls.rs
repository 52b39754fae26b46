//! TLS for `rediss://`: the options the user gave (a private CA, a client
//! certificate and key for mutual TLS, the name to verify the server's
//! certificate against, the explicit opt-out of verification), read and
//! checked once into [`Tls`] before any connection; what redis-rs needs from
//! them; and the words for a handshake that failed.

use std::path::{Path, PathBuf};

use redis::{ClientTlsConfig, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::error::Error;
use crate::file;

/// What the user asked for, before any file is read. The flag names in
/// messages are the command line's; each also has an environment variable.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// `--tls-ca-file`: PEM CA certificates to trust instead of the public
    /// web roots.
    pub ca_file: Option<PathBuf>,
    /// `--tls-cert-file`: the PEM client certificate (chain), for servers
    /// that require one (`tls-auth-clients yes`).
    pub cert_file: Option<PathBuf>,
    /// `--tls-key-file`: the PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
    /// `--tls-server-name`: the name the server's certificate must be valid
    /// for, when the address connected to is not that name (Cluster and
    /// Sentinel hand out IP addresses).
    pub server_name: Option<String>,
    /// `--tls-insecure`: verify no server certificate at all.
    pub insecure: bool,
}

impl TlsOptions {
    /// The flags given, as `--tls-...` names, for messages.
    pub fn flags(&self) -> Vec<&'static str> {
        [
            (self.ca_file.is_some(), "--tls-ca-file"),
            (self.cert_file.is_some(), "--tls-cert-file"),
            (self.key_file.is_some(), "--tls-key-file"),
            (self.server_name.is_some(), "--tls-server-name"),
            (self.insecure, "--tls-insecure"),
        ]
        .into_iter()
        .filter_map(|(given, flag)| given.then_some(flag))
        .collect()
    }
}

/// The TLS settings of a `rediss://` target, read and validated: the same
/// for every node the job connects to.
#[derive(Clone, Default)]
pub struct Tls {
    /// PEM CA certificates to trust instead of the public web roots.
    ca: Option<Vec<u8>>,
    /// The PEM client certificate and key, for mutual TLS.
    client: Option<ClientTlsConfig>,
    /// The name to verify the server's certificate against (and to send as
    /// SNI) instead of the host connected to.
    server_name: Option<String>,
    /// Certificate verification is off (`--tls-insecure`).
    insecure: bool,
}

impl Tls {
    /// Reads and checks the files the options name. A client certificate
    /// needs its key and the other way round; `--tls-insecure` verifies
    /// nothing, so a CA or a server name beside it would be silently
    /// ignored and is refused instead. Every failure is a usage error.
    pub fn load(options: &TlsOptions) -> Result<Tls, Error> {
        if options.insecure && (options.ca_file.is_some() || options.server_name.is_some()) {
            return Err(Error::Usage(
                "--tls-insecure verifies no certificate, so --tls-ca-file and \
                 --tls-server-name would be ignored: give either --tls-insecure \
                 or them"
                    .into(),
            ));
        }
        let ca = options
            .ca_file
            .as_deref()
            .map(|path| read_certificates(path, "CA file").map(|(pem, _)| pem))
            .transpose()?;
        let client = match (&options.cert_file, &options.key_file) {
            (Some(cert), Some(key)) => Some(client_certificate(cert, key)?),
            (None, None) => None,
            _ => {
                return Err(Error::Usage(
                    "a client certificate needs both --tls-cert-file and --tls-key-file \
                     (REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE)"
                        .into(),
                ));
            }
        };
        let server_name = options
            .server_name
            .as_deref()
            .map(server_name)
            .transpose()?;
        Ok(Tls {
            ca,
            client,
            server_name,
            insecure: options.insecure,
        })
    }

    /// The name the server's certificate is verified against, when it is
    /// not the host connected to.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// Whether certificate verification is off.
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// The CA and client certificate for redis-rs, or `None` when neither is
    /// set (then the public web roots are trusted and no certificate is
    /// sent).
    pub fn certificates(&self) -> Option<TlsCertificates> {
        (self.ca.is_some() || self.client.is_some()).then(|| TlsCertificates {
            client_tls: self.client.clone(),
            root_cert: self.ca.clone(),
        })
    }

    /// Why a connection's TLS handshake failed, in words that say which
    /// option to look at; `None` when `err` is not a TLS failure. Decided
    /// from rustls's error, found in the error's sources, never from text.
    pub fn explain(&self, err: &redis::RedisError) -> Option<String> {
        let cause = rustls_error(err)?;
        let why = match cause {
            rustls::Error::InvalidCertificate(cert) => self.server_certificate(cert),
            rustls::Error::AlertReceived(alert) => self.alert(*alert),
            _ => "the TLS handshake failed".to_string(),
        };
        Some(format!("{why} ({cause})"))
    }

    /// A server certificate rustls did not accept.
    fn server_certificate(&self, err: &rustls::CertificateError) -> String {
        use rustls::CertificateError::*;
        let hint = match err {
            UnknownIssuer | BadSignature => match self.ca {
                Some(_) => "it is not signed by the CA of --tls-ca-file",
                None => "it is not signed by a public CA: give its CA with --tls-ca-file",
            },
            NotValidForName | NotValidForNameContext { .. } => match self.server_name {
                Some(_) => "it is not valid for the --tls-server-name given",
                None => {
                    "it is not valid for the host connected to: give the name it was \
                     issued for with --tls-server-name"
                }
            },
            _ => "it is not valid",
        };
        format!("the TLS handshake failed: the server's certificate was refused: {hint}")
    }

    /// An alert the server sent during the handshake: after a client
    /// certificate it did not accept, or none where it requires one.
    fn alert(&self, alert: rustls::AlertDescription) -> String {
        use rustls::AlertDescription::*;
        // A TLS 1.2 server also ends a handshake with HandshakeFailure when
        // it shares no protocol version or cipher with the job.
        if alert == HandshakeFailure {
            let certificate = match &self.client {
                None => {
                    "it requires a client certificate (give one with --tls-cert-file and \
                         --tls-key-file)"
                }
                Some(_) => "it refused the client certificate of --tls-cert-file",
            };
            return format!(
                "the TLS handshake failed: the server ended it (HandshakeFailure): {certificate}, \
                 or it has no TLS version or cipher in common with the job (TLS 1.2 with an \
                 ECDHE cipher, or TLS 1.3)"
            );
        }
        let refused = matches!(
            alert,
            CertificateRequired
                | BadCertificate
                | UnsupportedCertificate
                | CertificateRevoked
                | CertificateExpired
                | CertificateUnknown
                | UnknownCA
                | AccessDenied
                | DecryptError
        );
        match (&self.client, refused) {
            (None, true) => "the TLS handshake failed: the server requires a client \
                             certificate: give one with --tls-cert-file and --tls-key-file"
                .into(),
            (Some(_), true) => "the TLS handshake failed: the server refused the client \
                                certificate of --tls-cert-file (is it signed by a CA the \
                                server trusts, and still valid?)"
                .into(),
            (_, false) => "the TLS handshake failed: the server ended it".into(),
        }
    }
}

/// Looks for rustls's error in `err` and what it wraps, by type. redis-rs
/// keeps an I/O error in an `Arc` and exposes the `Arc` as the source; an
/// I/O error holds rustls's error as its inner error, which
/// `std::io::Error::source` skips, so both are opened here.
fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner: Option<&(dyn std::error::Error + 'static)> =
        if let Some(shared) = err.downcast_ref::<Shared>() {
            Some(&**shared)
        } else if let Some(io) = err.downcast_ref::<std::io::Error>() {
            io.get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static))
        } else {
            None
        };
    inner
        .and_then(rustls_error)
        .or_else(|| err.source().and_then(rustls_error))
}

/// A file of PEM certificates (a CA bundle, a client certificate chain):
/// its bytes and the certificates in it, at least one.
fn read_certificates(
    path: &Path,
    what: &str,
) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), Error> {
    let pem = read(path, what)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| {
            Error::Usage(format!(
                "the TLS {what} {} is not valid PEM: {err}",
                path.display()
            ))
        })?;
    if certificates.is_empty() {
        return Err(Error::Usage(format!(
            "the TLS {what} {} holds no PEM certificate",
            path.display()
        )));
    }
    // Each must be a certificate rustls can read, as it will when the
    // handshake needs it: a mistake found now is a usage error, not a
    // failure to connect that the Job would retry.
    for (i, certificate) in certificates.iter().enumerate() {
        rustls::RootCertStore::empty()
            .add(certificate.clone())
            .map_err(|err| {
                Error::Usage(format!(
                    "the TLS {what} {}: its certificate {} of {} is not a valid X.509 \
                     certificate: {err}",
                    path.display(),
                    i + 1,
                    certificates.len()
                ))
            })?;
    }
    Ok((pem, certificates))
}

/// The client certificate and its key, once the key is known to be the
/// certificate's (else the handshake would fail later, less clearly).
fn client_certificate(cert: &Path, key: &Path) -> Result<ClientTlsConfig, Error> {
    let (client_cert, chain) = read_certificates(cert, "client certificate file")?;
    let client_key = read(key, "key file")?;
    let private_key = PrivateKeyDer::from_pem_slice(&client_key).map_err(|err| {
        Error::Usage(format!(
            "the TLS key file {} holds no PEM private key: {err}",
            key.display()
        ))
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, private_key, &provider).map_err(|err| {
        Error::Usage(format!(
            "the TLS key file {} is not the key of the client certificate {}: {err}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok(ClientTlsConfig {
        client_cert,
        client_key,
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    file::read(path).map_err(|err| {
        Error::Usage(format!(
            "cannot read the TLS {what} {}: {err}",
            path.display()
        ))
    })
}

/// A server name rustls can verify: a DNS name or an IP address.
fn server_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    rustls::pki_types::ServerName::try_from(name).map_err(|_| {
        Error::Usage(format!(
            "--tls-server-name {name:?} is neither a DNS name nor an IP address"
        ))
    })?;
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_without_its_key_is_refused_and_the_other_way_round() {
        for (cert, key) in [(Some("c.pem"), None), (None, Some("k.pem"))] {
            let options = TlsOptions {
                cert_file: cert.map(PathBuf::from),
                key_file: key.map(PathBuf::from),
                ..TlsOptions::default()
            };
            let err = Tls::load(&options).err().expect("refused");
            assert!(matches!(err, Error::Usage(_)), "{err:?}");
            let message = err.to_string();
            assert!(
                message.contains("--tls-cert-file") && message.contains("--tls-key-file"),
                "{message}"
            );
        }
    }

    #[test]
    fn an_unreadable_or_empty_file_is_a_usage_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        for path in [&missing, &empty] {
            let options = TlsOptions {
                ca_file: Some(path.clone()),
                ..TlsOptions::default()
            };
            let err = Tls::load(&options).err().expect("refused");
            assert!(matches!(err, Error::Usage(_)), "{err:?}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn insecure_refuses_the_options_it_would_ignore() {
        for options in [
            TlsOptions {
                insecure: true,
                server_name: Some("redis.test".into()),
                ..TlsOptions::default()
            },
            TlsOptions {
                insecure: true,
                ca_file: Some("ca.pem".into()),
                ..TlsOptions::default()
            },
        ] {
            let err = Tls::load(&options).err().expect("refused");
            assert!(matches!(err, Error::Usage(_)), "{err:?}");
        }
        let insecure = TlsOptions {
            insecure: true,
            ..TlsOptions::default()
        };
        assert!(Tls::load(&insecure).unwrap().is_insecure());
    }

    #[test]
    fn a_server_name_is_a_dns_name_or_an_ip_address() {
        assert_eq!(server_name(" redis.test ").unwrap(), "redis.test");
        assert_eq!(server_name("10.0.0.1").unwrap(), "10.0.0.1");
        for bad in ["", "a b", "redis..test"] {
            assert!(server_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_names_the_options_given() {
        let options = TlsOptions {
            key_file: Some("k.pem".into()),
            insecure: true,
            ..TlsOptions::default()
        };
        assert_eq!(options.flags(), ["--tls-key-file", "--tls-insecure"]);
        assert!(TlsOptions::default().flags().is_empty());
    }

    #[test]
    fn a_tls_error_is_explained_and_others_are_not() {
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, alert);
        let err = redis::RedisError::from(io);
        let why = Tls::default().explain(&err).expect("a TLS failure");
        assert!(why.contains("--tls-cert-file"), "{why}");
        let plain =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(Tls::default().explain(&plain), None);
    }
}
