//! Test certificates: a CA and leaf certificates it signs (rcgen, ring), written as PEM
//! files the way an operator would hand them to a node or a client.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};

/// A test certificate authority.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A new CA named `name`. Panics on failure (test setup).
pub fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("generate a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-sign the CA");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

impl Ca {
    /// Writes the CA certificate to `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.pem).expect("write the CA certificate");
        path.to_path_buf()
    }
}

/// A leaf certificate and key.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate for `names` (DNS names or IP addresses) signed by `ca`, written as
/// `dir/<file>.crt` and `dir/<file>.key`.
pub fn leaf(ca: &Ca, dir: &Path, file: &str, names: &[&str]) -> Leaf {
    let key = KeyPair::generate().expect("generate a key");
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("leaf parameters");
    let cert = params.signed_by(&key, &ca.issuer).expect("sign the leaf");
    let (c, k) = (
        dir.join(format!("{file}.crt")),
        dir.join(format!("{file}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("write the certificate");
    std::fs::write(&k, key.serialize_pem()).expect("write the key");
    Leaf {
        cert: c,
        key: k,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}
