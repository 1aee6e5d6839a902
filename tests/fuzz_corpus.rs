//! Replays the fuzz corpora on stable: every file of `fuzz/corpus/<target>/`, in name
//! order, through the same target function `cargo fuzz` runs (`fuzz/src/`, included
//! here by path; see `fuzz/README.md`).
//!
//! Inputs that still crash because of a known, unfixed bug are kept apart in
//! `fuzz/regressions/<target>/` and are replayed only by the ignored test
//! `known_bug_regressions` (`cargo test --test fuzz_corpus -- --ignored`); once the
//! bug is fixed, un-ignore it (or move the inputs into the corpus).

#[path = "../fuzz/src/lib.rs"]
mod fuzz;

use std::path::{Path, PathBuf};
use std::time::Instant;

/// The files of `fuzz/<set>/<target>/`, sorted by name.
fn inputs(set: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(set)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    files
}

/// Runs `run` on every file of `fuzz/<set>/<target>/`; fails if there are none.
fn replay(set: &str, target: &str, run: fn(&[u8])) {
    let files = inputs(set, target);
    assert!(
        !files.is_empty(),
        "fuzz/{set}/{target}/ is empty: nothing was replayed"
    );
    let start = Instant::now();
    for path in &files {
        let data = std::fs::read(path).expect("read corpus file");
        // Name the input in the failure message; the panic itself shows the assertion.
        eprintln!("replaying {}", path.display());
        run(&data);
    }
    eprintln!(
        "{set}/{target}: replayed {} inputs in {:?}",
        files.len(),
        start.elapsed()
    );
    // No object of this process's replays is left behind.
    let mine = format!("{}-{target}-{}-", fuzz::NAME_PREFIX, std::process::id());
    let left: Vec<String> = std::fs::read_dir(fuzz::SHM_DIR)
        .expect("list /dev/shm")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&mine))
        .collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
}

#[test]
fn attach_corpus() {
    replay("corpus", "attach", fuzz::attach::run);
}

#[test]
fn ops_corpus() {
    replay("corpus", "ops", fuzz::ops::run);
}

#[test]
fn hostile_corpus() {
    replay("corpus", "hostile", fuzz::hostile::run);
}

#[test]
fn mpmc_ops_corpus() {
    replay("corpus", "mpmc_ops", fuzz::mpmc::ops);
}

#[test]
fn mpmc_hostile_corpus() {
    replay("corpus", "mpmc_hostile", fuzz::mpmc::hostile);
}

#[test]
fn bcast_ops_corpus() {
    replay("corpus", "bcast_ops", fuzz::bcast::ops);
}

#[test]
fn bcast_hostile_corpus() {
    replay("corpus", "bcast_hostile", fuzz::bcast::hostile);
}

/// Inputs that crash on known, unfixed bugs in `src/` (see `fuzz/README.md`), each
/// through its target. Un-ignore this test (or move the inputs into the corpus)
/// with the fix.
#[test]
#[ignore = "replays fuzz/regressions/: inputs for known, unfixed bugs"]
fn known_bug_regressions() {
    for (target, run) in [
        ("attach", fuzz::attach::run as fn(&[u8])),
        ("ops", fuzz::ops::run),
        ("hostile", fuzz::hostile::run),
        ("mpmc_ops", fuzz::mpmc::ops),
        ("mpmc_hostile", fuzz::mpmc::hostile),
        ("bcast_ops", fuzz::bcast::ops),
        ("bcast_hostile", fuzz::bcast::hostile),
    ] {
        for path in inputs("regressions", target) {
            eprintln!("replaying {}", path.display());
            run(&std::fs::read(&path).expect("read regression input"));
        }
    }
}
