//! `fota demo` end to end, on a small fleet: the command a new user runs first must work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_demo_rolls_out_a_good_release_and_halts_a_bad_one() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fota"))
        .args([
            "demo",
            "--devices",
            "300",
            "--check-in-interval",
            "0.5",
            "--listen",
            "127.0.0.1:0",
            "--timeout",
            "120",
            "--data-dir",
        ])
        .arg(data.path())
        // No `fota` on the PATH, as right after `cargo run`.
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fota demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("/openapi.json"), "{stdout}");
    // The hints run as printed: with `fota` not installed, the path of this binary.
    let fota = env!("CARGO_BIN_EXE_fota");
    assert!(
        stdout.contains(&format!(
            "  then:     {fota} rollout status 1   {fota} devices --status silent\n"
        )),
        "{stdout}"
    );
    // Progress in a log (not a terminal) is plain text lines, one per rollout at least.
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("2.0.0 (good): ") || l.starts_with("2.1.0 (bad): "))
        .collect();
    assert!(
        progress.iter().any(|l| l.starts_with("2.0.0 (good): "))
            && progress.iter().any(|l| l.starts_with("2.1.0 (bad): ")),
        "{stderr}"
    );
    for line in &progress {
        assert!(
            !line.contains('{') && !line.contains('"') && !line.contains('\u{1b}'),
            "plain text: {line}"
        );
    }
    assert!(stdout.contains("| bricked devices"), "{stdout}");
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {name}")))
            .unwrap_or_else(|| panic!("no {name} row in\n{stdout}"))
            .to_string()
    };
    assert!(row("bricked devices").ends_with("| 0 |"), "{stdout}");
    // The release that confirms and then crashes halts on its resets in its first stages (the
    // demo itself fails if it reached devices beyond the stage it halted in).
    let crash = row("crashing release: start → halted");
    assert!(
        crash.contains("(stage 1)") || crash.contains("(stage 2)"),
        "{stdout}"
    );
    assert!(stdout.contains("unexpected resets on"), "{stdout}");
    // "| blast radius ... | 3 / 300 = 1.00% (first stage: 4 devices) |": some of the canary
    // took the bad release, and nobody outside it.
    let blast = row("blast radius");
    let figure = blast.split('|').nth(2).unwrap();
    let installed: usize = figure.split('/').next().unwrap().trim().parse().unwrap();
    let canary: usize = figure
        .split("first stage: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(installed >= 1 && installed <= canary, "{blast}");
    assert!(stdout.contains("halt: stage 1:"), "{stdout}");
    // The server left its database where it was told.
    assert!(data.path().join("fota.db").exists());
}

/// `fota demo --mqtt` with an hour between polls: its own Mosquitto, a session per device, and
/// both rollouts moved by push alone.
#[test]
fn the_demo_runs_on_push_with_mqtt() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fota"))
        .args([
            "demo",
            "--mqtt",
            "--devices",
            "200",
            "--check-in-interval",
            "3600",
            "--nudge-jitter",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--timeout",
            "300",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fota demo --mqtt failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {name}")))
            .unwrap_or_else(|| panic!("no {name} row in\n{stdout}"))
            .to_string()
    };
    assert!(
        row("good release: devices confirmed").contains("| 200 / 200 ("),
        "{stdout}"
    );
    assert!(row("bricked devices").ends_with("| 0 |"), "{stdout}");
    assert!(
        row("MQTT: devices connected").contains("| 200 / 200,"),
        "{stdout}"
    );
    assert!(
        row("MQTT: reconnects, refused").ends_with("| 0, 0 |"),
        "{stdout}"
    );
    // Every device was nudged once by the good rollout, and some of the bad one's canary.
    let commands = row("MQTT: commands received");
    let nudges: u64 = commands
        .split(" nudges applied")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(nudges >= 200, "{commands}");
    // The devices' reports went through the broker and the server acknowledged them there
    // (each device's confirmation at least): the server's own account, with only the roles the
    // demo gives it, may take the shared report subscription.
    let reports = row("MQTT: reports published");
    let acknowledged: u64 = reports
        .split('|')
        .nth(2)
        .and_then(|s| s.split(',').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(acknowledged >= 200, "{reports}");
    assert!(data
        .path()
        .join("mosquitto")
        .join("mosquitto.conf")
        .exists());
}
