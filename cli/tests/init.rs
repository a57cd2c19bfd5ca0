//! `gridchan init` and key files.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::gridchan;

#[test]
fn init_writes_a_private_key_and_a_loadable_config_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = gridchan(&["init", "--dir", d, "--ledger", "KEY@127.0.0.1:7400"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("node    "), "{text}");
    let mode = std::fs::metadata(dir.path().join("node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let config = gridchan_gateway::config::Config::load(&dir.path().join("gridchan.toml")).unwrap();
    assert_eq!(config.node.listen, "127.0.0.1:7500".parse().unwrap());
    // The key's secret never appears in what init prints.
    let secret = std::fs::read_to_string(dir.path().join("node.key")).unwrap();
    assert!(!text.contains(secret.trim()));
    let again = gridchan(&["init", "--dir", d]);
    assert!(!again.status.success());
    let err = String::from_utf8(again.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("exists already"), "{err}");
}

#[test]
fn a_key_readable_by_others_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    gridchan_cli::keys::load_or_create(&key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = gridchan_cli::keys::load(&key).err().unwrap().to_string();
    assert!(err.contains("readable by others"), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn an_address_left_as_the_placeholder_or_mistyped_is_one_line_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = gridchan(&["init", "--dir", d, "--listen", "127.0.0.1:0"]);
    assert!(out.status.success());
    let config = dir.path().join("gridchan.toml");
    let daemon = |config: &std::path::Path| {
        let out = gridchan(&["daemon", "--config", config.to_str().unwrap()]);
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        err
    };
    // The template as written: the ledger is still a placeholder.
    let err = daemon(&config);
    assert!(err.contains("ledger.address in"), "{err}");
    assert!(err.contains("still the template's placeholder"), "{err}");
    // A real ledger address, and a mistyped neighbour.
    let node = String::from_utf8(out.stdout).unwrap();
    let node = node
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("PUBKEY@127.0.0.1:7400", &format!("{node}@127.0.0.1:7400"))
        + "\n[[peers]]\naddress = \"02abc@neighbour\"\n";
    std::fs::write(&config, text).unwrap();
    let err = daemon(&config);
    assert!(err.contains("peers[0].address in"), "{err}");
    assert!(err.contains("\"02abc@neighbour\""), "{err}");
}

#[test]
fn init_refuses_a_meter_zone_or_speedup_it_cannot_use_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for (args, says) in [
        (
            vec!["--meter", "p1:ttyUSB0"],
            "neither a device path (/dev/ttyUSB0) nor HOST:PORT",
        ),
        (vec!["--meter", "zigbee"], "write sim (or sim:PV_PEAK_W)"),
        (
            vec!["--time-zone", "Mars/Olympus"],
            "--time-zone \"Mars/Olympus\" is not a time zone name",
        ),
        (
            vec!["--speedup", "0"],
            "--speedup 0: write 1 (real time) to 3600",
        ),
        (vec!["--speedup", "100000"], "--speedup 100000"),
    ] {
        let mut all = vec!["init", "--dir", d];
        all.extend(args.iter().copied());
        let out = gridchan(&all);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            !dir.path().join("gridchan.toml").exists(),
            "nothing written"
        );
    }
    // The meter and zone it was given are in the config it writes.
    let out = gridchan(&[
        "init",
        "--dir",
        d,
        "--meter",
        "p1:127.0.0.1:2000",
        "--time-zone",
        "Europe/Amsterdam",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = gridchan_gateway::config::Config::load(&dir.path().join("gridchan.toml")).unwrap();
    assert_eq!(
        config.metering.time_zone.as_deref(),
        Some("Europe/Amsterdam")
    );
    assert!(matches!(
        config.meter,
        Some(gridchan_gateway::config::MeterSection::P1 { ref port, .. }) if port == "127.0.0.1:2000"
    ));
}

#[test]
fn a_log_level_that_is_not_one_says_what_to_write() {
    let out = gridchan(&["--log-level", "loud=verbose", "status"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--log-level"), "{err}");
    assert!(
        err.contains("write error, warn, info, debug, trace"),
        "{err}"
    );
}
