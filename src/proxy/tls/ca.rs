//! The guardian CA on disk (`<home>/ca/ca.pem`, `<home>/ca/ca.key.pem`) and the trust bundle.
//!
//! The CA is an ECDSA P-256 certificate with `CA:TRUE, pathlen:0` and key usages keyCertSign + cRLSign: it can
//! sign leaves and nothing that signs further. It is trusted only by the monitored process, through the
//! bundle file handed to it in its own environment; nothing here touches the system trust store.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::home::write_private_atomic;
use crate::home::{self, Home, HomeError};

/// File name of the CA certificate inside `<home>/ca`.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key (PKCS#8 PEM, mode 0600) inside `<home>/ca`.
pub const CA_KEY_FILE: &str = "ca.key.pem";
/// The product name, used in the CA subject so an operator recognises it in any trust store listing.
pub const PRODUCT: &str = "picoclaw-traffic-guardian";
/// Prefix of every guardian CA's common name; the bundle writer drops older guardian CAs by it.
pub const CA_CN_PREFIX: &str = "picoclaw-traffic-guardian CA";
/// How far back `notBefore` is set, so a peer whose clock is a little behind still accepts the certificate.
pub const BACKDATE: Duration = Duration::hours(1);

/// Where the CA files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPaths {
    /// `<home>/ca`, mode 0700.
    pub dir: PathBuf,
    /// The certificate, PEM.
    pub cert: PathBuf,
    /// The private key, PKCS#8 PEM, mode 0600.
    pub key: PathBuf,
}

impl CaPaths {
    /// The CA files of a state home.
    pub fn of(home: &Home) -> CaPaths {
        let dir = home.ca_dir();
        CaPaths { cert: dir.join(CA_CERT_FILE), key: dir.join(CA_KEY_FILE), dir }
    }
}

/// Why the CA could not be made, read or used. Every variant names the file and what to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum CaError {
    /// No CA yet.
    Missing { cert: PathBuf },
    /// `ca init` without `--force` over an existing CA.
    Exists { cert: PathBuf },
    /// The key file can be read by group or others.
    KeyTooOpen { key: PathBuf, mode: u32 },
    /// A file is not what it should be (bad PEM, not a CA, key does not match the certificate).
    Invalid { path: PathBuf, reason: String },
    /// The CA's validity has ended.
    Expired { cert: PathBuf, not_after: OffsetDateTime },
    /// Certificate generation failed (a local fault).
    Generate(String),
    /// The CA directory is unusable.
    Home(HomeError),
    /// The filesystem said no.
    Io { path: PathBuf, source: io::Error },
}

impl fmt::Display for CaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaError::Missing { cert } => write!(
                f,
                "no guardian CA at {}; run `picoclaw-traffic-guardian ca init` to make one",
                cert.display()
            ),
            CaError::Exists { cert } => write!(
                f,
                "a guardian CA already exists at {}; `ca init --force` replaces it (every process that trusts the old one must then get the new bundle)",
                cert.display()
            ),
            CaError::KeyTooOpen { key, mode } => write!(
                f,
                "{} has mode {:o}: the CA key must be readable by you alone; run `chmod 600 {}`",
                key.display(),
                mode & 0o7777,
                key.display()
            ),
            CaError::Invalid { path, reason } => write!(
                f,
                "{}: {reason}; run `picoclaw-traffic-guardian ca init --force` to make a new CA",
                path.display()
            ),
            CaError::Expired { cert, not_after } => write!(
                f,
                "the guardian CA at {} expired on {}; run `picoclaw-traffic-guardian ca init --force`, then `ca bundle`",
                cert.display(),
                rfc3339(*not_after)
            ),
            CaError::Generate(e) => write!(f, "could not generate the CA: {e}"),
            CaError::Home(e) => e.fmt(f),
            CaError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for CaError {}

impl From<HomeError> for CaError {
    fn from(e: HomeError) -> Self {
        CaError::Home(e)
    }
}

/// A loaded or freshly made guardian CA: its certificate and the issuer that signs leaves.
pub struct GuardianCa {
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    subject: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl fmt::Debug for GuardianCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of debug output.
        f.debug_struct("GuardianCa")
            .field("subject", &self.subject)
            .field("fingerprint_sha256", &self.fingerprint_sha256())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl GuardianCa {
    /// Makes a new CA named after `hostname`, valid from `now` (minus [`BACKDATE`]) for `validity_days`.
    pub fn generate(hostname: &str, validity_days: u32, now: OffsetDateTime) -> Result<GuardianCa, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Generate(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, ca_common_name(hostname));
        dn.push(DnType::OrganizationName, PRODUCT);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::days(i64::from(validity_days));
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(|e| CaError::Generate(e.to_string()))?;
        GuardianCa::from_parts(cert.der().clone(), key, Path::new(CA_CERT_FILE))
    }

    /// Loads the CA from `paths`, checking the key's mode, that the key matches the certificate, and that the
    /// certificate is a CA. An expired CA loads (so `ca show` can report it); [`GuardianCa::check_valid_at`]
    /// refuses it for signing.
    pub fn load(paths: &CaPaths) -> Result<GuardianCa, CaError> {
        let cert_pem = match fs::read(&paths.cert) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(CaError::Missing { cert: paths.cert.clone() }),
            Err(source) => return Err(CaError::Io { path: paths.cert.clone(), source }),
        };
        let meta = fs::metadata(&paths.key).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => {
                CaError::Invalid { path: paths.key.clone(), reason: "the CA key file is missing".into() }
            }
            _ => CaError::Io { path: paths.key.clone(), source },
        })?;
        if meta.mode() & 0o077 != 0 {
            return Err(CaError::KeyTooOpen { key: paths.key.clone(), mode: meta.mode() });
        }
        let key_pem =
            fs::read_to_string(&paths.key).map_err(|source| CaError::Io { path: paths.key.clone(), source })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Invalid {
            path: paths.key.clone(),
            reason: format!("not a usable private key ({e})"),
        })?;
        let der = CertificateDer::from_pem_slice(&cert_pem)
            .map_err(|e| CaError::Invalid { path: paths.cert.clone(), reason: format!("no PEM certificate ({e})") })?;
        GuardianCa::from_parts(der, key, &paths.cert)
    }

    fn from_parts(der: CertificateDer<'static>, key: KeyPair, path: &Path) -> Result<GuardianCa, CaError> {
        let invalid = |reason: String| CaError::Invalid { path: path.to_path_buf(), reason };
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| invalid(format!("not an X.509 certificate ({e})")))?;
        let is_ca = matches!(x509.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        if !is_ca {
            return Err(invalid("the certificate is not a CA (no CA basic constraint)".into()));
        }
        if x509.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(invalid("the certificate does not belong to the key in ca.key.pem".into()));
        }
        let subject = x509.subject().to_string();
        let not_before = x509.validity().not_before.to_datetime();
        let not_after = x509.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| invalid(format!("unusable as issuer ({e})")))?;
        Ok(GuardianCa { cert_der: der, issuer, subject, not_before, not_after })
    }

    /// Writes the CA into `paths` (directory 0700, files 0600, each atomically). Without `force` an existing
    /// certificate or key is an error and nothing is written.
    pub fn save(&self, paths: &CaPaths, force: bool) -> Result<(), CaError> {
        home::ensure_private_dir(&paths.dir)?;
        if !force {
            for p in [&paths.cert, &paths.key] {
                if fs::symlink_metadata(p).is_ok() {
                    return Err(CaError::Exists { cert: p.clone() });
                }
            }
        }
        // Key first: a certificate on disk always has its key beside it.
        let key_pem = self.issuer.key().serialize_pem();
        write_private_atomic(&paths.key, key_pem.as_bytes())
            .map_err(|source| CaError::Io { path: paths.key.clone(), source })?;
        write_private_atomic(&paths.cert, self.cert_pem().as_bytes())
            .map_err(|source| CaError::Io { path: paths.cert.clone(), source })?;
        Ok(())
    }

    /// Refuses a CA that is not valid at `now` (leaves it signed would be rejected anyway).
    pub fn check_valid_at(&self, now: OffsetDateTime, cert: &Path) -> Result<(), CaError> {
        if now >= self.not_after {
            return Err(CaError::Expired { cert: cert.to_path_buf(), not_after: self.not_after });
        }
        Ok(())
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> String {
        pem_certificate(&self.cert_der)
    }

    /// The issuer that signs leaves.
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// The subject as an RFC 4514-style string.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Start of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of validity; leaves never outlive it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// SHA-256 of the certificate DER, see [`fingerprint_sha256`].
    pub fn fingerprint_sha256(&self) -> String {
        fingerprint_sha256(&self.cert_der)
    }
}

/// The SHA-256 fingerprint of a certificate's DER as uppercase hex pairs joined by `:`, the form
/// `openssl x509 -noout -fingerprint -sha256` prints, so an operator can compare the two by eye.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex = hex::encode_upper(digest);
    let mut out = String::with_capacity(hex.len() * 3 / 2);
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.extend(pair.iter().map(|&b| char::from(b)));
    }
    out
}

/// The CA's common name: product and host, e.g. `picoclaw-traffic-guardian CA (raspberrypi)`. The host part
/// keeps printable ASCII only and at most 32 characters, so the name stays under X.520's 64-character bound.
pub fn ca_common_name(hostname: &str) -> String {
    let host: String = hostname.chars().filter(|c| c.is_ascii_graphic()).take(32).collect();
    let host = if host.is_empty() { "localhost".to_string() } else { host };
    format!("{CA_CN_PREFIX} ({host})")
}

/// This machine's host name (from `uname`).
pub fn local_hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| CaError::Generate(format!("no randomness for the serial: {e}")))?;
    // A positive 16-byte integer: top bit clear (not negative), first byte non-zero (DER keeps all 16 bytes).
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// One certificate as PEM (64-column base64 lines).
pub fn pem_certificate(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// RFC 3339 UTC with seconds, e.g. `2026-11-24T06:00:00Z`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The roots the bundle starts from, as `rustls-native-certs` found them.
#[derive(Debug, Default)]
pub struct SystemRoots {
    /// The certificates.
    pub certs: Vec<CertificateDer<'static>>,
    /// Problems met while reading them (unreadable files, bad PEM), as text.
    pub errors: Vec<String>,
    /// Where they came from: `SSL_CERT_FILE=...`/`SSL_CERT_DIR=...` when set, else the platform store.
    pub source: String,
}

/// Loads the system roots. `rustls-native-certs` honours `SSL_CERT_FILE` and `SSL_CERT_DIR` of this process
/// and reads the platform store only when neither is set; `source` says which.
pub fn load_system_roots() -> SystemRoots {
    let mut from_env = Vec::new();
    for var in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            from_env.push(format!("{var}={}", v.to_string_lossy()));
        }
    }
    let found = rustls_native_certs::load_native_certs();
    SystemRoots {
        certs: found.certs,
        errors: found.errors.iter().map(ToString::to_string).collect(),
        source: if from_env.is_empty() { "the platform trust store".into() } else { from_env.join(", ") },
    }
}

/// What went into a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleContents {
    /// The PEM text: the system roots, then the guardian CA last.
    pub pem: String,
    /// System roots kept.
    pub roots: usize,
    /// Duplicates dropped.
    pub duplicates: usize,
    /// Older guardian CAs dropped (a bundle handed back in through `SSL_CERT_FILE` must not keep them).
    pub stale_guardian_cas: usize,
}

/// Builds the bundle text: every distinct system root except other guardian CAs, then `ca`.
pub fn bundle_contents(system: &[CertificateDer<'_>], ca: &GuardianCa) -> BundleContents {
    let mut seen: HashSet<&[u8]> = HashSet::new();
    seen.insert(ca.cert_der().as_ref());
    let (mut pem, mut roots, mut duplicates, mut stale) = (String::new(), 0, 0, 0);
    for cert in system {
        if !seen.insert(cert.as_ref()) {
            duplicates += 1;
            continue;
        }
        if is_guardian_ca(cert) {
            stale += 1;
            continue;
        }
        pem.push_str(&pem_certificate(cert));
        roots += 1;
    }
    pem.push_str(&ca.cert_pem());
    BundleContents { pem, roots, duplicates, stale_guardian_cas: stale }
}

fn is_guardian_ca(der: &[u8]) -> bool {
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(der) else { return false };
    let cn = x509.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok().map(str::to_owned));
    cn.is_some_and(|cn| cn.starts_with(CA_CN_PREFIX))
}

/// The fingerprint of the CA certificate stored in `home`, or `None` when there is none (or it is not a PEM
/// certificate). Reads the certificate only, never the key, so status and profile can show it cheaply.
pub fn stored_fingerprint(home: &Home) -> Option<String> {
    let pem = fs::read(CaPaths::of(home).cert).ok()?;
    let der = CertificateDer::from_pem_slice(&pem).ok()?;
    Some(fingerprint_sha256(&der))
}

/// Whether the PEM file at `path` holds the certificate `der`: `Ok(None)` when the file does not exist.
pub fn bundle_holds(path: &Path, der: &[u8]) -> io::Result<Option<bool>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(CertificateDer::pem_slice_iter(&bytes).filter_map(Result::ok).any(|c| c.as_ref() == der)))
}

/// Where a bundle goes: creates the parent private (0700) when it is missing; an existing parent is used as is.
pub fn prepare_bundle_dir(path: &Path) -> Result<(), CaError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => Ok(home::ensure_private_dir(dir)?),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_fingerprint_reads_the_saved_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("h"));
        assert_eq!(stored_fingerprint(&home), None);
        let ca = GuardianCa::generate("host", 30, OffsetDateTime::now_utc()).unwrap();
        ca.save(&CaPaths::of(&home), false).unwrap();
        assert_eq!(stored_fingerprint(&home), Some(ca.fingerprint_sha256()));
    }

    #[test]
    fn fingerprint_is_colon_separated_uppercase_hex() {
        let fp = fingerprint_sha256(b"abc");
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.starts_with("BA:78:16:BF:"), "{fp}");
    }

    #[test]
    fn common_name_is_bounded_and_printable() {
        assert_eq!(ca_common_name("pi"), "picoclaw-traffic-guardian CA (pi)");
        assert_eq!(ca_common_name(""), "picoclaw-traffic-guardian CA (localhost)");
        let long = ca_common_name(&"x\u{7}y ".repeat(100));
        assert!(long.len() <= 64, "{long}");
        assert!(!long.contains('\u{7}'));
    }

    #[test]
    fn pem_round_trips() {
        let ca = GuardianCa::generate("t", 1, OffsetDateTime::now_utc()).unwrap();
        let back = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
        assert_eq!(back.as_ref(), ca.cert_der().as_ref());
        assert!(ca.cert_pem().lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
    }

    #[test]
    fn rfc3339_is_utc_seconds() {
        let t = time::macros::datetime!(2026-04-26 01:02:03 UTC);
        assert_eq!(rfc3339(t), "2026-04-26T01:02:03Z");
    }
}
