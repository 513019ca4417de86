//! HTTPS inspection building blocks: the `ca` commands through the real binary, leaf minting and caching,
//! and `Interceptor::intercept` end to end over real sockets on 127.0.0.1.

use std::fs;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use picoclaw_traffic_guardian::proxy::tls::{
    self, ca::CaPaths, upstream_client_config, upstream_roots, GuardianCa, InterceptError, InterceptErrorKind,
    Interceptor, LeafCache, LeafName,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::util::{guardian, output, stdout};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o777
}

fn init_fingerprint(text: &str) -> String {
    let line = text.lines().find(|l| l.contains("SHA-256 fingerprint:")).expect("a fingerprint line");
    line.rsplit(' ').next().unwrap().to_string()
}

/// A self-signed test CA (not a guardian CA) and its issuer.
fn test_ca(cn: &str) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    (cert.der().clone(), Issuer::new(params, key))
}

/// A server certificate for `names`, signed by `issuer`, valid over `[not_before, not_after]`.
fn server_cert(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.der().clone(), PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

// ---------------------------------------------------------------------------------------------------------
// `ca` commands through the binary

#[test]
fn ca_init_writes_private_files_refuses_overwrite_and_force_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let paths = CaPaths { dir: home.join("ca"), cert: home.join("ca/ca.pem"), key: home.join("ca/ca.key.pem") };

    let o = output(guardian(&home).args(["ca", "init"]));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("created the guardian CA"), "{text}");
    assert!(text.contains("ca bundle"), "{text}");
    assert!(text.contains(&home.join("ca/trust-bundle.pem").display().to_string()), "{text}");
    assert_eq!(mode(&paths.dir), 0o700);
    assert_eq!(mode(&paths.cert), 0o600);
    assert_eq!(mode(&paths.key), 0o600);
    // No temp files left behind by the atomic writes.
    assert_eq!(fs::read_dir(&paths.dir).unwrap().count(), 2);

    // The printed fingerprint is the SHA-256 of the certificate DER, AA:BB:.. form.
    let fp = init_fingerprint(&text);
    let der = CertificateDer::from_pem_file(&paths.cert).unwrap();
    let expected: Vec<String> = Sha256::digest(der.as_ref()).iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(fp, expected.join(":"));

    // The CA itself: P-256, CA with pathlen 0, keyCertSign + cRLSign, subject naming product and host.
    let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let bc = x509.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = x509.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    let cn = x509.subject().iter_common_name().next().unwrap().as_str().unwrap().to_string();
    assert!(cn.starts_with("picoclaw-traffic-guardian CA ("), "{cn}");
    let days = (x509.validity().not_after.timestamp() - x509.validity().not_before.timestamp()) / 86_400;
    assert_eq!(days, 365, "default ca_validity_days, plus the one-hour backdate rounding down");
    assert_eq!(x509.public_key().algorithm.algorithm, x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY);

    // Refuses without --force, leaving the files as they were.
    let before = fs::read(&paths.key).unwrap();
    let o = output(guardian(&home).args(["ca", "init"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(fs::read(&paths.key).unwrap(), before);

    // --force replaces: a new key, a new fingerprint, still private.
    let o = output(guardian(&home).args(["ca", "init", "--force"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("replaced the guardian CA"));
    assert_ne!(init_fingerprint(&stdout(&o)), fp);
    assert_ne!(fs::read(&paths.key).unwrap(), before);
    assert_eq!(mode(&paths.key), 0o600);
}

#[test]
fn ca_validity_comes_from_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let cfg = tmp.path().join("c.json");
    fs::write(&cfg, br#"{"ca_validity_days": 10}"#).unwrap();
    let o = output(guardian(&home).args(["ca", "init", "--config"]).arg(&cfg));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let ca = GuardianCa::load(&CaPaths::of(&picoclaw_traffic_guardian::home::Home::at(&home))).unwrap();
    let span = ca.not_after() - ca.not_before();
    assert!(span > time::Duration::days(10) && span <= time::Duration::days(10) + time::Duration::hours(1));
}

#[test]
fn ca_show_reports_missing_ca_then_json_with_a_stable_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let o = output(guardian(&home).args(["ca", "show", "--json"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("run `picoclaw-traffic-guardian ca init`"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());

    let o = output(guardian(&home).args(["ca", "init"]));
    let fp = init_fingerprint(&stdout(&o));
    let show = |home: &Path| -> Value {
        let o = output(guardian(home).args(["ca", "show", "--json"]));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let v = show(&home);
    assert_eq!(v["fingerprint_sha256"], fp.as_str());
    assert_eq!(show(&home)["fingerprint_sha256"], fp.as_str(), "stable across reads");
    assert_eq!(v["cert_path"], home.join("ca/ca.pem").display().to_string());
    assert_eq!(v["key_path"], home.join("ca/ca.key.pem").display().to_string());
    assert_eq!(v["bundle_path"], home.join("ca/trust-bundle.pem").display().to_string());
    assert_eq!(v["bundle_exists"], false);
    assert_eq!(v["bundle_has_ca"], false);
    assert_eq!(v["expired"], false);
    let nb = v["not_before"].as_str().unwrap();
    let na = v["not_after"].as_str().unwrap();
    assert!(nb.ends_with('Z') && na.ends_with('Z') && nb < na, "{nb} {na}");
    assert!(v["subject"].as_str().unwrap().contains("picoclaw-traffic-guardian CA"));

    // Text form names the missing bundle and how to write it.
    let o = output(guardian(&home).args(["ca", "show"]));
    assert!(stdout(&o).contains("missing: run `picoclaw-traffic-guardian ca bundle`"), "{}", stdout(&o));

    // A key readable by others is refused with the fix.
    let key = home.join("ca/ca.key.pem");
    fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let o = output(guardian(&home).args(["ca", "show"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
}

#[test]
fn ca_bundle_is_the_controlled_roots_plus_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    // The machine sets SSL_CERT_FILE globally, and rustls-native-certs honours it: the test hands the binary
    // a scratch roots file through SSL_CERT_FILE (the environment is otherwise cleared, so no SSL_CERT_DIR).
    let (root_a, _) = test_ca("Test Root A");
    let (root_b, _) = test_ca("Test Root B");
    let stale = GuardianCa::generate("old-host", 5, now()).unwrap();
    let mut roots_pem = String::new();
    for der in [&root_a, &root_b, &root_a, stale.cert_der()] {
        roots_pem.push_str(&tls::ca::pem_certificate(der));
    }
    let roots_file = tmp.path().join("roots.pem");
    fs::write(&roots_file, &roots_pem).unwrap();

    let o = output(guardian(&home).env("SSL_CERT_FILE", &roots_file).args(["ca", "bundle"]));
    assert_eq!(o.status.code(), Some(1), "no CA yet");
    assert!(stderr(&o).contains("ca init"), "{}", stderr(&o));

    assert_eq!(output(guardian(&home).args(["ca", "init"])).status.code(), Some(0));
    let o = output(guardian(&home).env("SSL_CERT_FILE", &roots_file).args(["ca", "bundle"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("2 system roots"), "{text}");
    assert!(text.contains(&format!("SSL_CERT_FILE={}", roots_file.display())), "{text}");
    assert!(text.contains("left out 1 older guardian CA"), "{text}");

    let bundle = home.join("ca/trust-bundle.pem");
    assert_eq!(mode(&bundle), 0o600);
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&bundle).unwrap().collect::<Result<_, _>>().unwrap();
    let ca_der = CertificateDer::from_pem_file(home.join("ca/ca.pem")).unwrap();
    // rustls-native-certs may reorder the roots; the guardian CA always comes last.
    assert_eq!(certs.len(), 3, "two distinct roots, the duplicate and the stale guardian CA dropped");
    assert!(certs[..2].contains(&root_a) && certs[..2].contains(&root_b));
    assert_eq!(certs[2], ca_der);

    let o = output(guardian(&home).args(["ca", "show", "--json"]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["bundle_exists"].as_bool(), v["bundle_has_ca"].as_bool()), (Some(true), Some(true)));

    // A new CA makes the old bundle stale, and `ca show` says so.
    assert_eq!(output(guardian(&home).args(["ca", "init", "--force"])).status.code(), Some(0));
    let o = output(guardian(&home).args(["ca", "show", "--json"]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["bundle_exists"].as_bool(), v["bundle_has_ca"].as_bool()), (Some(true), Some(false)));

    // No roots at all: refuse, and leave the existing bundle alone.
    let empty = tmp.path().join("empty.pem");
    fs::write(&empty, b"").unwrap();
    let before = fs::read(&bundle).unwrap();
    let o = output(guardian(&home).env("SSL_CERT_FILE", &empty).args(["ca", "bundle"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no system root certificates"), "{}", stderr(&o));
    assert_eq!(fs::read(&bundle).unwrap(), before);
}

#[test]
fn trust_instructions_need_the_explicit_flag_and_run_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let o = output(guardian(&home).args(["ca", "trust-instructions"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--system"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());

    let o = output(guardian(&home).args(["ca", "trust-instructions", "--system"]));
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(text.starts_with("WARNING"), "{text}");
    for step in [
        "/usr/local/share/ca-certificates/",
        "update-ca-certificates",
        "/etc/pki/ca-trust/source/anchors/",
        "update-ca-trust",
        "security add-trusted-cert",
        &home.join("ca/ca.pem").display().to_string(),
    ] {
        assert!(text.contains(step), "missing {step:?} in\n{text}");
    }
    assert!(!home.exists(), "trust-instructions wrote something");
}

// ---------------------------------------------------------------------------------------------------------
// Leaves and the cache

fn guardian_ca() -> Arc<GuardianCa> {
    Arc::new(GuardianCa::generate("test", 365, now()).unwrap())
}

/// Verifies `leaf` for `name` with rustls' WebPKI verifier trusting only `ca`.
fn verify_with_only(ca: &CertificateDer<'static>, leaf: &CertificateDer<'_>, name: &str) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), tls::provider()).build().unwrap();
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    verifier.verify_server_cert(leaf, &[], &server_name, &[], UnixTime::now()).map(|_| ())
}

#[test]
fn leaves_for_names_and_ips_chain_to_the_ca_with_short_validity() {
    let ca = guardian_ca();
    let cache = LeafCache::new(ca.clone(), NonZeroUsize::new(8).unwrap());
    for host in ["api.example.com", "127.0.0.1", "::1"] {
        let leaf = cache.get_or_mint_blocking(&LeafName::parse(host).unwrap(), now()).unwrap();
        let der = &leaf.cert[0];
        verify_with_only(ca.cert_der(), der, host).unwrap_or_else(|e| panic!("{host}: {e}"));
        // The name is in the SAN and nowhere else matters: another name fails.
        assert!(verify_with_only(ca.cert_der(), der, "other.example.com").is_err());
        let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let v = x509.validity();
        assert!(v.not_after.timestamp() - v.not_before.timestamp() <= 30 * 86_400);
        assert!(x509.extended_key_usage().unwrap().unwrap().value.server_auth);
        assert!(!x509.basic_constraints().unwrap().is_some_and(|bc| bc.value.ca));
    }
    // A different CA does not verify them.
    let other = guardian_ca();
    let leaf = cache.get_or_mint_blocking(&LeafName::parse("api.example.com").unwrap(), now()).unwrap();
    assert!(verify_with_only(other.cert_der(), &leaf.cert[0], "api.example.com").is_err());
}

#[test]
fn cache_reuses_leaves_and_stays_bounded() {
    let cache = LeafCache::new(guardian_ca(), NonZeroUsize::new(2).unwrap());
    let a = LeafName::parse("a.test").unwrap();
    let first = cache.get_or_mint_blocking(&a, now()).unwrap();
    let again = cache.get_or_mint_blocking(&LeafName::parse("A.TEST.").unwrap(), now()).unwrap();
    assert!(Arc::ptr_eq(&first, &again), "same host, same Arc");
    assert_eq!(first.cert, again.cert);
    assert_eq!(cache.minted(), 1);

    cache.get_or_mint_blocking(&LeafName::parse("b.test").unwrap(), now()).unwrap();
    cache.get_or_mint_blocking(&LeafName::parse("c.test").unwrap(), now()).unwrap();
    assert_eq!(cache.len(), 2);
    assert!(!cache.contains("a.test"), "least recently used is evicted");
    assert!(cache.contains("b.test") && cache.contains("c.test"));
    let back = cache.get_or_mint_blocking(&a, now()).unwrap();
    assert!(!Arc::ptr_eq(&first, &back));
    assert_eq!(cache.minted(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_mint_shares_one_leaf_per_host() {
    let cache = Arc::new(LeafCache::new(guardian_ca(), NonZeroUsize::new(16).unwrap()));
    let name = LeafName::parse("shared.test").unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (cache, name) = (cache.clone(), name.clone());
            tokio::spawn(async move { cache.get_or_mint(&name).await.unwrap() })
        })
        .collect();
    let mut leaves = Vec::new();
    for t in tasks {
        leaves.push(t.await.unwrap());
    }
    assert!(leaves.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])), "every connection gets the cached leaf");
    assert_eq!(cache.len(), 1);
}

/// Prints the mint cost (no assertion on time: the figure goes into the docs by hand).
#[test]
fn mint_timing() {
    let cache = LeafCache::new(guardian_ca(), NonZeroUsize::new(64).unwrap());
    let n = 32;
    let start = Instant::now();
    for i in 0..n {
        cache.get_or_mint_blocking(&LeafName::parse(&format!("h{i}.test")).unwrap(), now()).unwrap();
    }
    let per = start.elapsed() / n;
    let hit_start = Instant::now();
    for _ in 0..1000 {
        cache.get_or_mint_blocking(&LeafName::parse("h0.test").unwrap(), now()).unwrap();
    }
    let der_len = cache.get_or_mint_blocking(&LeafName::parse("h0.test").unwrap(), now()).unwrap().cert[0].len();
    eprintln!(
        "leaf mint: {per:?} per leaf over {n}; cache hit: {:?}; leaf DER {der_len} bytes",
        hit_start.elapsed() / 1000
    );
    assert_eq!(cache.minted(), u64::from(n));
}

// ---------------------------------------------------------------------------------------------------------
// Interception end to end on 127.0.0.1

const UPSTREAM_NAME: &str = "upstream.test";

/// A TLS echo server on 127.0.0.1 serving `cert`: answers each read with `pong:` + the bytes.
async fn start_upstream(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> SocketAddr {
    let mut config = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else { return };
                let mut buf = [0u8; 1024];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut reply = b"pong:".to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    if tls.write_all(&reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// The guardian side: accepts clients on 127.0.0.1, opens TCP to `upstream`, intercepts with
/// `connect_host`, then relays bytes. Each interception's outcome (error kind or Ok) goes to the channel.
async fn start_guardian(
    interceptor: Interceptor,
    upstream: SocketAddr,
    connect_host: &'static str,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Result<String, InterceptError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (interceptor, tx) = (interceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let up = TcpStream::connect(upstream).await.unwrap();
                match interceptor.intercept(client, up, connect_host).await {
                    Ok(mut i) => {
                        let _ = tx.send(Ok(i.host.clone()));
                        let _ = tokio::io::copy_bidirectional(&mut i.client, &mut i.upstream).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        }
    });
    (addr, rx)
}

fn client_trusting(root: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Connects through the guardian, sends `ping`, returns the reply.
async fn ping(client: &tokio_rustls::TlsConnector, guardian: SocketAddr, name: &str) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(guardian).await?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let mut tls = client.connect(server_name, tcp).await?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(b"ping").await?;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await??;
    buf.truncate(n);
    Ok(buf)
}

struct Fixture {
    upstream_ca: CertificateDer<'static>,
    upstream_issuer: Issuer<'static, KeyPair>,
    guardian_ca: Arc<GuardianCa>,
    interceptor: Interceptor,
    _dir: tempfile::TempDir,
}

/// A guardian CA, a test upstream CA given as `upstream_ca_file`, and an interceptor verifying against it
/// (no system roots, so the machine's store cannot make a test pass).
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (upstream_ca, upstream_issuer) = test_ca("Test Upstream CA");
    let file = dir.path().join("upstream-ca.pem");
    fs::write(&file, tls::ca::pem_certificate(&upstream_ca)).unwrap();
    let roots = upstream_roots(&[], Some(&file)).unwrap();
    let guardian_ca = guardian_ca();
    let leaves = Arc::new(LeafCache::new(guardian_ca.clone(), NonZeroUsize::new(16).unwrap()));
    let interceptor = Interceptor::new(leaves, upstream_client_config(roots).unwrap())
        .unwrap()
        .with_handshake_timeout(Duration::from_secs(5));
    Fixture { upstream_ca, upstream_issuer, guardian_ca, interceptor, _dir: dir }
}

async fn next_outcome(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<String, InterceptError>>,
) -> Result<String, InterceptError> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("an outcome in time").expect("channel open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercept_relays_bytes_with_a_leaf_the_client_trusts() {
    let f = fixture();
    let (cert, key) = server_cert(
        &f.upstream_issuer,
        &[UPSTREAM_NAME, "127.0.0.1"],
        now() - time::Duration::hours(1),
        now() + time::Duration::days(1),
    );
    let upstream = start_upstream(cert, key).await;
    let (guardian, mut rx) = start_guardian(f.interceptor.clone(), upstream, "127.0.0.1").await;
    let client = client_trusting(f.guardian_ca.cert_der());

    // SNI given: the leaf is minted for it.
    assert_eq!(ping(&client, guardian, UPSTREAM_NAME).await.unwrap(), b"pong:ping");
    assert_eq!(next_outcome(&mut rx).await.unwrap(), UPSTREAM_NAME);
    // No SNI (rustls, like Go, sends none for an IP address): the CONNECT host names the leaf.
    assert_eq!(ping(&client, guardian, "127.0.0.1").await.unwrap(), b"pong:ping");
    assert_eq!(next_outcome(&mut rx).await.unwrap(), "127.0.0.1");
    // Second connection to the same host reuses the leaf.
    assert_eq!(ping(&client, guardian, UPSTREAM_NAME).await.unwrap(), b"pong:ping");
    next_outcome(&mut rx).await.unwrap();
    let leaves = f.interceptor.leaves();
    assert_eq!((leaves.minted(), leaves.len()), (2, 2));
    assert!(leaves.contains(UPSTREAM_NAME) && leaves.contains("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_upstream_fails_the_client_and_mints_nothing() {
    let f = fixture();
    let (_, stranger) = test_ca("Somebody Else CA");
    let (cert, key) =
        server_cert(&stranger, &[UPSTREAM_NAME], now() - time::Duration::hours(1), now() + time::Duration::days(1));
    let upstream = start_upstream(cert, key).await;
    let (guardian, mut rx) = start_guardian(f.interceptor.clone(), upstream, UPSTREAM_NAME).await;

    let err = ping(&client_trusting(f.guardian_ca.cert_der()), guardian, UPSTREAM_NAME).await.unwrap_err();
    assert!(err.to_string().contains("AccessDenied"), "the client gets a fatal alert: {err}");
    let e = next_outcome(&mut rx).await.unwrap_err();
    assert_eq!(e.kind(), InterceptErrorKind::UpstreamTlsInvalid, "{e}");
    assert_eq!(e.kind().as_str(), "upstream_tls_invalid");
    assert_eq!(e.host(), Some(UPSTREAM_NAME));
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    assert!(!f.interceptor.leaves().contains(UPSTREAM_NAME), "no leaf for a bad upstream");
    assert_eq!(f.interceptor.leaves().minted(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_upstream_fails_the_client_and_mints_nothing() {
    let f = fixture();
    let (cert, key) = server_cert(
        &f.upstream_issuer,
        &[UPSTREAM_NAME],
        now() - time::Duration::days(10),
        now() - time::Duration::days(1),
    );
    let upstream = start_upstream(cert, key).await;
    let (guardian, mut rx) = start_guardian(f.interceptor.clone(), upstream, UPSTREAM_NAME).await;

    assert!(ping(&client_trusting(f.guardian_ca.cert_der()), guardian, UPSTREAM_NAME).await.is_err());
    let e = next_outcome(&mut rx).await.unwrap_err();
    assert_eq!(e.kind(), InterceptErrorKind::UpstreamTlsInvalid, "{e}");
    assert!(e.to_string().contains("Expired"), "{e}");
    assert_eq!(f.interceptor.leaves().minted(), 0);
    assert!(f.interceptor.leaves().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_with_the_wrong_name_is_invalid_too() {
    let f = fixture();
    let (cert, key) = server_cert(
        &f.upstream_issuer,
        &["elsewhere.test"],
        now() - time::Duration::hours(1),
        now() + time::Duration::days(1),
    );
    let upstream = start_upstream(cert, key).await;
    let (guardian, mut rx) = start_guardian(f.interceptor.clone(), upstream, UPSTREAM_NAME).await;
    assert!(ping(&client_trusting(f.guardian_ca.cert_der()), guardian, UPSTREAM_NAME).await.is_err());
    assert_eq!(next_outcome(&mut rx).await.unwrap_err().kind(), InterceptErrorKind::UpstreamTlsInvalid);
    assert_eq!(f.interceptor.leaves().minted(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_distrusts_the_guardian_gets_a_countable_error_and_others_go_on() {
    let f = fixture();
    let (cert, key) = server_cert(
        &f.upstream_issuer,
        &[UPSTREAM_NAME],
        now() - time::Duration::hours(1),
        now() + time::Duration::days(1),
    );
    let upstream = start_upstream(cert, key).await;
    let (guardian, mut rx) = start_guardian(f.interceptor.clone(), upstream, UPSTREAM_NAME).await;

    // Trusts the real upstream CA, not the guardian's: it refuses the leaf.
    let distrusting = client_trusting(&f.upstream_ca);
    let err = ping(&distrusting, guardian, UPSTREAM_NAME).await.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    let e = next_outcome(&mut rx).await.unwrap_err();
    assert_eq!(e.kind(), InterceptErrorKind::ClientRejectedLeaf, "{e}");
    assert_eq!(e.fault(), tls::Fault::Client);
    assert!(e.to_string().contains("SSL_CERT_FILE"), "the log line carries the fix: {e}");

    // The guardian keeps serving clients that trust it.
    assert_eq!(ping(&client_trusting(f.guardian_ca.cert_der()), guardian, UPSTREAM_NAME).await.unwrap(), b"pong:ping");
    assert!(next_outcome(&mut rx).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_bytes_instead_of_a_client_hello_are_a_client_error() {
    let f = fixture();
    let (cert, key) = server_cert(
        &f.upstream_issuer,
        &[UPSTREAM_NAME],
        now() - time::Duration::hours(1),
        now() + time::Duration::days(1),
    );
    let upstream = start_upstream(cert, key).await;
    let (guardian, mut rx) = start_guardian(f.interceptor.clone(), upstream, UPSTREAM_NAME).await;
    let mut tcp = TcpStream::connect(guardian).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: upstream.test\r\n\r\n").await.unwrap();
    let e = next_outcome(&mut rx).await.unwrap_err();
    assert_eq!(e.kind(), InterceptErrorKind::ClientHello, "{e}");
    assert_eq!(f.interceptor.leaves().minted(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_times_out() {
    let f = fixture();
    let interceptor = f.interceptor.clone().with_handshake_timeout(Duration::from_millis(200));
    let (cert, key) = server_cert(
        &f.upstream_issuer,
        &[UPSTREAM_NAME],
        now() - time::Duration::hours(1),
        now() + time::Duration::days(1),
    );
    let upstream = start_upstream(cert, key).await;
    let (guardian, mut rx) = start_guardian(interceptor, upstream, UPSTREAM_NAME).await;
    let _tcp = TcpStream::connect(guardian).await.unwrap();
    let e = next_outcome(&mut rx).await.unwrap_err();
    assert_eq!(e.kind(), InterceptErrorKind::Timeout, "{e}");
}

#[test]
fn upstream_roots_merge_system_roots_and_the_upstream_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (sys, _) = test_ca("System Root");
    let (extra, _) = test_ca("Extra Root");
    let file = dir.path().join("extra.pem");
    fs::write(&file, tls::ca::pem_certificate(&extra)).unwrap();
    assert_eq!(upstream_roots(std::slice::from_ref(&sys), Some(&file)).unwrap().len(), 2);
    assert_eq!(upstream_roots(std::slice::from_ref(&sys), None).unwrap().len(), 1);

    let empty = dir.path().join("empty.pem");
    fs::write(&empty, b"not pem").unwrap();
    let e = upstream_roots(&[], Some(&empty)).unwrap_err();
    assert!(e.to_string().contains("no certificate"), "{e}");
    let e = upstream_roots(&[], Some(&dir.path().join("absent.pem"))).unwrap_err();
    assert!(e.to_string().contains("upstream_ca_file"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_parallel_clients_share_one_leaf() {
    let f = fixture();
    let (cert, key) = server_cert(
        &f.upstream_issuer,
        &[UPSTREAM_NAME],
        now() - time::Duration::hours(1),
        now() + time::Duration::days(1),
    );
    let upstream = start_upstream(cert, key).await;
    let (guardian, mut rx) = start_guardian(f.interceptor.clone(), upstream, UPSTREAM_NAME).await;
    let client = client_trusting(f.guardian_ca.cert_der());
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { ping(&client, guardian, UPSTREAM_NAME).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), b"pong:ping");
    }
    for _ in 0..100 {
        assert_eq!(next_outcome(&mut rx).await.unwrap(), UPSTREAM_NAME);
    }
    assert_eq!(f.interceptor.leaves().len(), 1);
    // Concurrent first connections may each mint before one is cached; all then serve the cached one.
    assert!(f.interceptor.leaves().minted() >= 1);
}

/// The bytes of a real ClientHello for `name`.
fn client_hello_bytes(name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from(name.to_string()).unwrap()).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

#[tokio::test]
async fn every_prefix_of_a_client_hello_is_an_error_never_a_panic_or_a_mint() {
    let f = fixture();
    let hello = client_hello_bytes(UPSTREAM_NAME);
    assert!(hello.len() > 100);
    for cut in 0..hello.len() {
        let (mut peer, ours) = tokio::io::duplex(64 * 1024);
        let (_upstream_peer, upstream) = tokio::io::duplex(1024);
        peer.write_all(&hello[..cut]).await.unwrap();
        drop(peer);
        let e = f.interceptor.intercept(ours, upstream, UPSTREAM_NAME).await.unwrap_err();
        assert_eq!(e.kind(), InterceptErrorKind::ClientHello, "cut at {cut}: {e}");
    }
    // The whole ClientHello gets as far as the upstream, which here just closes: an upstream error.
    let (mut peer, ours) = tokio::io::duplex(64 * 1024);
    let (upstream_peer, upstream) = tokio::io::duplex(1024);
    drop(upstream_peer);
    peer.write_all(&hello).await.unwrap();
    let e = f.interceptor.intercept(ours, upstream, UPSTREAM_NAME).await.unwrap_err();
    assert_eq!((e.kind(), e.fault()), (InterceptErrorKind::UpstreamHandshake, tls::Fault::Upstream), "{e}");
    assert_eq!(f.interceptor.leaves().minted(), 0);
}

fn load_config(home: &Path, json: &str) -> picoclaw_traffic_guardian::config::Config {
    use picoclaw_traffic_guardian::{config, home::EnvVars};
    let file = home.with_extension("json");
    fs::write(&file, json).unwrap();
    let env = EnvVars::from_pairs([
        ("PICOCLAW_TRAFFIC_GUARDIAN_HOME", home.display().to_string()),
        ("HOME", home.display().to_string()),
    ]);
    let flags = config::Flags { config: Some(file), values: vec![] };
    config::load(&env, &flags).into_config().unwrap()
}

#[test]
fn interceptor_for_needs_a_ca_and_honours_the_upstream_ca_file() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let cfg = load_config(&home, r#"{"https_inspection": true}"#);
    let e = tls::interceptor_for(&cfg, &tls::ca::SystemRoots::default()).unwrap_err();
    assert!(matches!(e, tls::MitmStartError::Ca(tls::CaError::Missing { .. })), "{e}");
    assert!(e.to_string().contains("ca init"), "{e}");

    let ca = GuardianCa::generate("t", 30, now()).unwrap();
    ca.save(&CaPaths::of(&cfg.home), false).unwrap();
    assert!(tls::interceptor_for(&cfg, &tls::ca::SystemRoots::default()).is_ok());

    // An upstream_ca_file without certificates stops the start, naming the key.
    let junk = tmp.path().join("junk.pem");
    fs::write(&junk, b"junk").unwrap();
    let cfg = load_config(&home, &format!(r#"{{"https_inspection": true, "upstream_ca_file": {:?}}}"#, junk));
    let e = tls::interceptor_for(&cfg, &tls::ca::SystemRoots::default()).unwrap_err();
    assert!(matches!(e, tls::MitmStartError::Setup(_)) && e.to_string().contains("upstream_ca_file"), "{e}");

    // An expired CA is refused with the fix.
    let old = GuardianCa::generate("t", 1, now() - time::Duration::days(5)).unwrap();
    old.save(&CaPaths::of(&cfg.home), true).unwrap();
    let cfg = load_config(&home, r#"{"https_inspection": true}"#);
    let e = tls::interceptor_for(&cfg, &tls::ca::SystemRoots::default()).unwrap_err();
    assert!(e.to_string().contains("expired") && e.to_string().contains("ca init --force"), "{e}");
}

#[test]
fn skip_hosts_and_the_switch_decide_interception() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let off = load_config(&home, r#"{"mitm_skip_hosts": []}"#);
    assert!(!tls::should_intercept(&off, "api.openai.com"));
    let on = load_config(&home, r#"{"https_inspection": true, "mitm_skip_hosts": ["*.pinned.test", "exact.test"]}"#);
    assert!(tls::should_intercept(&on, "api.openai.com"));
    assert!(!tls::should_intercept(&on, "a.pinned.test"));
    assert!(!tls::should_intercept(&on, "EXACT.test"));
    assert!(tls::should_intercept(&on, "pinned.test"));
}

#[test]
fn duplicate_system_roots_are_kept_once() {
    let (a, _) = test_ca("Dup Root");
    let (b, _) = test_ca("Other Root");
    let roots = upstream_roots(&[a.clone(), a.clone(), b, a], None).unwrap();
    assert_eq!(roots.len(), 2);
}
