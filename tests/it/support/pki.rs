//! A private CA and a server certificate it signed for `localhost` and `127.0.0.1`.

use std::path::PathBuf;

/// The CA and the certificate, in memory and as PEM files (`ca.pem`, `server.crt`,
/// `server.key`) in a temporary directory.
pub struct Pki {
    /// The server's certificate.
    pub cert: rcgen::Certificate,
    /// The server's key.
    pub key: rcgen::KeyPair,
    dir: tempfile::TempDir,
}

impl Pki {
    /// A new CA and certificate.
    pub fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sixpn test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.crt"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        Pki { cert, key, dir }
    }

    /// One of the files, by name.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
