//! The deployment files, checked without a Docker engine by `scripts/check-compose.sh`:
//! docker-compose.yml against the compose-spec schema and `docker-compose config`, the
//! Dockerfile with hadolint, and every service's command against this binary's `--help`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::wait;

#[test]
fn compose_file_and_dockerfile_pass_their_checks() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tools = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/weatherflow/compose-venv/lint/bin/hadolint"))
        .is_some_and(|p| p.is_file());
    if !tools && !std::env::var("CI").is_ok_and(|v| v == "true") {
        eprintln!("skipping: run scripts/check-compose.sh once to install its tools (CI installs them)");
        return;
    }
    let child = Command::new("bash")
        .arg(root.join("scripts/check-compose.sh"))
        .env("WEATHERFLOW_BIN", env!("CARGO_BIN_EXE_weatherflow"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    let out = wait(child, Duration::from_secs(900));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "deployment checks failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("all checks passed"), "{text}");
}
