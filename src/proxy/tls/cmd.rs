//! The `ca` commands as plain functions: `init`, `bundle`, `show`, `trust-instructions`. Each writes its
//! result to `out`, problems to `err`, and returns the exit code (0 ok, 1 runtime failure, 2 bad usage or
//! config).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;

use super::ca::{self, rfc3339, CaError, CaPaths, GuardianCa, SystemRoots};
use crate::cli::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::config::{self, Config, Flags};
use crate::home::{EnvVars, Home};

fn load_config(env: &EnvVars, flags: &Flags, err: &mut dyn Write) -> io::Result<Result<Config, u8>> {
    match config::load(env, flags).into_config() {
        Ok(c) => Ok(Ok(c)),
        Err(e) => {
            writeln!(err, "picoclaw-traffic-guardian: {e}")?;
            Ok(Err(EXIT_USAGE))
        }
    }
}

/// `ca init [--force]`: makes the CA with `ca_validity_days`, writes it under `<home>/ca`, prints its
/// fingerprint and how to write the bundle.
pub fn init(env: &EnvVars, flags: &Flags, force: bool, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<u8> {
    let cfg = match load_config(env, flags, err)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let paths = CaPaths::of(&cfg.home);
    let replacing = paths.cert.exists();
    if replacing && !force {
        writeln!(err, "picoclaw-traffic-guardian: {}", CaError::Exists { cert: paths.cert.clone() })?;
        return Ok(EXIT_FAILURE);
    }
    let result = GuardianCa::generate(&ca::local_hostname(), cfg.ca_validity_days, OffsetDateTime::now_utc())
        .and_then(|ca| ca.save(&paths, force).map(|()| ca));
    let ca = match result {
        Ok(ca) => ca,
        Err(e) => {
            writeln!(err, "picoclaw-traffic-guardian: {e}")?;
            return Ok(EXIT_FAILURE);
        }
    };
    writeln!(out, "{} the guardian CA", if replacing { "replaced" } else { "created" })?;
    writeln!(out, "  certificate: {}", paths.cert.display())?;
    writeln!(out, "  key:         {} (mode 0600)", paths.key.display())?;
    writeln!(out, "  subject:     {}", ca.subject())?;
    writeln!(out, "  valid:       {} to {}", rfc3339(ca.not_before()), rfc3339(ca.not_after()))?;
    writeln!(out, "  SHA-256 fingerprint: {}", ca.fingerprint_sha256())?;
    if replacing && cfg.ca_bundle.exists() {
        writeln!(out, "the trust bundle {} still holds the OLD CA:", cfg.ca_bundle.display())?;
    } else {
        writeln!(out, "next, write the trust bundle (system roots + this CA) for the monitored process:")?;
    }
    writeln!(out, "  picoclaw-traffic-guardian ca bundle    # writes {}", cfg.ca_bundle.display())?;
    writeln!(
        out,
        "Only a process started with SSL_CERT_FILE={} trusts this CA (`run` sets it); it is never added to the system trust store.",
        cfg.ca_bundle.display()
    )?;
    Ok(EXIT_OK)
}

/// `ca bundle`: writes `ca_bundle` = the system roots (see [`ca::load_system_roots`]) + the guardian CA.
pub fn bundle(env: &EnvVars, flags: &Flags, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<u8> {
    let cfg = match load_config(env, flags, err)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    write_bundle(&cfg, &ca::load_system_roots(), out, err)
}

/// The body of `ca bundle` with the system roots given (tests hand in their own).
pub fn write_bundle(cfg: &Config, system: &SystemRoots, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<u8> {
    let paths = CaPaths::of(&cfg.home);
    let ca = match GuardianCa::load(&paths).and_then(|ca| {
        ca.check_valid_at(OffsetDateTime::now_utc(), &paths.cert)?;
        Ok(ca)
    }) {
        Ok(ca) => ca,
        Err(e) => {
            writeln!(err, "picoclaw-traffic-guardian: {e}")?;
            return Ok(EXIT_FAILURE);
        }
    };
    for problem in &system.errors {
        writeln!(err, "warning: system roots: {problem}")?;
    }
    let contents = ca::bundle_contents(&system.certs, &ca);
    if contents.roots == 0 {
        writeln!(
            err,
            "picoclaw-traffic-guardian: no system root certificates found (looked in {}); a bundle without them would break every TLS connection the monitored process makes past the guardian, so none was written",
            system.source
        )?;
        return Ok(EXIT_FAILURE);
    }
    let written = ca::prepare_bundle_dir(&cfg.ca_bundle).and_then(|()| {
        crate::home::write_private_atomic(&cfg.ca_bundle, contents.pem.as_bytes())
            .map_err(|source| CaError::Io { path: cfg.ca_bundle.clone(), source })
    });
    if let Err(e) = written {
        writeln!(err, "picoclaw-traffic-guardian: {e}")?;
        return Ok(EXIT_FAILURE);
    }
    writeln!(
        out,
        "wrote {}: {} system roots (from {}) + the guardian CA {}",
        cfg.ca_bundle.display(),
        contents.roots,
        system.source,
        ca.fingerprint_sha256()
    )?;
    if contents.stale_guardian_cas > 0 {
        writeln!(out, "  left out {} older guardian CA(s) found among the roots", contents.stale_guardian_cas)?;
    }
    writeln!(
        out,
        "give the monitored process SSL_CERT_FILE={} (`picoclaw-traffic-guardian run` does this for its child alone)",
        cfg.ca_bundle.display()
    )?;
    Ok(EXIT_OK)
}

/// What `ca show` reports (the JSON form; readers ignore unknown keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaShow {
    /// `<home>/ca`.
    pub ca_dir: PathBuf,
    /// The certificate file.
    pub cert_path: PathBuf,
    /// The key file.
    pub key_path: PathBuf,
    /// The CA subject.
    pub subject: String,
    /// SHA-256 of the certificate DER, `AA:BB:...`.
    pub fingerprint_sha256: String,
    /// RFC 3339 UTC.
    pub not_before: String,
    /// RFC 3339 UTC.
    pub not_after: String,
    /// Whether the CA's validity has ended.
    pub expired: bool,
    /// The configured bundle path.
    pub bundle_path: PathBuf,
    /// Whether the bundle file exists.
    pub bundle_exists: bool,
    /// Whether the bundle holds this CA.
    pub bundle_has_ca: bool,
}

/// Gathers [`CaShow`] for a config.
pub fn show_info(cfg: &Config) -> Result<CaShow, CaError> {
    let paths = CaPaths::of(&cfg.home);
    let ca = GuardianCa::load(&paths)?;
    let holds = ca::bundle_holds(&cfg.ca_bundle, ca.cert_der())
        .map_err(|source| CaError::Io { path: cfg.ca_bundle.clone(), source })?;
    Ok(CaShow {
        ca_dir: paths.dir,
        cert_path: paths.cert,
        key_path: paths.key,
        subject: ca.subject().to_owned(),
        fingerprint_sha256: ca.fingerprint_sha256(),
        not_before: rfc3339(ca.not_before()),
        not_after: rfc3339(ca.not_after()),
        expired: OffsetDateTime::now_utc() >= ca.not_after(),
        bundle_path: cfg.ca_bundle.clone(),
        bundle_exists: holds.is_some(),
        bundle_has_ca: holds.unwrap_or(false),
    })
}

/// `ca show [--json]`. Exit 1 with a message naming `ca init` when there is no CA.
pub fn show(env: &EnvVars, flags: &Flags, as_json: bool, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<u8> {
    let cfg = match load_config(env, flags, err)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let info = match show_info(&cfg) {
        Ok(i) => i,
        Err(e) => {
            writeln!(err, "picoclaw-traffic-guardian: {e}")?;
            return Ok(EXIT_FAILURE);
        }
    };
    if as_json {
        let text = serde_json::to_string_pretty(&info).map_err(io::Error::other)?;
        writeln!(out, "{text}")?;
        return Ok(EXIT_OK);
    }
    writeln!(out, "certificate: {}", info.cert_path.display())?;
    writeln!(out, "key:         {}", info.key_path.display())?;
    writeln!(out, "subject:     {}", info.subject)?;
    writeln!(out, "SHA-256:     {}", info.fingerprint_sha256)?;
    let state = if info.expired { " (EXPIRED: run `ca init --force`, then `ca bundle`)" } else { "" };
    writeln!(out, "valid:       {} to {}{state}", info.not_before, info.not_after)?;
    let bundle_state = match (info.bundle_exists, info.bundle_has_ca) {
        (false, _) => "missing: run `picoclaw-traffic-guardian ca bundle`",
        (true, false) => "does NOT hold this CA: run `picoclaw-traffic-guardian ca bundle`",
        (true, true) => "holds this CA",
    };
    writeln!(out, "bundle:      {} ({bundle_state})", info.bundle_path.display())?;
    Ok(EXIT_OK)
}

/// `ca trust-instructions --system`: prints a warning and the manual steps for adding the CA to a system
/// trust store. Runs nothing. Without `system`, exits 2 and explains the flag.
pub fn trust_instructions(env: &EnvVars, system: bool, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<u8> {
    if !system {
        writeln!(
            err,
            "picoclaw-traffic-guardian: `ca trust-instructions` prints how to trust the guardian CA system-wide, which the guardian does not need: `run` gives the monitored process its own trust bundle. If you really want every program on this machine to trust it, ask explicitly with `ca trust-instructions --system`."
        )?;
        return Ok(EXIT_USAGE);
    }
    let cert = match Home::resolve(env) {
        Ok((home, _)) => CaPaths::of(&home).cert,
        Err(e) => {
            writeln!(err, "picoclaw-traffic-guardian: {e}")?;
            return Ok(EXIT_USAGE);
        }
    };
    write_trust_instructions(&cert, out)?;
    Ok(EXIT_OK)
}

fn write_trust_instructions(cert: &Path, out: &mut dyn Write) -> io::Result<()> {
    let c = cert.display();
    writeln!(
        out,
        "WARNING: a CA in the system trust store lets whoever holds its key ({}) impersonate ANY",
        cert.with_file_name(ca::CA_KEY_FILE).display()
    )?;
    writeln!(out, "HTTPS site to EVERY program on this machine. The guardian does not need this: `run` gives the")?;
    writeln!(out, "monitored process alone a trust bundle. Nothing below is run by the guardian; do it by hand only")?;
    writeln!(out, "if you accept that risk, and undo it when you are done.")?;
    if !cert.exists() {
        writeln!(out, "\n(no CA exists yet at {c}; make one first with `picoclaw-traffic-guardian ca init`)")?;
    }
    writeln!(out, "\nDebian / Ubuntu:")?;
    writeln!(out, "  sudo cp {c} /usr/local/share/ca-certificates/picoclaw-traffic-guardian.crt")?;
    writeln!(out, "  sudo update-ca-certificates")?;
    writeln!(out, "  undo: sudo rm /usr/local/share/ca-certificates/picoclaw-traffic-guardian.crt && sudo update-ca-certificates --fresh")?;
    writeln!(out, "\nFedora / RHEL:")?;
    writeln!(out, "  sudo cp {c} /etc/pki/ca-trust/source/anchors/picoclaw-traffic-guardian.pem")?;
    writeln!(out, "  sudo update-ca-trust")?;
    writeln!(
        out,
        "  undo: sudo rm /etc/pki/ca-trust/source/anchors/picoclaw-traffic-guardian.pem && sudo update-ca-trust"
    )?;
    writeln!(out, "\nmacOS:")?;
    writeln!(out, "  sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {c}")?;
    writeln!(out, "  undo: sudo security remove-trusted-cert -d {c}")?;
    Ok(())
}
