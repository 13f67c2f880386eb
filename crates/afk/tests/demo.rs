//! `afk demo`, the README's first command, works on a machine with nothing else running.

#[tokio::test]
async fn the_demo_runs_every_scripted_issue_to_its_scripted_end() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_afk"))
        .arg("demo")
        .env_remove("AFK_LOG")
        .output()
        .await
        .expect("afk demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "afk demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("All 5 jobs ended as scripted"), "{stdout}");
    for state in ["succeeded", "given_up", "timed_out", "retry_wait"] {
        assert!(stdout.contains(state), "the demo shows {state}:\n{stdout}");
    }
}
