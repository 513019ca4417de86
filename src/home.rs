//! The guardian's state home: where it is, what lives in it, and the permission rules that keep it private.
//!
//! Resolution order (CONTRACT §2): `PICOCLAW_TRAFFIC_GUARDIAN_HOME`, else
//! `$PICOCLAW_HOME/security/clawsec/traffic-guardian`, else `~/.picoclaw/security/clawsec/traffic-guardian`.
//! Nothing here creates a directory until a command is about to write into it ([`ensure_private_dir`]);
//! `check-config` only ever calls [`check_private_dir`], which reads.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Variable that names the state home directly.
pub const HOME_ENV: &str = "PICOCLAW_TRAFFIC_GUARDIAN_HOME";
/// Picoclaw's own home variable; the guardian nests under it when set.
pub const PICOCLAW_HOME_ENV: &str = "PICOCLAW_HOME";
/// Where the guardian lives below a Picoclaw home.
pub const SUBDIR: &str = "security/clawsec/traffic-guardian";

/// A snapshot of environment variables.
///
/// Commands read the process environment once, into this, so that tests can hand in exactly the variables
/// they mean and nothing the machine happens to set.
#[derive(Debug, Clone, Default)]
pub struct EnvVars(BTreeMap<String, String>);

impl EnvVars {
    /// The current process environment (variables that are not UTF-8 are skipped).
    pub fn from_process() -> Self {
        EnvVars(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect())
    }

    /// An environment holding only the given pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        EnvVars(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    /// The value of `name`, treating an empty value as unset (as shells usually mean it).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Sets or replaces one variable.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    /// Expands a leading `~/` (or a lone `~`) with `$HOME`; other paths are returned unchanged.
    pub fn expand_tilde(&self, path: &str) -> Result<PathBuf, HomeError> {
        let rest = match path.strip_prefix('~') {
            Some("") => "",
            Some(rest) if rest.starts_with('/') => &rest[1..],
            _ => return Ok(PathBuf::from(path)),
        };
        let home = self.get("HOME").ok_or(HomeError::NoUserHome)?;
        Ok(Path::new(home).join(rest))
    }
}

/// Which rule picked the state home, for `check-config` to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeSource {
    /// `PICOCLAW_TRAFFIC_GUARDIAN_HOME`.
    GuardianHomeEnv,
    /// `$PICOCLAW_HOME/security/clawsec/traffic-guardian`.
    PicoclawHomeEnv,
    /// `~/.picoclaw/security/clawsec/traffic-guardian`.
    Default,
}

/// The resolved state home and the fixed layout inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Resolves the home from the environment without touching the filesystem.
    pub fn resolve(env: &EnvVars) -> Result<(Home, HomeSource), HomeError> {
        if let Some(dir) = env.get(HOME_ENV) {
            return Ok((Home::at(env.expand_tilde(dir)?), HomeSource::GuardianHomeEnv));
        }
        if let Some(dir) = env.get(PICOCLAW_HOME_ENV) {
            return Ok((Home::at(env.expand_tilde(dir)?.join(SUBDIR)), HomeSource::PicoclawHomeEnv));
        }
        let user = env.get("HOME").ok_or(HomeError::NoUserHome)?;
        Ok((Home::at(Path::new(user).join(".picoclaw").join(SUBDIR)), HomeSource::Default))
    }

    /// A home rooted at `root`, as given.
    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The default config file, `<home>/config.json`.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// The default findings log directory, `<home>/logs`.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Runtime state of a running monitor (lock, state file, control socket), `<home>/run`.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// The guardian CA, `<home>/ca`.
    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    /// The default trust bundle handed to the monitored process, `<home>/ca/trust-bundle.pem`.
    pub fn default_ca_bundle(&self) -> PathBuf {
        self.ca_dir().join("trust-bundle.pem")
    }

    /// The default profile fragment path, `<home>/profile.json`.
    pub fn default_profile_output(&self) -> PathBuf {
        self.root.join("profile.json")
    }
}

/// Why a home or private directory cannot be used.
#[derive(Debug)]
pub enum HomeError {
    /// No `$HOME` to resolve `~` or the default home against.
    NoUserHome,
    /// The path exists but is not a directory.
    NotADirectory(PathBuf),
    /// Group or others may write into it, so another user could plant files there.
    TooOpen { path: PathBuf, mode: u32 },
    /// Owned by another user.
    WrongOwner { path: PathBuf, owner: u32, us: u32 },
    /// The filesystem said no.
    Io { path: PathBuf, source: io::Error },
}

impl fmt::Display for HomeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HomeError::NoUserHome => {
                write!(f, "HOME is not set, so the state home cannot be found; set {HOME_ENV} to a private directory")
            }
            HomeError::NotADirectory(p) => {
                write!(f, "{} exists but is not a directory; remove it or point {HOME_ENV} elsewhere", p.display())
            }
            HomeError::TooOpen { path, mode } => write!(
                f,
                "{} has mode {:o}: group or others can write to it; run `chmod 700 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
            HomeError::WrongOwner { path, owner, us } => write!(
                f,
                "{} is owned by uid {owner}, not by you (uid {us}); use a directory you own (set {HOME_ENV})",
                path.display()
            ),
            HomeError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for HomeError {}

/// Checks an existing directory is ours and not writable by group or others. A missing one is fine: it will
/// be created private. Reads only.
pub fn check_private_dir(path: &Path) -> Result<(), HomeError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(HomeError::Io { path: path.to_path_buf(), source }),
    };
    if !meta.is_dir() {
        return Err(HomeError::NotADirectory(path.to_path_buf()));
    }
    let us = rustix::process::geteuid().as_raw();
    if meta.uid() != us {
        return Err(HomeError::WrongOwner { path: path.to_path_buf(), owner: meta.uid(), us });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(HomeError::TooOpen { path: path.to_path_buf(), mode: meta.mode() });
    }
    Ok(())
}

/// Creates `path` (and missing parents) with mode 0700, then checks it with [`check_private_dir`].
pub fn ensure_private_dir(path: &Path) -> Result<(), HomeError> {
    if !path.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|source| HomeError::Io { path: path.to_path_buf(), source })?;
        // The umask may have narrowed nothing but could have widened nothing either; set it exactly.
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(|source| HomeError::Io { path: path.to_path_buf(), source })?;
    }
    check_private_dir(path)
}

/// Writes `bytes` to `path` with mode 0600 through a fresh temp file in the same directory, fsync and a
/// rename, so a reader sees the old or the new content, never half of it. Refuses to replace a symlink
/// (someone could point it at a file we would then overwrite).
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is a symlink; refusing to write through it", path.display()),
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), hex::encode(suffix)));
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guardian_home_env_wins() {
        let env = EnvVars::from_pairs([(HOME_ENV, "/srv/g"), (PICOCLAW_HOME_ENV, "/srv/p"), ("HOME", "/home/u")]);
        assert_eq!(Home::resolve(&env).unwrap(), (Home::at("/srv/g"), HomeSource::GuardianHomeEnv));
    }

    #[test]
    fn picoclaw_home_nests_the_guardian() {
        let env = EnvVars::from_pairs([(PICOCLAW_HOME_ENV, "/srv/p"), ("HOME", "/home/u")]);
        let (home, source) = Home::resolve(&env).unwrap();
        assert_eq!(home.root(), Path::new("/srv/p/security/clawsec/traffic-guardian"));
        assert_eq!(source, HomeSource::PicoclawHomeEnv);
    }

    #[test]
    fn default_is_under_the_user_home() {
        let env = EnvVars::from_pairs([("HOME", "/home/u")]);
        let (home, source) = Home::resolve(&env).unwrap();
        assert_eq!(home.root(), Path::new("/home/u/.picoclaw/security/clawsec/traffic-guardian"));
        assert_eq!(source, HomeSource::Default);
        assert_eq!(home.config_file(), Path::new("/home/u/.picoclaw/security/clawsec/traffic-guardian/config.json"));
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let env = EnvVars::from_pairs([(HOME_ENV, ""), ("HOME", "/home/u")]);
        assert_eq!(Home::resolve(&env).unwrap().1, HomeSource::Default);
    }

    #[test]
    fn tilde_expands_with_home() {
        let env = EnvVars::from_pairs([(HOME_ENV, "~/g"), ("HOME", "/home/u")]);
        assert_eq!(Home::resolve(&env).unwrap().0.root(), Path::new("/home/u/g"));
        assert_eq!(env.expand_tilde("~").unwrap(), Path::new("/home/u"));
        assert_eq!(env.expand_tilde("~x/y").unwrap(), Path::new("~x/y"));
    }

    #[test]
    fn no_home_at_all_is_an_error() {
        let err = Home::resolve(&EnvVars::default()).unwrap_err();
        assert!(err.to_string().contains(HOME_ENV), "{err}");
    }

    #[test]
    fn created_dirs_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn group_writable_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o770)).unwrap();
        let err = check_private_dir(tmp.path()).unwrap_err();
        assert!(matches!(err, HomeError::TooOpen { .. }));
        assert!(err.to_string().contains("chmod 700"), "{err}");
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(check_private_dir(tmp.path()), Err(HomeError::TooOpen { .. })));
    }

    #[test]
    fn missing_dir_is_fine_and_a_file_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        check_private_dir(&tmp.path().join("absent")).unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(matches!(check_private_dir(&file), Err(HomeError::NotADirectory(_))));
    }

    #[test]
    fn dir_of_another_user_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let theirs = if rustix::process::geteuid().is_root() {
            // As root we can hand a directory to `nobody` and check that it is then refused.
            let dir = tmp.path().join("theirs");
            fs::create_dir(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            dir
        } else {
            PathBuf::from("/")
        };
        assert!(matches!(check_private_dir(&theirs), Err(HomeError::WrongOwner { .. })));
    }

    #[test]
    fn atomic_write_refuses_symlinks_and_sets_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("t");
        write_private_atomic(&target, b"one").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"one");
        assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
        let link = tmp.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(write_private_atomic(&link, b"two").is_err());
        assert_eq!(fs::read(&target).unwrap(), b"one");
    }
}
