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
