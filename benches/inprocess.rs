//! In-process costs of the fast paths (one thread: no cache-line transfers), next to
//! rtrb's. Run: `cargo bench --bench inprocess`.

use criterion::{Criterion, Throughput, criterion_main};
use shmchan::{CreateMode, Options, Receiver, Sender, mpmc};
use std::hint::black_box;

fn name(what: &str) -> String {
    format!("shmchan-cbench-{what}-{}", std::process::id())
}

fn spsc_pair(what: &str, cap: usize) -> (Sender<u64>, Receiver<u64>) {
    let n = name(what);
    let opts = Options::new()
        .capacity(cap)
        .mode(CreateMode::PurgeAndCreate);
    let tx = Sender::with_options(&n, &opts).expect("create");
    let rx = Receiver::open(&n).expect("open");
    (tx, rx)
}

fn fast_paths(c: &mut Criterion) {
    let mut g = c.benchmark_group("send+recv one u64");
    g.throughput(Throughput::Elements(1));

    let (tx, rx) = spsc_pair("one", 1024);
    g.bench_function("shmchan spsc try_send+try_recv", |b| {
        b.iter(|| {
            tx.try_send(black_box(7)).expect("room");
            black_box(rx.try_recv().expect("message"))
        })
    });

    let n = name("mpmc");
    let mtx = mpmc::Sender::<u64>::with_options(
        &n,
        &Options::new()
            .capacity(1024)
            .mode(CreateMode::PurgeAndCreate),
    )
    .expect("create");
    let mrx = mpmc::Receiver::<u64>::open(&n).expect("open");
    g.bench_function("shmchan mpmc try_send+try_recv", |b| {
        b.iter(|| {
            mtx.try_send(black_box(7)).expect("room");
            black_box(mrx.try_recv().expect("message"))
        })
    });

    let (mut p, mut q) = rtrb::RingBuffer::<u64>::new(1024);
    g.bench_function("rtrb push+pop", |b| {
        b.iter(|| {
            p.push(black_box(7)).expect("room");
            black_box(q.pop().expect("message"))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("batch of 64 u64");
    g.throughput(Throughput::Elements(64));
    let (tx, rx) = spsc_pair("batch", 1024);
    let msgs: Vec<u64> = (0..64).collect();
    let mut out = vec![0u64; 64];
    g.bench_function("shmchan spsc try_send_batch+try_recv_batch", |b| {
        b.iter(|| {
            assert_eq!(tx.try_send_batch(black_box(&msgs)).expect("room"), 64);
            assert_eq!(rx.try_recv_batch(&mut out).expect("messages"), 64);
            black_box(out[63])
        })
    });
    let (tx, rx) = spsc_pair("batch1", 1024);
    g.bench_function("shmchan spsc 64 x try_send+try_recv", |b| {
        b.iter(|| {
            for &m in &msgs {
                tx.try_send(m).expect("room");
            }
            for o in out.iter_mut() {
                *o = rx.try_recv().expect("message");
            }
            black_box(out[63])
        })
    });
    let (mut p, mut q) = rtrb::RingBuffer::<u64>::new(1024);
    g.bench_function("rtrb 64 x push+pop", |b| {
        b.iter(|| {
            for &m in &msgs {
                p.push(m).expect("room");
            }
            for o in out.iter_mut() {
                *o = q.pop().expect("message");
            }
            black_box(out[63])
        })
    });
    g.finish();
}

mod group {
    #![allow(missing_docs)]
    use super::fast_paths;
    criterion::criterion_group!(benches, fast_paths);
}

criterion_main!(group::benches);
