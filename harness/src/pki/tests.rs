//! Unit tests of the parent module.

use super::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn generated_files_are_private() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::temp_dir().join(format!("kh-pki-test-{}", std::process::id()));
    let dir = base.join("pki");
    let pki = ClusterPki::generate(&dir)?;
    assert_eq!(fs::metadata(&dir)?.permissions().mode() & 0o777, 0o700);
    for name in [
        files::APISERVER_KEY,
        files::ADMIN_KEY,
        files::SA_KEY,
        files::FRONT_PROXY_CLIENT_KEY,
    ] {
        assert_eq!(
            fs::metadata(pki.path(name))?.permissions().mode() & 0o777,
            0o600,
            "{name}"
        );
    }
    assert!(pki.admin.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(pki.sa_key_pem.contains("PRIVATE KEY"));
    fs::remove_dir_all(&base)?;
    Ok(())
}

#[test]
fn rustls_accepts_the_generated_chain() -> Result<(), Box<dyn std::error::Error>> {
    let ca = Ca::new("test-ca")?;
    let client = ca.issue(&CertSpec::client("alice", ["devs"]))?;
    rustls_client_config(ca.cert_pem(), Some(&client))?;
    Ok(())
}

/// A self-signed CA as Go writes one: the subject CN a PrintableString.
fn go_like_ca(cn: &str, key: &KeyPair) -> Result<String, Box<dyn std::error::Error>> {
    let mut params = Ca::params(cn);
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        rcgen::DnValue::PrintableString(rcgen::string::PrintableString::try_from(cn)?),
    );
    Ok(params.self_signed(key)?.pem())
}

#[test]
fn a_go_ca_issues_certificates_naming_it_by_the_same_subject_bytes() -> Result<(), Box<dyn std::error::Error>> {
    let key = KeyPair::generate()?;
    let cert = go_like_ca("kubernetes", &key)?;
    let ca = Ca::from_go_pem("kubernetes", &cert, &key.serialize_pem())?;
    let issued = ca.issue(&CertSpec::client("carol", ["qa"]))?;
    let der = pem_body(&issued.cert_pem, "CERTIFICATE")?;
    let subject = printable_cn_name_der("kubernetes");
    assert!(der.windows(subject.len()).any(|w| w == subject.as_slice()));
    rustls_client_config(&cert, Some(&issued))?;
    Ok(())
}

#[test]
fn a_ca_whose_subject_is_encoded_otherwise_is_refused() -> Result<(), Box<dyn std::error::Error>> {
    // Ca::new writes the common name as a UTF8String: Go would never match its issuer.
    let key = KeyPair::generate()?;
    let mut params = Ca::params("kubernetes");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "kubernetes");
    let cert = params.self_signed(&key)?.pem();
    let err = Ca::from_go_pem("kubernetes", &cert, &key.serialize_pem()).err();
    assert!(
        matches!(&err, Some(Error::ForeignCa { reason, .. }) if reason.contains("PrintableString")),
        "{err:?}"
    );
    let err = Ca::from_go_pem("kubernetes", "not a pem", &key.serialize_pem()).err();
    assert!(
        matches!(&err, Some(Error::ForeignCa { reason, .. }) if reason.contains("no CERTIFICATE")),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn a_pkcs1_rsa_key_as_kubeadm_writes_it_is_accepted() -> Result<(), Box<dyn std::error::Error>> {
    // ring generates no RSA keys; openssl does (Debian has it; without it this says so).
    let dir = std::env::temp_dir().join(format!("kh-pki-rsa-{}", std::process::id()));
    create_private_dir(&dir)?;
    let key_path = dir.join("ca.key");
    let made = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key_path)
        .arg("2048")
        .output();
    let pkcs1 = match made {
        Ok(out) if out.status.success() => fs::read_to_string(&key_path)?,
        other => {
            fs::remove_dir_all(&dir)?;
            println!("skipped: openssl could not make an RSA key: {other:?}");
            return Ok(());
        }
    };
    fs::remove_dir_all(&dir)?;
    assert!(pkcs1.contains("-----BEGIN RSA PRIVATE KEY-----"));
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(rsa_pkcs1_to_pkcs8(&pem_body(&pkcs1, "RSA PRIVATE KEY")?));
    let key = KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)?;
    let cert = go_like_ca("kubernetes", &key)?;
    let ca = Ca::from_go_pem("kubernetes", &cert, &pkcs1)?;
    rustls_client_config(&cert, Some(&ca.issue(&CertSpec::client("carol", ["qa"]))?))?;
    Ok(())
}

#[test]
fn der_lengths_over_127_bytes_take_the_long_form() {
    let tlv = der_tlv(0x04, &[0; 300]);
    assert_eq!(&tlv[..4], &[0x04, 0x82, 0x01, 0x2c]);
    assert_eq!(tlv.len(), 304);
    assert_eq!(&der_tlv(0x04, &[1, 2])[..], &[0x04, 0x02, 1, 2]);
}

#[test]
fn an_invalid_dns_name_is_an_error_not_a_panic() -> Result<(), Box<dyn std::error::Error>> {
    let ca = Ca::new("test-ca")?;
    let err = ca.issue(&CertSpec::serving(["bäd.example"], [])).err();
    assert!(matches!(err, Some(Error::Pki { .. })), "{err:?}");
    Ok(())
}
