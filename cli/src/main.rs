//! `gridchan`: the command-line tool. Thin: it parses arguments and calls library code.

use anyhow::Result;
use clap::{Parser, Subcommand};

/// gridchan: peer-to-peer energy trading over state channels.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a benchmark and print it beside its floor, measured in the same run.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    /// Print the signed-state test vectors of specs/encoding.md, computed by this build.
    Vectors,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The protocol core alone: one channel's updates through the in-memory harness, both sides
    /// signing and verifying, beside 2 signs + 2 verifies.
    Core {
        /// Updates to settle.
        #[arg(long, default_value_t = 20_000)]
        updates: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Commands::Bench {
            which: BenchCommand::Core { updates },
        } => gridchan_cli::bench_core(updates),
        Commands::Vectors => {
            print!("{}", gridchan_cli::vectors::render());
            Ok(())
        }
    }
}
