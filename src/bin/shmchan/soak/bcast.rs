//! `shmchan soak --flavor broadcast`: one publisher process and `--consumers`
//! subscriber processes, killed and replaced at random like the other flavors'
//! children, with the same record files, stall measurement and clean-up.
//!
//! # The stream
//!
//! The sequence number of a message is its position on the channel, and its tag is
//! the publisher incarnation's (one tag per incarnation), so a message checks itself
//! against both. A publisher starts at [`Publisher::position`](broadcast::Publisher::position)
//! (where its predecessor stopped; a message the predecessor was killed writing, not
//! yet published, is published again by the successor, under the successor's tag). Its
//! record file holds the position it attached at (`H_START`, plus one), `sent_hi` (one
//! past the position it may be publishing) and `acked` (one past the last position
//! whose send returned `Ok`); it checks after every send that `position()` moved with
//! it.
//!
//! A subscriber attaches with [`Start::Next`], stores the position it attached at, and
//! logs each message's record (`tag << 40 | position`), a `Lagged(n)` report as a
//! record of [`LAG_TAG`] and `n`, and a torn message as a record of [`TORN_TAG`].
//!
//! # Verdicts, for every subscriber incarnation
//!
//! The parent follows each incarnation's next due position, from where it attached:
//! a message must be exactly the one due (then the next one is due); a lag report of
//! `n` makes the one `n` later due.
//!
//! - gap: a message later than the one due, with no lag report before it;
//! - lag mismatch (overwrite): a message after lag reports that is not exactly the one
//!   they made due (the count was not exact);
//! - lossless lag: any lag report on a lossless channel;
//! - duplicate: a message earlier than the one due (received again, or out of order);
//! - torn: a message whose payload or checksum does not match its tag and position;
//! - never published: a tag that is no publisher's, or a position outside what that
//!   publisher incarnation published (its attach position to its `sent_hi`);
//! - unpublished: a position received under a publisher's tag at or after the
//!   position its successor attached at (the predecessor was killed writing it, so it
//!   was never published; the successor published it);
//! - handover: a publisher that attached anywhere but between its predecessor's
//!   `acked` and `sent_hi` (the first one: anywhere but 0);
//! - bad start: a subscriber that attached below the position acknowledged before it
//!   was spawned (`Start::Next` must not replay published messages);
//! - incomplete: a subscriber that lived to the end and left on `Disconnected` at a
//!   position other than the end of the stream (lossless: it missed the tail; both:
//!   the lag counts do not add up);
//! - stall: after each kill, every subscriber slot (the victim's replacement included)
//!   must reach `capacity × 2 + subscribers + 8` positions past the position
//!   acknowledged at the kill within `--stall-limit-ms`;
//! - child failures and leftovers as for the other flavors.

use super::{
    ChildSpec, H_ATTACHED, H_DONE, H_START, Ledger, Log, MAX_TAGS, Msg, PAGE, Rng, SEQ_BITS,
    SEQ_MASK, STEP, Summary, Words, attach, consumer_file_len, draining, mono_ns, nap, p_acked,
    p_sent_hi, running,
};
use serde_json::json;
use shmchan::broadcast::{self, Policy, RecvError, RecvTimeoutError, Start, TryRecvError};
use shmchan::{SendTimeoutError, TrySendError};
use std::sync::atomic::Ordering;
use std::time::Duration;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `--policy`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyArg {
    /// The publisher waits for the slowest live subscriber.
    Lossless,
    /// The publisher never waits; lapped subscribers get `Lagged(n)`.
    Overwrite,
}

impl PolicyArg {
    pub(super) fn policy(self) -> Policy {
        match self {
            PolicyArg::Lossless => Policy::Lossless,
            PolicyArg::Overwrite => Policy::Overwrite,
        }
    }
}

/// Tag of a lag report's record; its sequence bits are the count.
const LAG_TAG: u64 = MAX_TAGS as u64 - 1;
/// Tag of a torn message's record (the message took a position).
const TORN_TAG: u64 = MAX_TAGS as u64 - 2;

fn lag_record(n: u64) -> u64 {
    LAG_TAG << SEQ_BITS | n.min(SEQ_MASK)
}

/// The record a subscriber logs for a torn message.
pub(super) fn torn_record() -> u64 {
    TORN_TAG << SEQ_BITS
}

/// Longest run of messages an overwrite publisher sends before a pause, in rings.
const BURST_RINGS: u64 = 4;

// ---------------------------------------------------------------------------------
// Children.
// ---------------------------------------------------------------------------------

impl ChildSpec {
    /// The publisher: message `seq` goes to position `seq`, from where the
    /// predecessor stopped. Every send path: non-blocking, blocking, with a timeout.
    /// Under the overwrite policy it pauses now and then, so that subscribers both
    /// keep up and get lapped.
    pub(super) fn bcast_publisher(&self, ctl: &Words) -> Result<()> {
        let me = Words::open(&self.file(), PAGE)?;
        let tx = attach(|| broadcast::Publisher::<Msg>::with_options(&self.name, &self.opts()))?;
        let start = tx.position();
        if start >= SEQ_MASK {
            return Err(format!("publisher attached at position {start}, past the soak's").into());
        }
        let (sent_hi, acked) = (me.w(p_sent_hi(0)), me.w(p_acked(0)));
        sent_hi.store(start, Ordering::Release);
        acked.store(start, Ordering::Release);
        // After `sent_hi` and `acked`: the parent reads them once it sees the start.
        me.w(H_START).store(start + 1, Ordering::SeqCst);
        me.w(H_ATTACHED).store(mono_ns().max(1), Ordering::SeqCst);
        let tag = self.tag_base;
        let pace = tx.policy() == Policy::Overwrite;
        let cap = tx.capacity() as u64;
        let mut rng = Rng::from_entropy(2);
        let mut burst = rng.between(1, BURST_RINGS * cap);
        let mut seq = start;
        while running(ctl) && seq < SEQ_MASK {
            let m = Msg::new(tag, seq);
            sent_hi.store(seq + 1, Ordering::Release);
            let ok = match rng.below(8) {
                0 | 1 => match tx.try_send(m) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        std::thread::yield_now();
                        false
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        return Err("try_send: Disconnected (not a forked child)".into());
                    }
                },
                2 => {
                    tx.send(m)
                        .map_err(|_| "send: Disconnected (not a forked child)")?;
                    true
                }
                _ => match tx.send_timeout(m, STEP) {
                    Ok(()) => true,
                    Err(SendTimeoutError::Timeout(_)) => false,
                    Err(SendTimeoutError::Disconnected(_)) => {
                        return Err("send_timeout: Disconnected (not a forked child)".into());
                    }
                },
            };
            if !ok {
                continue;
            }
            seq += 1;
            // Only after Ok: everything below `seq` was published.
            acked.store(seq, Ordering::Release);
            if tx.position() != seq {
                return Err(format!(
                    "position {} after publishing position {} (attached at {start})",
                    tx.position(),
                    seq - 1
                )
                .into());
            }
            if pace {
                burst -= 1;
                if burst == 0 {
                    burst = rng.between(1, BURST_RINGS * cap);
                    if rng.below(2) == 0 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(rng.between(20, 300)));
                    }
                }
            }
        }
        // Leaving cleanly: nothing at or past `seq` was published.
        sent_hi.store(seq, Ordering::Release);
        drop(tx);
        me.w(H_DONE).store(1, Ordering::SeqCst);
        Ok(())
    }

    /// A subscriber from the next message on. Every receive path: non-blocking,
    /// blocking, with a timeout, both iterators.
    pub(super) fn bcast_subscriber(&self, ctl: &Words) -> Result<()> {
        let me = Words::open(&self.file(), consumer_file_len(1))?;
        let opts = self.opts().start(Start::Next);
        let rx = attach(|| broadcast::Subscriber::<Msg>::with_options(&self.name, &opts))?;
        me.w(H_START)
            .store(rx.position().saturating_add(1), Ordering::SeqCst);
        me.w(H_ATTACHED).store(mono_ns().max(1), Ordering::SeqCst);
        let mut log = Log::new(&me, 0, self.ppid, self.inject);
        log.mark_torn = true;
        let mut rng = Rng::from_entropy(3);
        loop {
            // `Disconnected` means the end only if the publishers had all left before
            // this receive began (one killed meanwhile is replaced).
            let end = draining(ctl);
            let gone = match rng.below(10) {
                0..=2 => match rx.try_recv() {
                    Ok(m) => {
                        log.take(&m)?;
                        false
                    }
                    Err(TryRecvError::Lagged(n)) => {
                        log.push(lag_record(n))?;
                        false
                    }
                    Err(TryRecvError::Empty) => {
                        std::thread::yield_now();
                        false
                    }
                    Err(TryRecvError::Disconnected) => true,
                },
                3 => {
                    let mut got = 0;
                    for item in rx.try_iter().take(16) {
                        got += 1;
                        match item {
                            Ok(m) => log.take(&m)?,
                            Err(n) => log.push(lag_record(n))?,
                        }
                    }
                    if got == 0 {
                        std::thread::yield_now();
                    }
                    false
                }
                4 => {
                    // Ends early only on Disconnected.
                    let mut got = 0;
                    for item in rx.iter().take(4) {
                        got += 1;
                        match item {
                            Ok(m) => log.take(&m)?,
                            Err(n) => log.push(lag_record(n))?,
                        }
                    }
                    got < 4
                }
                5 => match rx.recv() {
                    Ok(m) => {
                        log.take(&m)?;
                        false
                    }
                    Err(RecvError::Lagged(n)) => {
                        log.push(lag_record(n))?;
                        false
                    }
                    Err(RecvError::Disconnected) => true,
                },
                _ => match rx.recv_timeout(STEP) {
                    Ok(m) => {
                        log.take(&m)?;
                        false
                    }
                    Err(RecvTimeoutError::Lagged(n)) => {
                        log.push(lag_record(n))?;
                        false
                    }
                    Err(RecvTimeoutError::Timeout) => false,
                    Err(RecvTimeoutError::Disconnected) => true,
                },
            };
            if gone {
                if end {
                    break;
                }
                // The publisher was killed: its replacement is on its way.
                nap();
            }
        }
        drop(rx);
        me.w(H_DONE).store(1, Ordering::SeqCst);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// The parent's books.
// ---------------------------------------------------------------------------------

/// The parent's books of one subscriber incarnation.
#[derive(Debug, Default)]
pub(super) struct SubBooks {
    /// The position it attached at, once known.
    start: Option<u64>,
    /// The position of the message due next.
    next: u64,
    /// The last record was a lag report: the next message must be exactly `next`.
    after_lag: bool,
    /// Records folded.
    records: u64,
    /// The position acknowledged when it was spawned: it must start at or after it.
    floor: u64,
}

impl SubBooks {
    pub(super) fn new(floor: u64) -> SubBooks {
        SubBooks {
            floor,
            ..SubBooks::default()
        }
    }

    /// How far this incarnation has come (for the stall measurement): the position
    /// due next once it has received anything, else 0.
    pub(super) fn progress(&self) -> u64 {
        if self.records > 0 { self.next } else { 0 }
    }

    /// Whether its start is known: reads it from the record file if not yet.
    pub(super) fn attach_from(&mut self, words: &Words, ledger: &mut Ledger, who: usize) -> bool {
        if self.start.is_some() {
            return true;
        }
        let s = words.w(H_START).load(Ordering::SeqCst);
        if s == 0 {
            return false;
        }
        let start = s - 1;
        self.start = Some(start);
        self.next = start;
        let bad = start < self.floor;
        if let Some(b) = ledger.bcast.as_mut() {
            b.incarnations += 1;
            b.bad_start += u64::from(bad);
        }
        if bad {
            ledger.note(format!(
                "subscriber {who} attached at position {start}, below the {} acknowledged before it was spawned",
                self.floor
            ));
        }
        true
    }
}

/// The broadcast verdicts (the ledger's own counters hold the duplicates, the
/// never-published messages, the records and the deliveries).
#[derive(Debug, Clone, Default)]
pub(super) struct Books {
    overwrite: bool,
    /// Subscriber incarnations that attached.
    incarnations: u64,
    gaps: u64,
    gap_messages: u64,
    lag_reports: u64,
    lagged_messages: u64,
    lossless_lags: u64,
    lag_mismatches: u64,
    bad_start: u64,
    incomplete: u64,
    /// Subscribers that left cleanly at the end of the stream.
    complete: u64,
    // At the end (`bcast_finish`):
    handovers: u64,
    handovers_in_flight: u64,
    handovers_unacked: u64,
    handover_bad: u64,
    unpublished: u64,
}

impl Books {
    pub(super) fn new(policy: Option<Policy>) -> Books {
        Books {
            overwrite: policy == Some(Policy::Overwrite),
            ..Books::default()
        }
    }

    pub(super) fn violations(&self) -> u64 {
        self.gaps
            + self.lossless_lags
            + self.lag_mismatches
            + self.bad_start
            + self.incomplete
            + self.handover_bad
            + self.unpublished
    }
}

impl Ledger {
    fn books(&mut self) -> &mut Books {
        self.bcast.get_or_insert_with(Books::default)
    }

    /// The position acknowledged so far: one past the last message a publisher
    /// recorded `Ok` for (fresh from the running one).
    pub(super) fn bcast_published(&mut self) -> u64 {
        let mut p = 0;
        for st in self.tags.iter_mut().skip(1) {
            st.refresh();
            if st.start != 0 {
                p = p.max(st.acked).max(st.start - 1);
            }
        }
        p
    }

    /// One record of subscriber `who`.
    pub(super) fn bcast_record(&mut self, rec: u64, sub: &mut SubBooks, who: usize) {
        self.records += 1;
        sub.records += 1;
        let (tag, seq) = (rec >> SEQ_BITS, rec & SEQ_MASK);
        if tag == LAG_TAG {
            let due = sub.next;
            sub.next = sub.next.saturating_add(seq);
            sub.after_lag = true;
            let b = self.books();
            b.lag_reports += 1;
            b.lagged_messages += seq;
            if !b.overwrite {
                b.lossless_lags += 1;
                self.note(format!(
                    "subscriber {who}: Lagged({seq}) at position {due} of a lossless channel"
                ));
            }
            return;
        }
        if tag == TORN_TAG {
            // Counted from the subscriber's file; it took the position due.
            sub.next = sub.next.saturating_add(1);
            sub.after_lag = false;
            return;
        }
        let t = tag as usize;
        let mut published = None;
        if t != 0 && t < self.tags.len() {
            let st = &mut self.tags[t];
            if st.start == 0 || seq >= st.sent_hi {
                st.refresh();
            }
            if st.start != 0 {
                let from = st.start - 1;
                if (from..st.sent_hi).contains(&seq) {
                    st.hi = st.hi.max(seq + 1);
                    published = Some(true);
                } else {
                    published = Some(false);
                    self.note(format!(
                        "subscriber {who}: position {seq} under tag {t}, which published {from}..{}",
                        self.tags[t].sent_hi
                    ));
                }
            }
        }
        if published.is_none() {
            self.note(format!(
                "subscriber {who}: position {seq} under tag {t}, no publisher's"
            ));
        }
        if published != Some(true) {
            self.never_sent += 1;
            sub.next = sub.next.saturating_add(1);
            sub.after_lag = false;
            return;
        }
        let due = sub.next;
        if seq < due && !sub.after_lag {
            self.duplicates += 1;
            self.note(format!(
                "subscriber {who}: position {seq} again (or out of order), {due} was due"
            ));
            return;
        }
        self.delivered += 1;
        if seq != due {
            if sub.after_lag {
                self.books().lag_mismatches += 1;
                self.note(format!(
                    "subscriber {who}: position {seq} after lag reports that made {due} due"
                ));
            } else {
                let b = self.books();
                b.gaps += 1;
                b.gap_messages += seq - due;
                self.note(format!(
                    "subscriber {who}: position {seq} where {due} was due: {} messages missing without a Lagged report",
                    seq - due
                ));
            }
        }
        sub.next = seq + 1;
        sub.after_lag = false;
    }

    /// The books of a subscriber whose process is gone; `clean`: it left at the end.
    pub(super) fn bcast_close(&mut self, sub: &mut SubBooks, clean: bool, who: usize) {
        if !clean {
            // Killed (or failed): every message it did receive was checked.
            return;
        }
        let end = self.bcast_published();
        if sub.start.is_some() && sub.next == end {
            self.books().complete += 1;
            return;
        }
        self.books().incomplete += 1;
        self.note(format!(
            "subscriber {who} left at the end at position {} (attached at {:?}), the stream ended at {end}",
            sub.next, sub.start
        ));
    }

    /// The publisher handovers, once every child is gone: each incarnation must have
    /// attached where its predecessor stopped, and no subscriber may have received a
    /// predecessor's message at a position its successor published.
    pub(super) fn bcast_finish(&mut self) {
        let mut prev: Option<usize> = None;
        let mut notes = Vec::new();
        let mut b = self.books().clone();
        for k in 1..self.tags.len() {
            let st = &self.tags[k];
            if st.start == 0 {
                // Killed before it attached (or before it stored where): it
                // published nothing.
                continue;
            }
            let start = st.start - 1;
            match prev {
                None if start != 0 => {
                    b.handover_bad += 1;
                    notes.push(format!(
                        "the first publisher (tag {k}) attached at position {start}, not 0"
                    ));
                }
                None => {}
                Some(j) => {
                    let p = &self.tags[j];
                    b.handovers += 1;
                    if start < p.acked || start > p.sent_hi.max(p.acked) {
                        b.handover_bad += 1;
                        notes.push(format!(
                            "publisher tag {k} attached at position {start}; its predecessor (tag {j}) had {} acknowledged, {} at most in flight",
                            p.acked, p.sent_hi
                        ));
                    } else if start > p.acked {
                        b.handovers_unacked += 1;
                    } else if p.sent_hi > p.acked {
                        b.handovers_in_flight += 1;
                    }
                    if p.hi > start {
                        b.unpublished += 1;
                        notes.push(format!(
                            "a subscriber received position {} under tag {j}, but its successor (tag {k}) attached at {start} and published it",
                            p.hi - 1
                        ));
                    }
                }
            }
            prev = Some(k);
        }
        *self.books() = b;
        for n in notes {
            self.note(n);
        }
    }

    /// The figures for the summary (after `bcast_finish`, every child gone).
    pub(super) fn bcast_report(&self, b: &Books) -> Report {
        let mut published = 0;
        let mut acknowledged = 0;
        for st in self.tags.iter().skip(1).filter(|st| st.start != 0) {
            published = published.max(st.acked);
            acknowledged += st.acked.saturating_sub(st.start - 1);
        }
        Report {
            books: b.clone(),
            published,
            acknowledged,
        }
    }
}

/// The broadcast part of the summary.
#[derive(Debug)]
pub(super) struct Report {
    books: Books,
    /// The end of the stream: messages published on the channel.
    published: u64,
    /// Of them, those whose send returned `Ok` before a kill.
    acknowledged: u64,
}

impl Report {
    pub(super) fn violations(&self) -> u64 {
        self.books.violations()
    }

    /// Messages whose send returned `Ok` (in every incarnation).
    pub(super) fn acknowledged(&self) -> u64 {
        self.acknowledged
    }

    /// Replaces the parts of the common JSON summary that do not apply.
    pub(super) fn patch_json(&self, v: &mut serde_json::Value) {
        let b = &self.books;
        let Some(o) = v.as_object_mut() else {
            return;
        };
        for k in [
            "spsc_redeliveries",
            "lost",
            "lost_allowance",
            "lost_examples",
            "reordered",
        ] {
            o.remove(k);
        }
        o.insert(
            "policy".into(),
            json!(if b.overwrite { "overwrite" } else { "lossless" }),
        );
        if let Some(m) = o.get_mut("messages").and_then(|m| m.as_object_mut()) {
            m.insert("published".into(), json!(self.published));
            m.insert(
                "published_unacknowledged".into(),
                json!(self.published.saturating_sub(self.acknowledged)),
            );
            m.remove("delivered_unacknowledged");
        }
        o.insert(
            "broadcast".into(),
            json!({
                "subscriber_incarnations": b.incarnations,
                "complete_at_end": b.complete,
                "gaps": b.gaps,
                "gap_messages": b.gap_messages,
                "lagged": { "reports": b.lag_reports, "messages": b.lagged_messages },
                "lossless_lags": b.lossless_lags,
                "lag_mismatches": b.lag_mismatches,
                "bad_start": b.bad_start,
                "incomplete": b.incomplete,
                "unpublished_delivered": b.unpublished,
                "handovers": {
                    "total": b.handovers,
                    "in_flight_rewritten": b.handovers_in_flight,
                    "after_unacknowledged_publish": b.handovers_unacked,
                    "out_of_place": b.handover_bad,
                },
            }),
        );
    }

    /// The flavor's lines of the text summary.
    pub(super) fn text(&self, s: &Summary) -> String {
        let b = &self.books;
        format!(
            "  messages         {published} published ({unacked} of them by a publisher killed before it recorded Ok), {deliv} delivered to {inc} subscriber incarnations ({rate}/s)
  lagged           {lr} reports of {lm} messages{lag_note}
  gaps             {gaps} ({gm} messages) without a Lagged report; {mism} lag reports that did not match the next message
  duplicates       {dup}
  torn             {torn}
  never published  {never}, and {unpub} unfinished messages of a killed publisher received
  handovers        {h} publisher handovers ({hif} with a message in flight, rewritten by the successor; {hun} after an unacknowledged publish), {hbad} out of place
  subscribers      {complete} reached the end of the stream, {incomplete} left before it; {bad_start} started below a position acknowledged before their spawn
",
            published = self.published,
            unacked = self.published.saturating_sub(self.acknowledged),
            deliv = s.delivered,
            inc = b.incarnations,
            rate = s.rate(),
            lr = b.lag_reports,
            lm = b.lagged_messages,
            lag_note = if b.overwrite {
                ""
            } else {
                " (lossless: each one a violation)"
            },
            gaps = b.gaps,
            gm = b.gap_messages,
            mism = b.lag_mismatches,
            dup = s.duplicates,
            torn = s.torn,
            never = s.never_sent,
            unpub = b.unpublished,
            h = b.handovers,
            hif = b.handovers_in_flight,
            hun = b.handovers_unacked,
            hbad = b.handover_bad,
            complete = b.complete,
            incomplete = b.incomplete,
            bad_start = b.bad_start,
        )
    }
}
