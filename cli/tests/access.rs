//! Secrets and access: the control API answers only the gateway's owner, even when its socket
//! is left open by mistake; no key material appears in logs or in `--json` output.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::{configure, gridchan, init, ledger, meter_file, wait_for_daemon, Proc};

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // The test makes files it creates; their owner is who we are.
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().metadata().unwrap().uid() == 0
}

#[test]
fn the_control_api_refuses_other_users_and_no_secret_is_ever_printed() {
    let root = tempfile::tempdir().unwrap();
    let da = root.path().join("a");
    let node_a = init(&da);
    let ledger_dir = root.path().join("ledger");
    let (_ledger, ledger_addr) = ledger(&ledger_dir, "127.0.0.1:0", &[&node_a]);
    configure(&da, &ledger_addr, &meter_file(&da, 0, 100), None);
    let config = da.join("gridchan.toml");
    // The daemon with every log line it can write, kept.
    let log_path = root.path().join("daemon.log");
    let child = Command::new(env!("CARGO_BIN_EXE_gridchan"))
        .args(["daemon", "--config", config.to_str().unwrap()])
        .env("GRIDCHAN_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let _daemon = Proc(child);
    wait_for_daemon(&config);
    let mut printed = String::new();
    for args in [
        vec!["status", "--json"],
        vec!["channel", "list", "--json"],
        vec!["tower", "list", "--json"],
        vec!["status"],
    ] {
        let mut args = args.clone();
        args.extend(["--config", config.to_str().unwrap()]);
        let out = gridchan(&args);
        assert!(out.status.success(), "{args:?}");
        printed.push_str(&String::from_utf8_lossy(&out.stdout));
        printed.push_str(&String::from_utf8_lossy(&out.stderr));
    }

    if running_as_root() {
        // Loosen everything on the way to the socket, as a careless installer might; another
        // user still gets a one-line refusal from the daemon itself.
        for dir in [root.path(), &da, &da.join("data")] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        let socket = da.join("data/control.sock");
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_gridchan"))
            .args(["status", "--config", config.to_str().unwrap()])
            .uid(65_534)
            .gid(65_534)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "another user was answered");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("answers only its owner"), "{err}");
    }

    // The secret key, in every form it could be printed in, appears nowhere.
    let secret = std::fs::read_to_string(da.join("node.key")).unwrap();
    let secret = secret.trim();
    assert_eq!(secret.len(), 64, "a 32-byte key in hex");
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(!logs.is_empty(), "debug logging wrote something");
    for text in [&printed, &logs] {
        assert!(!text.to_lowercase().contains(&secret.to_lowercase()));
        assert!(!text.contains(&secret[..16]));
    }
}

/// Sends `line` on `conn` and reads the daemon's one-line answer.
fn ask(conn: &mut std::os::unix::net::UnixStream, line: &[u8]) -> String {
    use std::io::{BufRead, Write};
    conn.write_all(line).unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(conn.try_clone().unwrap())
        .read_line(&mut answer)
        .unwrap();
    answer
}

#[test]
fn the_control_api_answers_a_malformed_or_oversized_request_with_an_error_and_stays_up() {
    use std::io::Read;
    let root = tempfile::tempdir().unwrap();
    let da = root.path().join("a");
    let node_a = init(&da);
    let (_ledger, ledger_addr) = ledger(&root.path().join("ledger"), "127.0.0.1:0", &[&node_a]);
    configure(&da, &ledger_addr, &meter_file(&da, 0, 100), None);
    let config = da.join("gridchan.toml");
    let (_daemon, _) = common::start_daemon(&config);
    let socket = da.join("data/control.sock");
    let connect = || {
        let conn = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        conn
    };

    // Garbage and an unknown operation: an error each, and the connection still serves.
    let mut conn = connect();
    let answer = ask(&mut conn, b"{not json\n");
    assert!(answer.contains("bad request"), "{answer}");
    let answer = ask(&mut conn, b"{\"op\":\"self-destruct\"}\n");
    assert!(answer.contains("bad request"), "{answer}");
    let answer = ask(&mut conn, b"{\"op\":\"status\"}\n");
    assert!(answer.contains(&node_a), "{answer}");

    // A line beyond the limit: one error, then the daemon closes the connection.
    let mut conn = connect();
    let mut huge = vec![b'x'; gridchan_gateway::control::MAX_REQUEST_LINE + 10];
    huge.push(b'\n');
    let answer = ask(&mut conn, &huge);
    assert!(answer.contains("at most"), "{answer}");
    let mut rest = Vec::new();
    assert_eq!(
        conn.read_to_end(&mut rest).unwrap(),
        0,
        "the connection closed"
    );

    // And the daemon answers the CLI as before.
    let out = gridchan(&["status", "--config", config.to_str().unwrap()]);
    assert!(out.status.success());
}
