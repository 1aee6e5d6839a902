//! `ls`, `stat`, `rm`: the `ipcs`/`ipcrm` of shmchan channels.

use serde_json::json;
use shmchan::{ChannelInfo, OpenError};
use std::error::Error;
use std::time::SystemTime;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn age(t: SystemTime) -> String {
    match SystemTime::now().duration_since(t) {
        Ok(d) if d.as_secs() >= 86400 => format!("{}d", d.as_secs() / 86400),
        Ok(d) if d.as_secs() >= 3600 => format!("{}h", d.as_secs() / 3600),
        Ok(d) if d.as_secs() >= 60 => format!("{}m", d.as_secs() / 60),
        Ok(d) => format!("{}s", d.as_secs()),
        Err(_) => "?".into(),
    }
}

fn peers_text(info: &ChannelInfo) -> String {
    if info.peers.is_empty() {
        return "-".into();
    }
    info.peers
        .iter()
        .map(|p| {
            // A broadcast subscriber also shows how far behind it is.
            let lag = info
                .subscribers
                .iter()
                .find(|c| c.cursor + 1 == p.index && p.role == "subscriber")
                .map(|c| format!("(lag {})", c.lag))
                .unwrap_or_default();
            format!(
                "{}:{}{}{lag}",
                &p.role[..1],
                p.pid,
                if p.alive { "" } else { "(dead)" }
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn info_json(i: &ChannelInfo) -> serde_json::Value {
    json!({
        "name": i.name,
        "flavor": i.flavor,
        "kind": i.kind,
        "capacity": i.capacity,
        "slot_size": i.slot_size,
        "msg_size": i.msg_size,
        "msg_align": i.msg_align,
        "type_fingerprint": format!("{:#018x}", i.type_fingerprint),
        "size_bytes": i.size_bytes,
        "head": i.head,
        "tail": i.tail,
        "len": i.len(),
        "creator_pid": i.creator_pid,
        "creator_uid": i.creator_uid,
        "created_at_unix_s": i.created_at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "sleeping_receivers": i.sleeping_receivers,
        "sleeping_senders": i.sleeping_senders,
        "sender_attaches": i.sender_attaches,
        "receiver_attaches": i.receiver_attaches,
        "policy": i.policy,
        "subscribers": i.subscribers.iter().map(|c| json!({
            "cursor": c.cursor, "position": c.position, "lag": c.lag, "missed": c.missed,
            "alive": c.alive,
        })).collect::<Vec<_>>(),
        "peers": i.peers.iter().map(|p| json!({
            "index": p.index, "pid": p.pid, "pid_namespace": p.pid_namespace, "role": p.role,
            "generation": p.generation, "alive": p.alive,
        })).collect::<Vec<_>>(),
    })
}

pub fn ls(as_json: bool) -> Result<()> {
    let names = shmchan::list()?;
    let infos: Vec<(String, std::result::Result<ChannelInfo, OpenError>)> = names
        .into_iter()
        .map(|n| (n.clone(), shmchan::inspect(&n)))
        .collect();
    if as_json {
        let v: Vec<_> = infos
            .iter()
            .map(|(n, r)| match r {
                Ok(i) => info_json(i),
                Err(e) => json!({"name": n, "error": e.to_string()}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<32} {:<5} {:<5} {:>9} {:>7} {:>9} {:>10} {:>5}  PEERS",
        "NAME", "FLAV", "KIND", "CAPACITY", "MSG", "LEN", "BYTES", "AGE"
    );
    for (name, r) in &infos {
        match r {
            Ok(i) => println!(
                "{:<32} {:<5} {:<5} {:>9} {:>7} {:>9} {:>10} {:>5}  {}",
                i.name,
                if i.flavor == "broadcast" {
                    "bcast"
                } else {
                    i.flavor
                },
                i.kind,
                i.capacity,
                i.msg_size,
                i.len(),
                i.size_bytes,
                age(i.created_at),
                peers_text(i)
            ),
            Err(e) => println!("{name:<32} ({e})"),
        }
    }
    Ok(())
}

pub fn stat(name: &str, as_json: bool) -> Result<()> {
    let i = shmchan::inspect(name)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&info_json(&i))?);
        return Ok(());
    }
    println!("name            {}", i.name);
    if i.policy.is_empty() {
        println!("flavor / kind   {} / {}", i.flavor, i.kind);
    } else {
        println!("flavor / kind   {} ({}) / {}", i.flavor, i.policy, i.kind);
    }
    println!(
        "capacity        {} slots of {} bytes",
        i.capacity, i.slot_size
    );
    println!(
        "message         {} bytes, align {}, fingerprint {:#018x}",
        i.msg_size, i.msg_align, i.type_fingerprint
    );
    println!("object size     {} bytes", i.size_bytes);
    println!(
        "positions       head {} tail {} (len {})",
        i.head,
        i.tail,
        i.len()
    );
    println!(
        "created         {} ago by pid {} (uid {})",
        age(i.created_at),
        i.creator_pid,
        i.creator_uid
    );
    println!(
        "attaches        {} sender, {} receiver",
        i.sender_attaches, i.receiver_attaches
    );
    println!(
        "sleeping        {} receivers, {} senders",
        i.sleeping_receivers, i.sleeping_senders
    );
    for p in &i.peers {
        println!(
            "peer {:<3}        {} pid {} (pid namespace {}) gen {} {}",
            p.index,
            p.role,
            p.pid,
            p.pid_namespace,
            p.generation,
            if p.alive { "alive" } else { "DEAD" }
        );
    }
    for c in &i.subscribers {
        println!(
            "cursor {:<3}      position {} lag {} missed {} {}",
            c.cursor,
            c.position,
            c.lag,
            c.missed,
            if c.alive { "alive" } else { "DEAD" }
        );
    }
    Ok(())
}

/// Only for a channel no handle is attached to (then no lock says anything): a pid
/// that exists keeps it (a pid from another PID namespace may name an unrelated
/// process here, which errs on the side of keeping the channel).
fn creator_dead(pid: u32) -> bool {
    pid != 0 && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

pub fn rm(names: &[String], stale: bool, force: bool) -> Result<()> {
    let mut failed = 0;
    let mut targets: Vec<String> = names.to_vec();
    if stale {
        for n in shmchan::list()? {
            let is_stale = match shmchan::inspect(&n) {
                Ok(i) => {
                    i.peers.iter().all(|p| !p.alive)
                        && (!i.peers.is_empty() || creator_dead(i.creator_pid))
                }
                // A header its creator never finished.
                Err(OpenError::CreatorDied { .. }) => true,
                Err(_) => false,
            };
            if is_stale {
                targets.push(n);
            }
        }
    }
    if targets.is_empty() && !stale {
        return Err("rm: name one or more channels, or pass --stale".into());
    }
    for n in &targets {
        if !force {
            match shmchan::inspect(n) {
                Ok(_)
                | Err(OpenError::InitTimeout)
                | Err(OpenError::CreatorDied { .. })
                | Err(OpenError::Truncated { .. })
                | Err(OpenError::Corrupt(_))
                | Err(OpenError::VersionMismatch { .. }) => {}
                Err(OpenError::BadMagic) => {
                    eprintln!("shmchan: {n}: not a shmchan channel (use --force to remove anyway)");
                    failed += 1;
                    continue;
                }
                Err(e) => {
                    eprintln!("shmchan: {n}: {e}");
                    failed += 1;
                    continue;
                }
            }
        }
        match shmchan::remove(n) {
            Ok(()) => println!("removed {n}"),
            Err(e) => {
                eprintln!("shmchan: {n}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} channel(s) not removed").into());
    }
    Ok(())
}
