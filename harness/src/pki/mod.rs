//! Certificates and keys for a control plane, generated with rcgen.
//!
//! A [`ClusterPki`] holds four authorities, each with its own key:
//! - the **serving CA**, which signs kube-apiserver's serving certificate;
//! - the **client CA** (`--client-ca-file`), which signs user certificates: CN is the user
//!   name, O the groups;
//! - the **front-proxy CA** (`--requestheader-client-ca-file`), which signs the aggregator's
//!   proxy client certificate; extension API servers trust it through
//!   `kube-system/extension-apiserver-authentication`;
//! - the **ServiceAccount signing key** (ECDSA P-256), so TokenRequest works.
//!
//! Further certificates for extension servers come from [`Ca::issue`].
//! Files are written with mode 0600 in a directory of mode 0700.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::error::{Error, Result};

/// The CN of the aggregator's proxy client certificate; it is the one name in
/// `--requestheader-allowed-names`.
pub const FRONT_PROXY_CLIENT_CN: &str = "front-proxy-client";

/// The admin user's name (its certificate carries `O=system:masters`).
pub const ADMIN_USER: &str = "kube-harness-admin";

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct KeyedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for KeyedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCert")
            .field("key_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// What a certificate is for.
#[derive(Debug, Clone, Default)]
pub struct CertSpec {
    /// Subject common name (for client certificates, the user name).
    pub common_name: String,
    /// Subject organizations (for client certificates, the groups).
    pub organizations: Vec<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ips: Vec<IpAddr>,
    /// Usable for TLS server authentication.
    pub server: bool,
    /// Usable for TLS client authentication.
    pub client: bool,
}

impl CertSpec {
    /// A client certificate for `user` in `groups`, as kube-apiserver reads it (CN, O).
    pub fn client(user: impl Into<String>, groups: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            common_name: user.into(),
            organizations: groups.into_iter().map(Into::into).collect(),
            client: true,
            ..Self::default()
        }
    }

    /// A serving certificate for the given DNS names and IPs; the first DNS name (or
    /// `localhost`) is the CN.
    pub fn serving(
        dns_names: impl IntoIterator<Item = impl Into<String>>,
        ips: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        let dns_names: Vec<String> = dns_names.into_iter().map(Into::into).collect();
        Self {
            common_name: dns_names.first().cloned().unwrap_or_else(|| "localhost".into()),
            dns_names,
            ips: ips.into_iter().collect(),
            server: true,
            ..Self::default()
        }
    }
}

/// A certificate authority that can issue certificates.
pub struct Ca {
    name: String,
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("name", &self.name).finish_non_exhaustive()
    }
}

fn pki_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> Error {
    let what = what.into();
    move |source| Error::Pki { what, source }
}

impl Ca {
    /// A new self-signed CA whose subject CN is `name`.
    ///
    /// # Errors
    /// [`Error::Pki`] if key generation or signing fails.
    pub fn new(name: &str) -> Result<Self> {
        let key = KeyPair::generate().map_err(pki_err(name))?;
        let params = Self::params(name);
        let cert = params.self_signed(&key).map_err(pki_err(name))?;
        Ok(Self {
            name: name.to_owned(),
            cert_pem: cert.pem(),
            params,
            key,
        })
    }

    /// A CA made by [`Ca::new`] earlier, from its certificate and key PEM (as written to a
    /// PKI directory). Certificates it issues verify against `cert_pem`.
    ///
    /// # Errors
    /// [`Error::Pki`] if the key cannot be parsed.
    pub fn from_pem(name: &str, cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem).map_err(pki_err(name))?;
        Ok(Self {
            name: name.to_owned(),
            cert_pem: cert_pem.to_owned(),
            params: Self::params(name),
            key,
        })
    }

    /// A CA that Go's `crypto/x509` made (kubeadm's in a kind node, say), from its certificate
    /// and key PEM: a self-signed certificate whose subject is the single common name
    /// `common_name`, and its key as PKCS#8 or as PKCS#1 RSA (`RSA PRIVATE KEY`, as kubeadm
    /// writes it). Go looks an issuer up by the exact bytes of its subject, and writes a
    /// printable common name as a `PrintableString`, so the certificates this CA issues name
    /// their issuer the same way; a CA whose subject is encoded otherwise is refused rather
    /// than issuing certificates nobody would verify.
    ///
    /// # Errors
    /// [`Error::ForeignCa`] naming what does not fit; [`Error::Pki`] for a key rcgen cannot
    /// sign with.
    pub fn from_go_pem(common_name: &str, cert_pem: &str, key_pem: &str) -> Result<Self> {
        let refuse = |reason: String| Error::ForeignCa {
            name: common_name.to_owned(),
            reason,
        };
        let cn = rcgen::string::PrintableString::try_from(common_name)
            .map_err(|e| refuse(format!("its common name is not a PrintableString: {e}")))?;
        let cert_der = pem_body(cert_pem, "CERTIFICATE").map_err(&refuse)?;
        let subject = printable_cn_name_der(common_name);
        if !cert_der.windows(subject.len()).any(|w| w == subject.as_slice()) {
            return Err(refuse(format!(
                "its certificate's subject is not CN={common_name} alone as a PrintableString"
            )));
        }
        let key = if key_pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
            let pkcs1 = pem_body(key_pem, "RSA PRIVATE KEY").map_err(&refuse)?;
            let der = rustls::pki_types::PrivatePkcs8KeyDer::from(rsa_pkcs1_to_pkcs8(&pkcs1));
            KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256).map_err(pki_err(common_name))?
        } else {
            KeyPair::from_pem(key_pem).map_err(pki_err(common_name))?
        };
        let mut params = Self::params(common_name);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, rcgen::DnValue::PrintableString(cn));
        Ok(Self {
            name: common_name.to_owned(),
            cert_pem: cert_pem.to_owned(),
            params,
            key,
        })
    }

    fn params(name: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
    }

    /// The CA certificate, PEM (what goes into a `caBundle` or a `--*-ca-file`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's own certificate and key.
    pub fn keyed_cert(&self) -> KeyedCert {
        KeyedCert {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key.serialize_pem(),
        }
    }

    /// Issue a certificate signed by this CA.
    ///
    /// # Errors
    /// [`Error::Pki`] if key generation or signing fails.
    pub fn issue(&self, spec: &CertSpec) -> Result<KeyedCert> {
        let what = format!("{} (issued by {})", spec.common_name, self.name);
        let key = KeyPair::generate().map_err(pki_err(what.clone()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, spec.common_name.as_str());
        for org in &spec.organizations {
            params.distinguished_name.push(DnType::OrganizationName, org.as_str());
        }
        for dns in &spec.dns_names {
            let name = dns.clone().try_into().map_err(pki_err(what.clone()))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .extend(spec.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        if spec.server {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(pki_err(what))?;
        Ok(KeyedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The DER of the first PEM block labelled `label` in `pem`.
fn pem_body(pem: &str, label: &str) -> std::result::Result<Vec<u8>, String> {
    use base64::Engine as _;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = pem
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body)
        .ok_or_else(|| format!("no {label} PEM block"))?;
    let text: String = body.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("its {label} PEM block is not base64: {e}"))
}

/// A DER tag-length-value.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The DER of the X.501 name `CN=<cn>` with the common name as a PrintableString (how Go
/// writes it).
fn printable_cn_name_der(cn: &str) -> Vec<u8> {
    const COMMON_NAME_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let mut attribute = COMMON_NAME_OID.to_vec();
    attribute.extend(der_tlv(0x13, cn.as_bytes()));
    der_tlv(0x30, &der_tlv(0x31, &der_tlv(0x30, &attribute)))
}

/// A PKCS#1 RSAPrivateKey wrapped as a PKCS#8 PrivateKeyInfo (version 0, rsaEncryption).
fn rsa_pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    const VERSION_0: [u8; 3] = [0x02, 0x01, 0x00];
    const RSA_ENCRYPTION: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut info = VERSION_0.to_vec();
    info.extend(RSA_ENCRYPTION);
    info.extend(der_tlv(0x04, pkcs1));
    der_tlv(0x30, &info)
}

/// Every certificate and key a local control plane needs, and where they were written.
#[derive(Debug)]
pub struct ClusterPki {
    /// Signs kube-apiserver's serving certificate.
    pub serving_ca: Ca,
    /// Signs user client certificates (`--client-ca-file`).
    pub client_ca: Ca,
    /// Signs the aggregator's proxy client certificate (`--requestheader-client-ca-file`).
    pub front_proxy_ca: Ca,
    /// kube-apiserver's serving certificate.
    pub apiserver: KeyedCert,
    /// The admin's client certificate (`O=system:masters`).
    pub admin: KeyedCert,
    /// The aggregator's proxy client certificate.
    pub front_proxy_client: KeyedCert,
    /// ServiceAccount token signing key, PKCS#8 PEM.
    pub sa_key_pem: String,
    /// Its public key, PEM.
    pub sa_pub_pem: String,
    dir: PathBuf,
}

const SERVING_CA_NAME: &str = "kube-harness-serving-ca";
const CLIENT_CA_NAME: &str = "kube-harness-client-ca";
const FRONT_PROXY_CA_NAME: &str = "kube-harness-front-proxy-ca";

/// File names inside the PKI directory.
pub mod files {
    /// Serving CA key (so a process attaching to the cluster can issue certificates too).
    pub const SERVING_CA_KEY: &str = "serving-ca.key";
    /// Client CA key (to issue user certificates).
    pub const CLIENT_CA_KEY: &str = "client-ca.key";
    /// Front-proxy CA key.
    pub const FRONT_PROXY_CA_KEY: &str = "front-proxy-ca.key";
    /// Serving CA certificate.
    pub const SERVING_CA: &str = "serving-ca.crt";
    /// Client CA certificate.
    pub const CLIENT_CA: &str = "client-ca.crt";
    /// Front-proxy CA certificate.
    pub const FRONT_PROXY_CA: &str = "front-proxy-ca.crt";
    /// kube-apiserver serving certificate.
    pub const APISERVER_CRT: &str = "apiserver.crt";
    /// kube-apiserver serving key.
    pub const APISERVER_KEY: &str = "apiserver.key";
    /// Proxy client certificate.
    pub const FRONT_PROXY_CLIENT_CRT: &str = "front-proxy-client.crt";
    /// Proxy client key.
    pub const FRONT_PROXY_CLIENT_KEY: &str = "front-proxy-client.key";
    /// Admin client certificate.
    pub const ADMIN_CRT: &str = "admin.crt";
    /// Admin client key.
    pub const ADMIN_KEY: &str = "admin.key";
    /// ServiceAccount signing key.
    pub const SA_KEY: &str = "sa.key";
    /// ServiceAccount public key.
    pub const SA_PUB: &str = "sa.pub";
}

impl ClusterPki {
    /// Generate everything and write it into `dir` (created with mode 0700).
    ///
    /// # Errors
    /// [`Error::Pki`] on generation failures, [`Error::Io`] when files cannot be written.
    pub fn generate(dir: &Path) -> Result<Self> {
        let serving_ca = Ca::new(SERVING_CA_NAME)?;
        let client_ca = Ca::new(CLIENT_CA_NAME)?;
        let front_proxy_ca = Ca::new(FRONT_PROXY_CA_NAME)?;
        let apiserver = serving_ca.issue(&CertSpec::serving(
            [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            [
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
                IpAddr::from([10, 0, 0, 1]),
            ],
        ))?;
        let admin = client_ca.issue(&CertSpec::client(ADMIN_USER, ["system:masters"]))?;
        let front_proxy_client =
            front_proxy_ca.issue(&CertSpec::client(FRONT_PROXY_CLIENT_CN, Vec::<String>::new()))?;
        let sa = KeyPair::generate().map_err(pki_err("service-account signing key"))?;
        let pki = Self {
            sa_key_pem: sa.serialize_pem(),
            sa_pub_pem: sa.public_key_pem(),
            serving_ca,
            client_ca,
            front_proxy_ca,
            apiserver,
            admin,
            front_proxy_client,
            dir: dir.to_owned(),
        };
        pki.write()?;
        Ok(pki)
    }

    /// Read a PKI directory written by [`ClusterPki::generate`] (by this process or another,
    /// such as a detached `kube-harness up`).
    ///
    /// # Errors
    /// [`Error::Io`] naming a missing file, [`Error::Pki`] for an unparsable key.
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(Error::io("read", &path))
        };
        let keyed = |crt: &str, key: &str| -> Result<KeyedCert> {
            Ok(KeyedCert {
                cert_pem: read(crt)?,
                key_pem: read(key)?,
            })
        };
        Ok(Self {
            serving_ca: Ca::from_pem(
                SERVING_CA_NAME,
                &read(files::SERVING_CA)?,
                &read(files::SERVING_CA_KEY)?,
            )?,
            client_ca: Ca::from_pem(CLIENT_CA_NAME, &read(files::CLIENT_CA)?, &read(files::CLIENT_CA_KEY)?)?,
            front_proxy_ca: Ca::from_pem(
                FRONT_PROXY_CA_NAME,
                &read(files::FRONT_PROXY_CA)?,
                &read(files::FRONT_PROXY_CA_KEY)?,
            )?,
            apiserver: keyed(files::APISERVER_CRT, files::APISERVER_KEY)?,
            admin: keyed(files::ADMIN_CRT, files::ADMIN_KEY)?,
            front_proxy_client: keyed(files::FRONT_PROXY_CLIENT_CRT, files::FRONT_PROXY_CLIENT_KEY)?,
            sa_key_pem: read(files::SA_KEY)?,
            sa_pub_pem: read(files::SA_PUB)?,
            dir: dir.to_owned(),
        })
    }

    fn write(&self) -> Result<()> {
        create_private_dir(&self.dir)?;
        let (serving_ca_key, client_ca_key, front_proxy_ca_key) = (
            self.serving_ca.key.serialize_pem(),
            self.client_ca.key.serialize_pem(),
            self.front_proxy_ca.key.serialize_pem(),
        );
        let entries: [(&str, &str); 14] = [
            (files::SERVING_CA_KEY, &serving_ca_key),
            (files::CLIENT_CA_KEY, &client_ca_key),
            (files::FRONT_PROXY_CA_KEY, &front_proxy_ca_key),
            (files::SERVING_CA, self.serving_ca.cert_pem()),
            (files::CLIENT_CA, self.client_ca.cert_pem()),
            (files::FRONT_PROXY_CA, self.front_proxy_ca.cert_pem()),
            (files::APISERVER_CRT, &self.apiserver.cert_pem),
            (files::APISERVER_KEY, &self.apiserver.key_pem),
            (files::FRONT_PROXY_CLIENT_CRT, &self.front_proxy_client.cert_pem),
            (files::FRONT_PROXY_CLIENT_KEY, &self.front_proxy_client.key_pem),
            (files::ADMIN_CRT, &self.admin.cert_pem),
            (files::ADMIN_KEY, &self.admin.key_pem),
            (files::SA_KEY, &self.sa_key_pem),
            (files::SA_PUB, &self.sa_pub_pem),
        ];
        for (name, content) in entries {
            write_private(&self.dir.join(name), content.as_bytes())?;
        }
        Ok(())
    }

    /// The directory holding the files named in [`files`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of one file in [`files`].
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Create `dir` (and parents) and set its mode to 0700.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io("create directory", dir))?;
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(Error::io("chmod 0700", dir))
}

/// Write `content` to `path` with mode 0600, replacing what was there.
pub(crate) fn write_private(path: &Path, content: &[u8]) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io("create", path))?;
    file.write_all(content).map_err(Error::io("write", path))
}

/// A rustls client configuration that trusts `ca_pem` and, if given, authenticates with a
/// client certificate.
///
/// # Errors
/// [`Error::Client`] if the PEM does not parse or rustls rejects it.
pub fn rustls_client_config(ca_pem: &str, client: Option<&KeyedCert>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let boxed = |e: &dyn std::fmt::Display| Error::Client(e.to_string().into());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| boxed(&e))?).map_err(|e| boxed(&e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| boxed(&e))?
        .with_root_certificates(roots);
    let config = match client {
        Some(kc) => {
            let chain = CertificateDer::pem_slice_iter(kc.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| boxed(&e))?;
            let key = PrivateKeyDer::from_pem_slice(kc.key_pem.as_bytes()).map_err(|e| boxed(&e))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| boxed(&e))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

#[cfg(test)]
mod tests;
