//! The `shmchan` command-line tool (work in progress: see `cli.rs`).
fn main() {}
