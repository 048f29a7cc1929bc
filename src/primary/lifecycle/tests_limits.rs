//! Replacements for a reason (`limits`): hung (`--watchdog`), `--max-memory`,
//! `--max-requests`; each new first, recorded in the slot, said in the log.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::world::{config, World, KILL_TIMEOUT, READY_TIMEOUT};
use super::{ExitReason, Input, Intent, ReplaceReason, Timer};
use crate::config::{Config, Size};
use crate::domain::SlotState;

const WATCHDOG: Duration = Duration::from_secs(10);
const MIB: u64 = 1 << 20;

fn started(config: Config) -> World {
    let mut world = World::with(config, false);
    world.start();
    world.ready_all();
    world
}

fn watched(workers: usize) -> World {
    started(Config {
        watchdog: Some(WATCHDOG),
        ..config(workers)
    })
}

fn reason_of(world: &World, slot: usize) -> Option<String> {
    let history = world.machine.slot(slot).unwrap();
    history
        .last_replacement
        .as_ref()
        .map(|replaced| replaced.reason.to_string())
}

#[test]
fn a_worker_without_heartbeats_is_replaced_new_first_then_aborted() {
    let mut world = watched(2);
    let (old, other) = (world.in_slot(1)[0], world.in_slot(2)[0]);
    // Heartbeats keep a worker: each starts its watchdog over.
    for _ in 0..3 {
        world.advance(WATCHDOG / 2);
        world.feed(Input::Heartbeat { worker: old });
        world.feed(Input::Heartbeat { worker: other });
    }
    assert_eq!(world.in_slot(1), [old]);
    // Silent for the whole --watchdog: hung, and its replacement starts beside it.
    world.advance(WATCHDOG);
    let slot = world.in_slot(1);
    assert_eq!(slot.len(), 2, "the replacement starts first");
    let new = slot[1];
    assert_eq!(world.machine.slot_state(1), Some(SlotState::Replacing));
    assert!(
        world.machine.worker(old).unwrap().is_serving(),
        "it serves until then"
    );
    assert!(world.signals_to(old).is_empty());
    assert!(world.logged(
        "worker 1 (pid 101) replaced: no heartbeat for 10s (--watchdog); starting its \
         replacement (new first, then SIGABRT)"
    ));
    assert_eq!(
        reason_of(&world, 1).as_deref(),
        Some("no heartbeat for 10s (--watchdog)")
    );
    let history = world.machine.slot(1).unwrap();
    assert_eq!(history.replacements.get("watchdog"), Some(&1));
    assert_eq!(history.last_replacement.as_ref().unwrap().pid, 101);
    // A hung worker is not retired through its queue: SIGABRT once the new one is ready,
    // SIGKILL after the kill timeout.
    world.ready(new);
    assert_eq!(world.signals_to(old), [Signal::SIGABRT]);
    world.advance(KILL_TIMEOUT);
    assert_eq!(world.signals_to(old), [Signal::SIGABRT, Signal::SIGKILL]);
    world.exit(old, ExitReason::Signal(libc::SIGKILL));
    assert_eq!(world.in_slot(1), [new]);
    assert_eq!(world.machine.slot(1).unwrap().failures, 0, "not a failure");
    // Slot 2's worker kept sending nothing after its last heartbeat too.
    assert_eq!(world.in_slot(2).len(), 2);
}

#[test]
fn a_worker_that_never_sends_a_heartbeat_gets_the_hint() {
    let mut world = watched(1);
    world.advance(WATCHDOG);
    assert!(world.logged("hint: with --watchdog 10s every ready worker must send WATCHDOG=1"));
    assert_eq!(
        reason_of(&world, 1).as_deref(),
        Some("no heartbeat (WATCHDOG=1) within 10s of being ready (--watchdog)")
    );
}

#[test]
fn a_hung_worker_goes_even_when_its_replacement_fails() {
    let mut world = watched(1);
    let old = world.in_slot(1)[0];
    world.advance(WATCHDOG);
    let new = world.in_slot(1)[1];
    // Not ready within the ready timeout: stopped; once it is gone, so is the hung one.
    world.advance(READY_TIMEOUT);
    assert_eq!(world.signals_to(new), [Signal::SIGTERM]);
    assert!(world.signals_to(old).is_empty());
    world.exit(new, ExitReason::Signal(libc::SIGTERM));
    assert_eq!(world.signals_to(old), [Signal::SIGABRT]);
    assert!(world.logged("worker 1 (pid 101) is hung and its replacement failed"));
    world.exit(old, ExitReason::Signal(libc::SIGABRT));
    world.advance(Duration::ZERO);
    assert_eq!(world.in_slot(1).len(), 1, "the slot restarts");
    assert_ne!(world.in_slot(1), [old]);
}

#[test]
fn a_queue_left_unaccepted_for_the_watchdog_is_a_hung_worker() {
    let mut world = started(Config {
        watchdog: Some(Duration::from_secs(2)),
        accept_timeout: Duration::from_secs(5),
        ..config(1)
    });
    let old = world.in_slot(1)[0];
    let side = world.machine.worker(old).unwrap().side;
    world.queued.insert((1, side), 3);
    for _ in 0..4 {
        world.advance(Duration::from_millis(500));
        world.feed(Input::Heartbeat { worker: old });
    }
    world.advance(Duration::from_millis(300));
    assert_eq!(world.in_slot(1).len(), 2, "replaced new first");
    assert_eq!(
        reason_of(&world, 1).as_deref(),
        Some("left 3 connections unaccepted for 2s (--watchdog)")
    );
    assert!(!world.logged("not accepting"));
}

#[test]
fn a_worker_over_max_memory_is_replaced_gracefully() {
    let mut world = started(Config {
        max_memory: Some(Size(256 * MIB)),
        ..config(2)
    });
    let old = world.in_slot(1)[0];
    world.rss.insert(old, 200 * MIB);
    world.advance(Duration::from_secs(3));
    assert_eq!(world.in_slot(1), [old], "under the limit");
    world.rss.insert(old, 312 * MIB);
    world.advance(Duration::from_secs(1));
    let new = world.in_slot(1)[1];
    assert_eq!(
        reason_of(&world, 1).as_deref(),
        Some("rss 312 MiB over --max-memory 256 MiB")
    );
    assert!(world.logged("starting its replacement (new first, gracefully)"));
    // Still over at the next readings: one replacement, not one a second.
    world.advance(Duration::from_secs(2));
    assert_eq!(world.in_slot(1), [old, new]);
    world.ready(new);
    // Retired: steered away from, then the stop signal once its queue is empty.
    world.advance(Duration::from_secs(1));
    assert_eq!(world.signals_to(old), [Signal::SIGTERM]);
    world.exit(old, ExitReason::Signal(libc::SIGTERM));
    assert_eq!(world.in_slot(1), [new]);
    let history = world.machine.slot(1).unwrap();
    assert_eq!(history.replacements.get("max-memory"), Some(&1));
    assert_eq!(world.in_slot(2).len(), 1, "slot 2 was under the limit");
}

#[test]
fn a_failed_replacement_for_a_limit_leaves_the_worker_serving_and_is_tried_again() {
    let mut world = started(Config {
        max_memory: Some(Size(100 * MIB)),
        ..config(1)
    });
    let old = world.in_slot(1)[0];
    world.rss.insert(old, 150 * MIB);
    world.advance(Duration::from_secs(1));
    let new = world.in_slot(1)[1];
    world.crash(new);
    assert!(world.logged("worker 1 (pid 101) keeps serving: its replacement failed"));
    assert!(world.machine.worker(old).unwrap().is_serving());
    assert!(world.signals_to(old).is_empty());
    // The next reading, 900 ms later, is within the 1 s wait; the one after is not.
    world.advance(Duration::from_millis(950));
    assert_eq!(world.in_slot(1), [old], "not at once");
    world.advance(Duration::from_secs(1));
    assert_eq!(world.in_slot(1).len(), 2, "tried again");
    assert_eq!(
        world
            .machine
            .slot(1)
            .unwrap()
            .replacements
            .get("max-memory"),
        Some(&2)
    );
}

#[test]
fn a_worker_that_served_its_max_requests_is_replaced() {
    let mut world = started(Config {
        max_requests: Some(50),
        max_requests_jitter: 10,
        ..config(3)
    });
    let ids: Vec<_> = (1..=3).map(|slot| world.in_slot(slot)[0]).collect();
    let limits: Vec<u64> = ids
        .iter()
        .map(|id| world.machine.request_limit(*id).unwrap())
        .collect();
    assert!(
        limits.iter().all(|limit| (50..=60).contains(limit)),
        "{limits:?}"
    );
    // The same worker always gets the same limit.
    assert_eq!(world.machine.request_limit(ids[0]), Some(limits[0]));
    world.served.insert(ids[0], limits[0] - 1);
    world.served.insert(ids[1], limits[1]);
    world.advance(Duration::from_millis(100));
    assert_eq!(world.in_slot(1), [ids[0]]);
    assert_eq!(world.in_slot(2).len(), 2);
    assert_eq!(
        reason_of(&world, 2),
        Some(format!(
            "served {} requests (--max-requests, its limit {})",
            limits[1], limits[1]
        ))
    );
    let without = started(config(1));
    assert_eq!(without.machine.request_limit(ids[0]), None);
}

#[test]
fn a_reload_takes_over_from_a_replacement_for_a_limit() {
    let mut world = started(Config {
        max_requests: Some(10),
        ..config(1)
    });
    let old = world.in_slot(1)[0];
    world.served.insert(old, 10);
    world.advance(Duration::from_millis(100));
    let limit_replacement = world.in_slot(1)[1];
    let request = world.request();
    world.intent(Intent::Reload {
        parallel: 1,
        request: Some(request),
    });
    assert_eq!(world.signals_to(limit_replacement), [Signal::SIGTERM]);
    world.exit(limit_replacement, ExitReason::Signal(libc::SIGTERM));
    let slot = world.in_slot(1);
    assert_eq!(slot.len(), 2);
    let reloaded = slot[1];
    assert_eq!(world.machine.worker(reloaded).unwrap().generation, 2);
    world.ready(reloaded);
    world.advance(Duration::from_secs(1));
    world.exit_signalled();
    assert_eq!(world.in_slot(1), [reloaded]);
    assert!(world.results(request)[0].0, "the reload completes");
}

#[test]
fn nothing_is_watched_without_the_settings() {
    let mut world = started(config(1));
    let id = world.in_slot(1)[0];
    world.rss.insert(id, u64::MAX);
    world.served.insert(id, u64::MAX);
    world.advance(Duration::from_secs(60));
    assert_eq!(world.in_slot(1), [id]);
    assert!(!world.is_set(Timer::Watchdog(id)));
    assert!(!world.is_set(Timer::MemoryCheck));
    assert!(!world.is_set(Timer::ServedCheck));
    assert_eq!(
        ReplaceReason::MaxMemory {
            rss: 5 * MIB / 2,
            limit: MIB
        }
        .to_string(),
        "rss 2.5 MiB over --max-memory 1.0 MiB"
    );
}

#[test]
fn a_limit_turned_on_by_a_reload_is_read_from_then_on() {
    let mut world = World::with(config(1), true);
    world.start();
    world.ready_all();
    assert!(!world.is_set(Timer::MemoryCheck));
    world.next_config = Some(Ok(Config {
        max_memory: Some(Size(64 * MIB)),
        ..config(1)
    }));
    world.intent(Intent::Reload {
        parallel: 1,
        request: None,
    });
    assert!(world.logged("max-memory: off → 64mb"));
    assert!(world.is_set(Timer::MemoryCheck));
    let new = world.in_slot(1)[1];
    world.ready(new);
    world.advance(Duration::from_secs(1));
    world.exit_signalled();
    world.rss.insert(new, 65 * MIB);
    world.advance(Duration::from_secs(1));
    assert_eq!(world.in_slot(1).len(), 2, "replaced for the new limit");
    assert_eq!(
        reason_of(&world, 1).as_deref(),
        Some("rss 65 MiB over --max-memory 64 MiB")
    );
}
