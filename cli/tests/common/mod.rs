//! Running the built `gridchan` binary.

use std::process::{Command, Output};

pub fn gridchan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gridchan"))
        .args(args)
        .output()
        .expect("gridchan runs")
}
