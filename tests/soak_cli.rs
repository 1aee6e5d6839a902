//! `shmchan soak` end to end: a short crash soak of each flavor (broadcast: of each
//! policy) through the built binary must kill children, move messages, find no
//! violation and leave nothing in `/dev/shm`.
#![cfg(feature = "cli")]

use serde_json::Value;
use std::process::Command;
use std::sync::Mutex;

/// The runs share a 2-core machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn soak(flavor: &str) -> Value {
    soak_with(flavor, "5s", &[])
}

fn soak_with(flavor: &str, duration: &str, extra: &[&str]) -> Value {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_shmchan"))
        .args([
            "soak",
            "--flavor",
            flavor,
            "--duration",
            duration,
            "--kill-every-ms",
            "5..100",
            "--progress-secs",
            "0",
            "--json",
        ])
        .args(extra)
        .output()
        .expect("run shmchan soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "shmchan soak --flavor {flavor} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}):\n{stdout}\n{stderr}"));
    println!("{flavor}: {v}");
    v
}

fn num(v: &Value, path: &[&str]) -> u64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

/// What every flavor's summary must show.
fn check_common(v: &Value) {
    assert!(
        num(v, &["kills", "producers"]) > 0,
        "no producer killed: {v}"
    );
    assert!(
        num(v, &["kills", "consumers"]) > 0,
        "no consumer killed: {v}"
    );
    assert!(
        num(v, &["messages", "delivered"]) > 0,
        "nothing delivered: {v}"
    );
    assert!(
        num(v, &["messages", "acknowledged"]) > 0,
        "nothing sent: {v}"
    );
    for k in [
        "duplicates",
        "torn",
        "never_sent",
        "child_failures",
        "stop_failures",
        "violations",
    ] {
        assert_eq!(num(v, &[k]), 0, "{k}: {v}");
    }
    assert_eq!(num(v, &["stall_ms", "over_limit"]), 0, "stalls: {v}");
    assert_eq!(v["leftover_shm"], Value::Array(Vec::new()), "{v}");
    assert_eq!(v["ok"], Value::Bool(true), "{v}");
}

fn check(v: &Value) {
    check_common(v);
    assert_eq!(num(v, &["reordered"]), 0, "reordered: {v}");
    assert!(
        num(v, &["lost"]) <= num(v, &["lost_allowance"]),
        "lost beyond the allowance: {v}"
    );
}

/// A broadcast soak: no gap, no unexplained lag, every surviving subscriber at the
/// end of the stream, every publisher handover in place.
fn check_broadcast(v: &Value, policy: &str) {
    check_common(v);
    assert_eq!(v["policy"], Value::String(policy.into()), "{v}");
    for k in [
        "gaps",
        "lossless_lags",
        "lag_mismatches",
        "bad_start",
        "incomplete",
        "unpublished_delivered",
    ] {
        assert_eq!(num(v, &["broadcast", k]), 0, "{k}: {v}");
    }
    assert_eq!(
        num(v, &["broadcast", "handovers", "out_of_place"]),
        0,
        "{v}"
    );
    // Three subscribers to the end: each received the whole stream's tail.
    assert_eq!(num(v, &["broadcast", "complete_at_end"]), 3, "{v}");
}

#[test]
fn soak_mpmc_survives_random_sigkills() {
    check(&soak("mpmc"));
}

#[test]
fn soak_spsc_survives_random_sigkills() {
    let v = soak("spsc");
    check(&v);
    // SPSC: every redelivery is one a killed consumer recorded but had not released.
    assert!(num(&v, &["spsc_redeliveries"]) <= num(&v, &["kills", "consumers"]));
}

#[test]
fn soak_broadcast_lossless_survives_random_sigkills() {
    check_broadcast(
        &soak_with("broadcast", "3s", &["--policy", "lossless"]),
        "lossless",
    );
}

#[test]
fn soak_broadcast_overwrite_survives_random_sigkills() {
    check_broadcast(
        &soak_with("broadcast", "3s", &["--policy", "overwrite"]),
        "overwrite",
    );
}
