//! iceoryx2 0.10's publish-subscribe round trip, as a peer of the broadcast round trip
//! (feature `bench-iceoryx2`): the parent publishes a u64 on one service, a child
//! process (pinned to CPU 1) receives it with a busy `receive()` loop and publishes it
//! back on a second service, which the parent polls the same way. Same message, same
//! pinning, same timing as `bcast_bench::rtt`.

use iceoryx2::prelude::*;
use std::error::Error;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const CHILD_ENV: &str = "SHMCHAN_IOX_BENCH_CHILD";
/// Ends the echo loop.
const END: u64 = u64::MAX;
/// Asks for an echo while the two sides connect.
const HELLO: u64 = u64::MAX - 1;

type Pub = iceoryx2::port::publisher::Publisher<ipc::Service, u64, ()>;
type Sub = iceoryx2::port::subscriber::Subscriber<ipc::Service, u64, ()>;

fn ports(node: &Node<ipc::Service>, out: &str, inp: &str) -> Result<(Pub, Sub)> {
    let a = node
        .service_builder(&out.try_into()?)
        .publish_subscribe::<u64>()
        .open_or_create()?;
    let b = node
        .service_builder(&inp.try_into()?)
        .publish_subscribe::<u64>()
        .open_or_create()?;
    Ok((
        a.publisher_builder().create()?,
        b.subscriber_builder().create()?,
    ))
}

fn send(p: &Pub, v: u64) -> Result<()> {
    p.loan_uninit()?.write_payload(v).send()?;
    Ok(())
}

fn spin_recv(s: &Sub, until: Option<Instant>) -> Result<Option<u64>> {
    loop {
        if let Some(sample) = s.receive()? {
            return Ok(Some(*sample));
        }
        if until.is_some_and(|t| Instant::now() >= t) {
            return Ok(None);
        }
        std::hint::spin_loop();
    }
}

/// If this process is an iceoryx2 benchmark child, runs the echo and exits.
pub fn maybe_run_child() {
    let Ok(base) = std::env::var(CHILD_ENV) else {
        return;
    };
    let r = (|| -> Result<()> {
        let _ = crate::baselines::pin_to_cpu(1);
        let node = NodeBuilder::new().create::<ipc::Service>()?;
        let (tx, rx) = ports(&node, &format!("{base}/b"), &format!("{base}/a"))?;
        loop {
            let Some(v) = spin_recv(&rx, Some(Instant::now() + Duration::from_secs(30)))? else {
                return Err("no message for 30 s".into());
            };
            send(&tx, v)?;
            if v == END {
                return Ok(());
            }
        }
    })();
    match r {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("shmchan iceoryx2 bench child: {e}");
            std::process::exit(1)
        }
    }
}

fn reap(mut c: Child) -> Result<()> {
    let t = Instant::now();
    loop {
        if let Some(st) = c.try_wait()? {
            return if st.success() {
                Ok(())
            } else {
                Err(format!("iceoryx2 benchmark child failed: {st}").into())
            };
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = c.kill();
            let _ = c.wait();
            return Err("iceoryx2 benchmark child did not exit".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `iters` timed round trips (after a warm-up): sorted nanoseconds.
pub fn rtt(iters: usize) -> Result<Vec<u64>> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = format!("shmchan-bench-iox-{}-{n}", std::process::id());
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let (tx, rx) = ports(&node, &format!("{base}/a"), &format!("{base}/b"))?;
    let child = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, &base)
        .stdin(Stdio::null())
        .spawn()?;
    // Connect: a publisher delivers to the subscribers it knows at send time, so say
    // hello until one comes back, then drain the extra hellos.
    let t = Instant::now();
    loop {
        send(&tx, HELLO)?;
        if spin_recv(&rx, Some(Instant::now() + Duration::from_millis(5)))?.is_some() {
            break;
        }
        if t.elapsed() > Duration::from_secs(10) {
            return Err("the iceoryx2 echo child never answered".into());
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    while spin_recv(&rx, Some(Instant::now()))?.is_some() {}
    let warm = (iters * 5).clamp(2_000, 20_000);
    let mut samples = crate::baselines::sample_buffer(iters);
    for i in 0..(warm + iters) as u64 {
        let t0 = Instant::now();
        send(&tx, i)?;
        let v = spin_recv(&rx, None)?;
        crate::baselines::record(&mut samples, i as usize, t0);
        if v != Some(i) {
            return Err(format!("iceoryx2 echo returned {v:?}, expected {i}").into());
        }
    }
    send(&tx, END)?;
    let _ = spin_recv(&rx, Some(Instant::now() + Duration::from_secs(1)));
    reap(child)?;
    samples.sort_unstable();
    Ok(samples)
}
