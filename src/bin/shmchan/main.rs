//! `shmchan`: list, inspect, remove and benchmark shared-memory channels.
//!
//! ```text
//! shmchan ls                 # channels in /dev/shm, with their peers
//! shmchan stat NAME [--json] # one channel's header
//! shmchan rm NAME...         # remove channels (or --stale: those with no live peer)
//! shmchan bench [...]        # round trip, throughput, wake-up, baselines
//! ```

mod admin;
mod baselines;
mod bcast_bench;
mod bench;
#[cfg(feature = "bench-iceoryx2")]
mod iox_bench;
mod mpmc_bench;
mod rtrb_baseline;
mod soak;
mod svg;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "shmchan",
    version,
    about = "Shared-memory channels: inspect, remove, benchmark"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List the shmchan channels in /dev/shm.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one channel's header, positions and peers.
    Stat {
        /// Channel name (with or without the leading '/').
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove channels by name (like shm_unlink; attached processes keep their mapping).
    Rm {
        /// Channel names.
        names: Vec<String>,
        /// Remove every channel whose peers are all dead (or that never had one and
        /// whose creator is dead).
        #[arg(long)]
        stale: bool,
        /// Also remove objects that are not shmchan channels.
        #[arg(long)]
        force: bool,
    },
    /// Measure round trips, throughput and wake-ups between two processes.
    Bench(bench::BenchArgs),
    /// Crash soak: SIGKILL random producers/consumers for a while, verify exactly-once.
    Soak(soak::SoakArgs),
}

fn main() -> ExitCode {
    // Re-executed copies of this binary serve as the second process of a benchmark.
    baselines::maybe_run_child();
    bench::maybe_run_child();
    bcast_bench::maybe_run_child();
    #[cfg(feature = "bench-iceoryx2")]
    iox_bench::maybe_run_child();
    mpmc_bench::maybe_run_child();
    soak::maybe_run_child();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Ls { json } => admin::ls(json),
        Cmd::Stat { name, json } => admin::stat(&name, json),
        Cmd::Rm {
            names,
            stale,
            force,
        } => admin::rm(&names, stale, force),
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Soak(args) => soak::run(&args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmchan: {e}");
            ExitCode::FAILURE
        }
    }
}
