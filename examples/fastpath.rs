//! Instruction count of the fast paths, for `valgrind --tool=callgrind`: N `try_send` +
//! `try_recv` pairs in one thread, on an SPSC, MPMC or broadcast (lossless, one
//! subscriber) channel of u64.
//!
//! ```sh
//! cargo build --release --example fastpath
//! valgrind --tool=callgrind ./target/release/examples/fastpath 1000000 spsc
//! ```
//! Subtract a run with N = 0 and divide by N for the cost of one pair.
use shmchan::broadcast::{Publisher, Subscriber};
use shmchan::{Receiver, Sender};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let which = std::env::args().nth(2).unwrap_or_else(|| "spsc".into());
    let name = format!("shmchan-fastpath-{}", std::process::id());
    let mut sum = 0u64;
    match which.as_str() {
        "spsc" => {
            let tx = Sender::<u64>::create(&name, 1024)?;
            let rx = Receiver::<u64>::open(&name)?;
            for i in 0..n {
                tx.try_send(i)?;
                sum = sum.wrapping_add(rx.try_recv()?);
            }
        }
        "mpmc" => {
            let tx = shmchan::mpmc::Sender::<u64>::create(&name, 1024)?;
            let rx = shmchan::mpmc::Receiver::<u64>::open(&name)?;
            for i in 0..n {
                tx.try_send(i)?;
                sum = sum.wrapping_add(rx.try_recv()?);
            }
        }
        "broadcast" => {
            let tx = Publisher::<u64>::create(&name, 1024)?;
            let rx = Subscriber::<u64>::open(&name)?;
            for i in 0..n {
                tx.try_send(i)?;
                sum = sum.wrapping_add(rx.try_recv()?);
            }
        }
        other => return Err(format!("unknown flavor {other}: spsc, mpmc or broadcast").into()),
    }
    println!("{sum}");
    Ok(())
}
