//! Leaf certificates for intercepted hosts: minted by the guardian CA, cached in a bounded LRU.
//!
//! A leaf has one SAN (the DNS name or IP address the client asked for), the serverAuth EKU, a fresh ECDSA
//! P-256 key, and a validity of at most [`LEAF_VALIDITY`] that never runs past the CA's own end.
//!
//! Cost, measured on the 2-core development machine with the debug test build
//! (`cargo test --test integration tls::mint_timing -- --nocapture`): one mint (P-256 keygen + sign) takes
//! 0.15 to 0.3 ms, a cache hit about 1.5 µs; a leaf is about 450 bytes of DER. A miss still goes to `spawn_blocking`, so a burst of new hosts never
//! holds up the reactor threads; hits are a mutex-guarded map lookup.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use lru::LruCache;
use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SanType};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use super::ca::{GuardianCa, BACKDATE};
use super::provider;

/// Longest validity of a leaf (notBefore to notAfter).
pub const LEAF_VALIDITY: Duration = Duration::days(30);
/// A cached leaf this close to its end is minted again.
pub const LEAF_RENEW_BEFORE: Duration = Duration::days(1);
/// Default number of cached leaves (each about 450 bytes of DER plus its key: well under 1 MiB when full).
pub const DEFAULT_LEAF_CACHE: usize = 1024;

/// The name a leaf is minted for: a DNS name (lowercase, no trailing dot) or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeafName {
    /// A host name.
    Dns(String),
    /// An IP address (`[v6]` brackets are accepted on input).
    Ip(IpAddr),
}

impl LeafName {
    /// Parses a host as it appears in SNI or a CONNECT authority (without port).
    pub fn parse(host: &str) -> Result<LeafName, MintError> {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(LeafName::Ip(ip));
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !ok {
            return Err(MintError::InvalidName(host.chars().take(80).collect()));
        }
        Ok(LeafName::Dns(name))
    }

    /// The cache key and display form.
    pub fn as_key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for LeafName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeafName::Dns(n) => f.write_str(n),
            LeafName::Ip(ip) => ip.fmt(f),
        }
    }
}

/// Why a leaf could not be minted. `InvalidName` is the peer's fault; the others are local.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MintError {
    /// The host is neither a DNS name nor an IP address.
    InvalidName(String),
    /// The CA has expired: run `ca init --force`.
    CaExpired,
    /// rcgen or rustls refused (a local fault).
    Sign(String),
}

impl fmt::Display for MintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MintError::InvalidName(h) => write!(f, "{h:?} is not a host name or IP address"),
            MintError::CaExpired => {
                write!(
                    f,
                    "the guardian CA has expired; run `picoclaw-traffic-guardian ca init --force`, then `ca bundle`"
                )
            }
            MintError::Sign(e) => write!(f, "could not mint a leaf certificate: {e}"),
        }
    }
}

impl std::error::Error for MintError {}

/// A minted leaf, ready for rustls, with its end of validity.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Certificate chain (the leaf alone) and signing key.
    pub key: Arc<CertifiedKey>,
    /// The leaf's notAfter.
    pub not_after: OffsetDateTime,
}

/// Mints a leaf for `name`, signed by `ca`, valid from `now` minus one hour for at most [`LEAF_VALIDITY`].
pub fn mint_leaf(ca: &GuardianCa, name: &LeafName, now: OffsetDateTime) -> Result<Leaf, MintError> {
    if now >= ca.not_after() {
        return Err(MintError::CaExpired);
    }
    let not_before = now - BACKDATE;
    let not_after = (not_before + LEAF_VALIDITY).min(ca.not_after());
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| MintError::Sign(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let text = name.to_string();
    // The CN is for people reading the certificate; clients match the SAN. X.520 caps a CN at 64 characters.
    if text.len() <= 64 {
        dn.push(DnType::CommonName, text.as_str());
    }
    params.distinguished_name = dn;
    params.subject_alt_names = vec![match name {
        LeafName::Dns(n) => SanType::DnsName(n.clone().try_into().map_err(|_| MintError::InvalidName(n.clone()))?),
        LeafName::Ip(ip) => SanType::IpAddress(*ip),
    }];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, ca.issuer()).map_err(|e| MintError::Sign(e.to_string()))?;
    let der_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = provider().key_provider.load_private_key(der_key).map_err(|e| MintError::Sign(e.to_string()))?;
    Ok(Leaf { key: Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)), not_after })
}

/// Leaves by name, bounded (least recently used goes first), shared by every connection.
pub struct LeafCache {
    ca: Arc<GuardianCa>,
    entries: Mutex<LruCache<String, Leaf>>,
    minted: AtomicU64,
}

impl fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafCache").field("len", &self.len()).field("minted", &self.minted()).finish_non_exhaustive()
    }
}

impl LeafCache {
    /// An empty cache holding at most `capacity` leaves signed by `ca`.
    pub fn new(ca: Arc<GuardianCa>, capacity: NonZeroUsize) -> LeafCache {
        LeafCache { ca, entries: Mutex::new(LruCache::new(capacity)), minted: AtomicU64::new(0) }
    }

    /// The CA leaves are signed with.
    pub fn ca(&self) -> &Arc<GuardianCa> {
        &self.ca
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Leaf>> {
        // A panic elsewhere while holding the lock leaves the map intact; keep serving.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached, still fresh leaf for `name`, marking it recently used; never mints.
    pub fn get(&self, name: &LeafName, now: OffsetDateTime) -> Option<Arc<CertifiedKey>> {
        let mut map = self.lock();
        match map.get(&name.as_key()) {
            Some(leaf) if now + LEAF_RENEW_BEFORE < leaf.not_after => Some(leaf.key.clone()),
            _ => None,
        }
    }

    /// Whether a leaf for `name` is cached (fresh or not), without touching the LRU order.
    pub fn contains(&self, name: &str) -> bool {
        LeafName::parse(name).is_ok_and(|n| self.lock().contains(&n.as_key()))
    }

    /// Cached leaves.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no leaf is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Leaves minted since the cache was made.
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    /// Returns the cached leaf or mints one on this thread (about a millisecond: call it from blocking code).
    pub fn get_or_mint_blocking(&self, name: &LeafName, now: OffsetDateTime) -> Result<Arc<CertifiedKey>, MintError> {
        if let Some(hit) = self.get(name, now) {
            return Ok(hit);
        }
        let leaf = mint_leaf(&self.ca, name, now)?;
        self.minted.fetch_add(1, Ordering::Relaxed);
        let mut map = self.lock();
        // Another connection may have minted the same name meanwhile: keep the first, so every connection
        // for a host serves the same certificate.
        if let Some(existing) = map.get(&name.as_key()) {
            if now + LEAF_RENEW_BEFORE < existing.not_after {
                return Ok(existing.key.clone());
            }
        }
        let key = leaf.key.clone();
        map.put(name.as_key(), leaf);
        Ok(key)
    }

    /// Returns the cached leaf, or mints one on tokio's blocking pool so no other connection waits for it.
    pub async fn get_or_mint(self: &Arc<Self>, name: &LeafName) -> Result<Arc<CertifiedKey>, MintError> {
        let now = OffsetDateTime::now_utc();
        if let Some(hit) = self.get(name, now) {
            return Ok(hit);
        }
        let this = Arc::clone(self);
        let owned = name.clone();
        tokio::task::spawn_blocking(move || this.get_or_mint_blocking(&owned, now))
            .await
            .map_err(|e| MintError::Sign(format!("minting task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_normalise() {
        assert_eq!(LeafName::parse("API.Example.com.").unwrap(), LeafName::Dns("api.example.com".into()));
        assert_eq!(LeafName::parse("127.0.0.1").unwrap(), LeafName::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(LeafName::parse("[::1]").unwrap(), LeafName::Ip("::1".parse().unwrap()));
        for bad in ["", "a..b", "exa mple.com", "x/y", &"a".repeat(64), "*.example.com"] {
            assert!(matches!(LeafName::parse(bad), Err(MintError::InvalidName(_))), "{bad:?}");
        }
    }

    #[test]
    fn expired_ca_mints_nothing() {
        let now = OffsetDateTime::now_utc();
        let ca = GuardianCa::generate("t", 1, now - Duration::days(3)).unwrap();
        assert_eq!(mint_leaf(&ca, &LeafName::parse("a.test").unwrap(), now).unwrap_err(), MintError::CaExpired);
    }

    #[test]
    fn leaf_never_outlives_the_ca() {
        let now = OffsetDateTime::now_utc();
        let ca = GuardianCa::generate("t", 2, now).unwrap();
        let leaf = mint_leaf(&ca, &LeafName::parse("a.test").unwrap(), now).unwrap();
        assert_eq!(leaf.not_after, ca.not_after());
    }

    #[test]
    fn stale_entries_are_minted_again() {
        let now = OffsetDateTime::now_utc();
        let ca = Arc::new(GuardianCa::generate("t", 365, now).unwrap());
        let cache = LeafCache::new(ca, NonZeroUsize::MIN);
        let name = LeafName::parse("a.test").unwrap();
        let first = cache.get_or_mint_blocking(&name, now).unwrap();
        let later = now + LEAF_VALIDITY - Duration::hours(2);
        let second = cache.get_or_mint_blocking(&name, later).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(cache.minted(), 2);
    }
}
