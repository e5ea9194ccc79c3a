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

/// `fota demo --mqtt --devices 200` with an hour between polls and `extra` arguments: its
/// stdout and data directory, once it has succeeded.
fn mqtt_demo(extra: &[&str]) -> (String, tempfile::TempDir) {
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
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fota demo --mqtt {extra:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, data)
}

/// The figure row `name` of the demo's table.
fn row(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("| {name}")))
        .unwrap_or_else(|| panic!("no {name} row in\n{stdout}"))
        .to_string()
}

/// Both rollouts moved by push alone: every device connected once, confirmed the good release,
/// was nudged, and had its reports acknowledged by the server through the broker(s).
fn assert_moved_by_push(stdout: &str) {
    assert!(
        row(stdout, "good release: devices confirmed").contains("| 200 / 200 ("),
        "{stdout}"
    );
    assert!(
        row(stdout, "bricked devices").ends_with("| 0 |"),
        "{stdout}"
    );
    assert!(
        row(stdout, "MQTT: devices connected").contains("| 200 / 200,"),
        "{stdout}"
    );
    assert!(
        row(stdout, "MQTT: reconnects, refused").ends_with("| 0, 0 |"),
        "{stdout}"
    );
    // Every device was nudged once by the good rollout, and some of the bad one's canary.
    let commands = row(stdout, "MQTT: commands received");
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
    let reports = row(stdout, "MQTT: reports published");
    let acknowledged: u64 = reports
        .split('|')
        .nth(2)
        .and_then(|s| s.split(',').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(acknowledged >= 200, "{reports}");
}

/// `fota demo --mqtt` with an hour between polls: its own Mosquitto, a session per device, and
/// both rollouts moved by push alone.
#[test]
fn the_demo_runs_on_push_with_mqtt() {
    let (stdout, data) = mqtt_demo(&[]);
    assert_moved_by_push(&stdout);
    assert!(
        row(&stdout, "MQTT: brokers").ends_with("| one |"),
        "{stdout}"
    );
    assert!(data
        .path()
        .join("mosquitto")
        .join("mosquitto.conf")
        .exists());
}

/// The same with at most 70 devices a broker, as a 100,000-device fleet runs where a process
/// may hold only 20,000 sockets: the server on a core broker, the devices on three edge brokers
/// bridged to it, their sockets in three relay processes. Nudges cross the bridges to the
/// devices and reports cross them to the server, or no rollout would move.
#[test]
fn the_demo_spreads_a_large_fleet_over_bridged_brokers() {
    let (stdout, data) = mqtt_demo(&["--mqtt-devices-per-broker", "70"]);
    assert_moved_by_push(&stdout);
    assert!(
        row(&stdout, "MQTT: brokers").contains("| a core and 3 edges bridged to it (up to 67 devices each), the sessions through 3 relay processes"),
        "{stdout}"
    );
    // Each edge holds the accounts of its own devices only: the 0th, 3rd, 6th... on edge 0.
    for edge in 0..3 {
        let accounts = std::fs::read_to_string(
            data.path()
                .join(format!("mosquitto-edge-{edge}"))
                .join("dynamic-security.json"),
        )
        .unwrap();
        let accounts: serde_json::Value = serde_json::from_str(&accounts).unwrap();
        let devices: Vec<&str> = accounts["clients"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["username"].as_str())
            .filter(|u| u.starts_with("light-"))
            .collect();
        assert!(
            (66..=67).contains(&devices.len()),
            "edge {edge}: {devices:?}"
        );
        assert!(devices
            .iter()
            .all(|d| { d.trim_start_matches("light-").parse::<usize>().unwrap() % 3 == edge }));
    }
}
