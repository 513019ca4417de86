//! The skill packaging ClawSec's catalogue reads: SKILL.md and skill.json agree with Cargo.toml, and every
//! file the SBOM lists exists.

use serde_json::Value;

fn root(p: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

#[test]
fn versions_agree_and_sbom_files_exist() {
    let version = env!("CARGO_PKG_VERSION");
    let skill_md = std::fs::read_to_string(root("SKILL.md")).unwrap();
    let front = skill_md.split("---").nth(1).expect("SKILL.md starts with YAML frontmatter");
    assert!(front.lines().any(|l| l.trim() == "name: picoclaw-traffic-guardian"));
    assert!(front.lines().any(|l| l.trim() == format!("version: {version}")), "SKILL.md version != {version}");
    assert!(front.contains("- picoclaw-traffic-guardian"), "requires.bins must name the binary");

    let json: Value = serde_json::from_slice(&std::fs::read(root("skill.json")).unwrap()).unwrap();
    assert_eq!(json["name"], "picoclaw-traffic-guardian");
    assert_eq!(json["version"], version);
    assert_eq!(json["platform"], "picoclaw");
    for f in json["sbom"]["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        assert!(root(path).exists(), "sbom lists {path}, which does not exist");
    }
    let env: Vec<&str> =
        json["picoclaw"]["runtime"]["optional_env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let contract = [
        "PICOCLAW_TRAFFIC_GUARDIAN_HOME",
        "PICOCLAW_TRAFFIC_GUARDIAN_CONFIG",
        "PICOCLAW_TRAFFIC_GUARDIAN_MODE",
        "PICOCLAW_TRAFFIC_GUARDIAN_PROXY_URL",
        "PICOCLAW_TRAFFIC_GUARDIAN_CA_BUNDLE",
        "PICOCLAW_TRAFFIC_GUARDIAN_LOG_DIR",
        "PICOCLAW_TRAFFIC_GUARDIAN_MAX_SCAN_BYTES",
        "PICOCLAW_TRAFFIC_GUARDIAN_REDACT_SNIPPETS",
        "PICOCLAW_TRAFFIC_GUARDIAN_PROFILE_OUTPUT",
    ];
    assert_eq!(env, contract);
    assert_eq!(json["picoclaw"]["capabilities"]["blocking"], "not_implemented");
}
