//! The `gridchan` binary, run as a person would.

mod common;

use common::gridchan;

#[test]
fn vectors_match_the_published_spec() {
    let out = gridchan(&["vectors"]);
    assert!(out.status.success());
    let published = include_str!("../../specs/vectors/states.json");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), published);
}

#[test]
fn core_benchmark_reports_its_floor() {
    let out = gridchan(&["bench", "core", "--updates", "200"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("updates/s"), "{text}");
    assert!(text.contains("floor"), "{text}");
    assert!(text.contains("ratio"), "{text}");
}

#[test]
fn a_bad_argument_is_one_clear_line() {
    let out = gridchan(&["bench", "core", "--updates", "many"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("invalid value 'many'"), "{err}");
}

/// Clap's other messages keep what they name, in one line: the missing arguments, and the
/// similar argument or subcommand a typo was meant to be.
#[test]
fn a_missing_or_mistyped_argument_is_named_in_one_line() {
    for (args, wanted) in [
        (
            &["market", "join"][..],
            &[
                "required arguments were not provided: ",
                "<ADDRESS>",
                "--deposit <DEPOSIT>",
            ][..],
        ),
        (
            &["demo", "--homse", "3"][..],
            &[
                "unexpected argument '--homse'",
                "a similar argument exists: '--homes'",
            ][..],
        ),
        (
            &["demmo"][..],
            &["unrecognized subcommand 'demmo'", "'demo'"][..],
        ),
    ] {
        let out = gridchan(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: ") && err.trim_end().ends_with("(see --help)"),
            "{err}"
        );
        for w in wanted {
            assert!(err.contains(w), "{args:?}: {err}");
        }
    }
}

#[test]
fn evm_deploy_refuses_a_bad_token_an_open_key_file_and_an_unreachable_chain_in_one_line() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("deployer.key");
    std::fs::write(&key, format!("{}\n", "11".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let k = key.to_str().unwrap();
    // Port 1 on loopback: nothing listens there.
    let rpc = "http://127.0.0.1:1";
    let cases: [(&[&str], &str); 2] = [
        (&["--token", "0x12"], "--token \"0x12\" is not an address"),
        (&[], "deployment failed"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["evm", "deploy", "--rpc", rpc, "--key", k];
        args.extend_from_slice(extra);
        let out = gridchan(&args);
        assert!(!out.status.success());
        let err = String::from_utf8(out.stderr).unwrap();
        let last = err.lines().last().unwrap_or_default();
        assert!(last.contains(expected), "{err}");
        assert!(last.starts_with("error: "), "{err}");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = gridchan(&["evm", "deploy", "--rpc", rpc, "--key", k]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("readable by others"), "{err}");
}

#[test]
fn gateway_benchmark_runs_across_two_processes_and_reports_its_floor() {
    let out = gridchan(&["bench", "gateway", "--updates", "100"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("floor"), "{text}");
    assert!(text.contains("ratio"), "{text}");
}

#[test]
fn a_daemon_whose_port_is_taken_says_so_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::init(dir.path());
    // Someone else holds the UDP port the config names.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = dir.path().join("gridchan.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        // A well-formed ledger address (nobody is asked: the listen port fails first).
        .replace("PUBKEY@127.0.0.1:7400", &format!("{node}@127.0.0.1:9"));
    std::fs::write(&config, text).unwrap();
    let out = gridchan(&["daemon", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

/// `GRIDCHAN_LOG` sets what is logged; a log that does not go to a terminal has no colour codes.
#[test]
fn a_redirected_log_is_plain_text_at_the_level_asked() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gridchan"))
        .args([
            "bench",
            "market",
            "--members",
            "2",
            "--intervals",
            "1",
            "--interval-ms",
            "1000",
        ])
        .env("GRIDCHAN_LOG", "info")
        .output()
        .expect("gridchan runs");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(" INFO "),
        "info lines at GRIDCHAN_LOG=info: {err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no escape codes in a redirected log: {err}"
    );
}
