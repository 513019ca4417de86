//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_picoclaw-traffic-guardian"))
}

/// A command for the binary with a scrubbed environment: only `HOME` and the guardian home are set, so the
/// machine's own variables (proxy, CA bundles, Picoclaw) never leak into a test.
pub fn guardian(home: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.env_clear()
        .env("HOME", home.parent().unwrap_or(home))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PICOCLAW_TRAFFIC_GUARDIAN_HOME", home);
    cmd
}

/// Runs a command to completion.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("run the guardian binary")
}

/// Stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
