//! `Duration::MAX` anywhere a duration is accepted (issue 11, defect 7): as the liveness
//! interval, the init timeout, the spin of `SpinThenPark`, or a timeout. Each used to
//! panic on `Instant` overflow somewhere between `Options` and the futex; each now means
//! "never" (or "forever"), and the channel works as usual.

mod common;

use common::{MUST_FINISH, PROMPTLY, ShmGuard};
use shmchan::{CreateMode, Options, RecvTimeoutError, SendTimeoutError, WaitStrategy};
use std::time::{Duration, Instant};

/// Every duration in `Options` at its maximum, with the given strategy.
fn max_options(wait: WaitStrategy) -> Options {
    Options::new()
        .liveness_interval(Duration::MAX)
        .init_timeout(Duration::MAX)
        .wait_strategy(wait)
}

const STRATEGIES: [WaitStrategy; 3] = [
    WaitStrategy::SpinThenPark {
        spin: Duration::MAX,
    },
    WaitStrategy::Block,
    WaitStrategy::BusySpin,
];

#[test]
fn spsc_with_every_duration_at_max() {
    for wait in STRATEGIES {
        let (_guard, name) = ShmGuard::fresh("dur-max-spsc");
        let opts = max_options(wait);
        let create = opts.clone().capacity(1).mode(CreateMode::CreateExclusive);
        let tx = shmchan::Sender::<u64>::with_options(&name, &create).expect("create");
        let rx = shmchan::Receiver::<u64>::with_options(&name, &opts).expect("open");

        // Timeouts end on time (a short one), or never (Duration::MAX).
        let t = Instant::now();
        let r = rx.recv_timeout(Duration::from_millis(3));
        assert_eq!(r, Err(RecvTimeoutError::Timeout), "{wait:?}");
        assert!(t.elapsed() >= Duration::from_millis(3));
        assert!(t.elapsed() < PROMPTLY, "{wait:?}");
        tx.send_timeout(1, Duration::MAX).expect("room");
        let r = tx.send_timeout(2, Duration::from_millis(3));
        assert!(matches!(r, Err(SendTimeoutError::Timeout(2))), "{wait:?}");
        assert_eq!(rx.recv_timeout(Duration::MAX), Ok(1));

        // A waiter with no deadline and no liveness slice is woken by the sender.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            tx.send(3).expect("send");
            tx
        });
        assert_eq!(rx.recv_timeout(Duration::MAX), Ok(3));
        let tx = sender.join().unwrap();
        // And by its leaving.
        drop(tx);
        let t = Instant::now();
        assert_eq!(
            rx.recv_timeout(Duration::MAX),
            Err(RecvTimeoutError::Disconnected)
        );
        assert!(t.elapsed() < MUST_FINISH);
    }
}

#[test]
fn mpmc_with_every_duration_at_max() {
    for wait in STRATEGIES {
        let (_guard, name) = ShmGuard::fresh("dur-max-mpmc");
        let opts = max_options(wait);
        let create = opts.clone().capacity(1).mode(CreateMode::CreateExclusive);
        let tx = shmchan::mpmc::Sender::<u64>::with_options(&name, &create).expect("create");
        let rx = shmchan::mpmc::Receiver::<u64>::with_options(&name, &opts).expect("open");

        let t = Instant::now();
        let r = rx.recv_timeout(Duration::from_millis(3));
        assert_eq!(r, Err(RecvTimeoutError::Timeout), "{wait:?}");
        assert!(t.elapsed() >= Duration::from_millis(3));
        assert!(t.elapsed() < PROMPTLY, "{wait:?}");
        tx.send_timeout(1, Duration::MAX).expect("room");
        let r = tx.send_timeout(2, Duration::from_millis(3));
        assert!(matches!(r, Err(SendTimeoutError::Timeout(2))), "{wait:?}");
        assert_eq!(rx.recv_timeout(Duration::MAX), Ok(1));

        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            tx.send(3).expect("send");
            tx
        });
        assert_eq!(rx.recv_timeout(Duration::MAX), Ok(3));
        let tx = sender.join().unwrap();
        drop(tx);
        assert_eq!(
            rx.recv_timeout(Duration::MAX),
            Err(RecvTimeoutError::Disconnected)
        );
    }
}
