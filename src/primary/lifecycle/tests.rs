//! Every transition of the lifecycle, with no process, socket or clock (see `world`).

use std::time::Duration;

use nix::sys::signal::Signal;

use super::world::{config, World, KILL_TIMEOUT, READY_DELAY, READY_TIMEOUT};
use super::{Effect, ExitReason, Intent, Life, StopReason, Timer, Update, WorkerOrder};
use crate::domain::ScaleTarget;
use crate::domain::{ClusterPhase, SlotState};

fn reload(world: &mut World, parallel: usize) -> super::RequestId {
    let request = world.request();
    world.intent(Intent::Reload {
        parallel,
        request: Some(request),
    });
    request
}

#[test]
fn start_up_is_over_once_every_slot_is_ready() {
    let mut world = World::new(2);
    world.start();
    assert_eq!(world.spawns(), [(1, 1), (2, 1)]);
    assert_eq!(world.machine.phase(), ClusterPhase::Starting);
    let first = world.in_slot(1)[0];
    world.ready(first);
    assert_eq!(world.machine.phase(), ClusterPhase::Starting);
    world.ready_all();
    assert_eq!(world.machine.phase(), ClusterPhase::Running);
    assert!(world.logged("all 2 workers ready"));
    assert!(world.effects.iter().any(|effect| matches!(
        effect,
        Effect::NotifyManager(state) if state == "READY=1\nSTATUS=2 workers ready"
    )));
    // Ready counts only once it stayed up the ready delay after saying so.
    let mut world = World::new(1);
    world.start();
    let id = world.in_slot(1)[0];
    world.feed(super::Input::ReadySignal { worker: id });
    world.advance(READY_DELAY - Duration::from_millis(1));
    assert!(world.machine.worker(id).unwrap().is_starting());
    world.advance(Duration::from_millis(1));
    assert!(world.machine.worker(id).unwrap().is_serving());
}

/// A Node worker's `listening` makes it ready under `--ready delay`, until the command is seen
/// to say `process.send('ready')`: then a reload's new workers wait for their words, and under
/// `--ready notify` listening never counts.
#[test]
fn listening_is_a_signal_until_the_command_says_ready_in_words() {
    let is_starting = |world: &World, id| world.machine.worker(id).unwrap().is_starting();
    let mut delay = config(1);
    delay.ready = crate::config::ReadyMode::Delay;
    let mut world = World::with(delay, false);
    world.start();
    let first = world.in_slot(1)[0];
    // Listening waits for no start delay of its own: before it, the worker is not ready.
    world.advance(READY_DELAY / 2);
    world.feed(super::Input::Listening { worker: first });
    world.advance(READY_DELAY - Duration::from_millis(1));
    assert!(is_starting(&world, first));
    world.advance(Duration::from_millis(1));
    assert!(world.machine.worker(first).unwrap().is_serving());
    // It warmed up and says so; the next worker listens but is not ready until it says so too.
    world.feed(super::Input::ReadySignal { worker: first });
    reload(&mut world, 1);
    let second = *world.in_slot(1).last().unwrap();
    assert_ne!(first, second);
    world.feed(super::Input::Listening { worker: second });
    world.advance(READY_DELAY * 10);
    assert!(is_starting(&world, second));
    world.feed(super::Input::ReadySignal { worker: second });
    world.advance(READY_DELAY);
    assert!(world.machine.worker(second).unwrap().is_serving());

    // --ready notify: listening is not the worker's word.
    let mut world = World::new(1);
    world.start();
    let id = world.in_slot(1)[0];
    world.feed(super::Input::Listening { worker: id });
    world.advance(READY_DELAY * 10);
    assert!(is_starting(&world, id));
    world.feed(super::Input::ReadySignal { worker: id });
    world.advance(READY_DELAY);
    assert!(world.machine.worker(id).unwrap().is_serving());
}

/// With the proxy a worker is ready only once its private port accepts: not by its start and
/// `--ready delay`, not by its own `READY=1`; one whose port never accepts is stopped at the
/// ready timeout, saying why.
#[test]
fn under_the_proxy_only_an_accepting_port_makes_a_worker_ready() {
    let mut proxied = config(1);
    proxied.balance = crate::config::Balance::Proxy;
    proxied.ready = crate::config::ReadyMode::Delay;
    let mut world = World::with(proxied.clone(), false);
    world.start();
    let id = world.in_slot(1)[0];
    world.advance(READY_DELAY * 10);
    assert!(world.machine.worker(id).unwrap().is_starting());
    world.feed(super::Input::ReadySignal { worker: id });
    world.advance(READY_DELAY * 10);
    assert!(world.machine.worker(id).unwrap().is_starting());
    world.feed(super::Input::PortAccepting { worker: id });
    world.advance(READY_DELAY - Duration::from_millis(1));
    assert!(world.machine.worker(id).unwrap().is_starting());
    world.advance(Duration::from_millis(1));
    assert!(world.machine.worker(id).unwrap().is_serving());

    let mut world = World::with(proxied, false);
    world.start();
    let id = world.in_slot(1)[0];
    world.feed(super::Input::ReadySignal { worker: id });
    world.advance(READY_TIMEOUT);
    assert_eq!(world.signals_to(id), [Signal::SIGTERM]);
    assert!(world.logged("not ready within 30s; its $PORT never accepted a connection"));
}

/// A reload that finds a slot with no worker (restarting after failures) does not count it as
/// replaced: it says the slot's next worker runs the new generation.
#[test]
fn a_reload_names_the_slot_it_found_without_a_worker() {
    let mut world = World::started(2);
    // Slot 2 crashes three times: its next restart waits 200 ms in backoff, with no worker.
    for _ in 0..3 {
        while world.in_slot(2).is_empty() {
            world.advance(Duration::from_millis(10));
        }
        let id = world.in_slot(2)[0];
        world.crash(id);
    }
    assert!(world.in_slot(2).is_empty());
    // Both slots at once, so slot 2 is reached while it waits.
    let request = reload(&mut world, 2);
    let new = world.in_slot(1)[1];
    world.ready(new);
    world.advance(Duration::from_secs(1));
    world.exit_signalled();
    let results = world.results(request);
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(
        results[0]
            .1
            .starts_with("reload complete: 1 worker on generation 2 in ")
            && results[0].1.ends_with(
                "; slot 2 had no worker (restarting after failures): its next one runs \
                 generation 2"
            ),
        "{results:?}"
    );
}

/// What happens when a worker crashes during a rolling reload: the question docs/architecture.md
/// answers with `Machine::on_exit`.
#[test]
fn a_crash_during_a_reload() {
    // The old worker dies while its replacement starts: a failure of its slot, recorded, but no
    // second worker starts; new connections go to the replacement; the reload goes on.
    let mut world = World::started(2);
    let old = world.in_slot(1)[0];
    let request = reload(&mut world, 1);
    let new = world.in_slot(1)[1];
    assert_eq!(world.machine.slot_state(1), Some(SlotState::Replacing));
    world.crash(old);
    assert_eq!(world.in_slot(1), [new], "no second worker starts");
    let history = world.machine.slot(1).unwrap();
    assert_eq!(
        (history.failures, history.restarts),
        (1, 0),
        "a failure, not a restart"
    );
    assert!(world.logged("worker 1 (pid 101) exited with code 1 after 100ms"));
    // New connections go to the worker that serves, slot 2's, until the replacement is ready.
    let serving = world.in_slot(2)[0];
    let side = world.machine.worker(serving).unwrap().side;
    assert_eq!(world.machine.steering_targets(), [(2, side)]);
    world.ready(new);
    assert_eq!(world.machine.slot_state(1), Some(SlotState::Serving));
    let second = world.in_slot(2)[1];
    world.ready(second);
    world.advance(Duration::from_secs(1));
    world.exit_signalled();
    assert_eq!(
        world.results(request),
        [(
            true,
            "reload complete: 2 workers on generation 2 in 1s 200ms".into()
        )]
    );

    // The replacement dies before it is ready: the reload is aborted, the old worker keeps the
    // slot and its generation, and the slots not replaced yet keep theirs.
    let mut world = World::started(2);
    let old = world.in_slot(1)[0];
    let request = reload(&mut world, 1);
    let new = world.in_slot(1)[1];
    world.crash(new);
    assert_eq!(world.in_slot(1), [old]);
    assert!(world.machine.worker(old).unwrap().is_serving());
    let results = world.results(request);
    assert_eq!(results.len(), 1);
    assert!(!results[0].0);
    assert!(results[0]
        .1
        .starts_with("reload aborted: the new worker for slot 1 failed"));
    assert_eq!(world.machine.slot(1).unwrap().spec.generation, 1);
    assert_eq!(world.machine.slot(2).unwrap().spec.generation, 1);
    assert_eq!(world.machine.phase(), ClusterPhase::Running);
    assert_eq!(
        world.machine.slot(1).unwrap().restarts,
        0,
        "not a failure of the slot"
    );

    // Both die: the slot is refilled at once, on the old generation.
    let mut world = World::started(2);
    let old = world.in_slot(1)[0];
    let request = reload(&mut world, 1);
    let new = world.in_slot(1)[1];
    world.crash(old);
    world.crash(new);
    assert!(!world.results(request)[0].0);
    world.advance(Duration::ZERO);
    let refill = world.in_slot(1);
    assert_eq!(refill.len(), 1);
    assert_eq!(world.machine.worker(refill[0]).unwrap().generation, 1);
    assert_eq!(world.spawns().last(), Some(&(1, 1)));
}

#[test]
fn a_replacement_not_ready_in_time_aborts_its_reload() {
    let mut world = World::started(1);
    let old = world.in_slot(1)[0];
    let request = reload(&mut world, 1);
    let new = world.in_slot(1)[1];
    world.advance(READY_TIMEOUT);
    assert_eq!(world.signals_to(new), [Signal::SIGTERM]);
    world.exit_signalled();
    assert!(world.results(request)[0]
        .1
        .contains("was not ready in time and was stopped"));
    assert!(world.machine.worker(old).unwrap().is_serving());
    assert!(world.signals_to(old).is_empty());
}

#[test]
fn a_replaced_worker_retires_once_its_queue_is_empty() {
    let mut world = World::started(1);
    let old = world.in_slot(1)[0];
    let side = world.machine.worker(old).unwrap().side;
    world.queued.insert((1, side), 3);
    reload(&mut world, 1);
    let new = world.in_slot(1)[1];
    world.ready(new);
    assert!(matches!(
        world.machine.worker(old).unwrap().life,
        Life::Retiring {
            reason: StopReason::Replaced,
            ..
        }
    ));
    world.advance(Duration::from_secs(1));
    assert!(world.signals_to(old).is_empty(), "its queue is not empty");
    world.queued.clear();
    world.advance(Duration::from_millis(20));
    assert_eq!(world.signals_to(old), [Signal::SIGTERM]);
    assert!(world.machine.worker(old).unwrap().is_draining());
}

#[test]
fn stop_during_a_reload_ends_it_and_stops_every_worker() {
    let mut world = World::started(2);
    let request = reload(&mut world, 1);
    let everyone = world.ids(|_| true);
    assert_eq!(everyone.len(), 3);
    world.intent(Intent::Stop { fast: false });
    assert_eq!(world.machine.phase(), ClusterPhase::Stopping);
    assert_eq!(
        world.results(request),
        [(false, "reload aborted: the cluster is stopping".into())]
    );
    for id in &everyone {
        assert_eq!(world.signals_to(*id), [Signal::SIGTERM], "{id}");
    }
    assert!(world
        .effects
        .iter()
        .any(|e| matches!(e, Effect::CloseListeners)));
    // One that does not stop is killed after the kill timeout.
    let stubborn = everyone[0];
    for id in &everyone[1..] {
        world.exit(*id, ExitReason::Signal(15));
    }
    world.advance(KILL_TIMEOUT);
    assert_eq!(
        world.signals_to(stubborn),
        [Signal::SIGTERM, Signal::SIGKILL]
    );
    world.exit(stubborn, ExitReason::Signal(9));
    assert!(world.machine.is_finished());
    assert_eq!(world.spawns().len(), 3, "nothing started after the stop");
}

#[test]
fn scale_during_backoff() {
    let mut world = World::started(2);
    // Slot 2 fails twice in a row: the second restart waits (backoff).
    let first = world.in_slot(2)[0];
    world.crash(first);
    let second = world.in_slot(2)[0];
    world.crash(second);
    assert!(world.in_slot(2).is_empty());
    assert_eq!(world.machine.slot_state(2), Some(SlotState::Backoff));
    assert!(world.is_set(Timer::Respawn(2)));
    // Scaled away while it waits: its restart does not happen.
    let request = world.request();
    world.intent(Intent::Scale {
        target: ScaleTarget::To(1),
        request: Some(request),
    });
    assert_eq!(
        world.answers(request),
        [
            Update::Progress {
                message: "scaled 2 → 1: draining slot 2".into()
            },
            Update::Done {
                ok: true,
                message: "1 worker ready".into()
            }
        ]
    );
    let spawned = world.spawns().len();
    world.advance(Duration::from_secs(1));
    assert_eq!(world.spawns().len(), spawned);
    assert_eq!(world.machine.slot_state(2), None);
    // Scaled up again: the slot starts over, fresh.
    let request = world.request();
    world.intent(Intent::Scale {
        target: ScaleTarget::Add(1),
        request: Some(request),
    });
    assert_eq!(world.machine.slot(2).unwrap().restarts, 0);
    assert_eq!(world.answers(request).len(), 1, "waits for the new slot");
    world.ready_all();
    assert_eq!(world.results(request), [(true, "2 workers ready".into())]);
}

/// Degraded is a slot that lost its worker, not one whose first worker is starting.
#[test]
fn a_scale_up_is_not_degraded_and_a_crash_is_until_the_slot_serves_again() {
    let mut world = World::started(1);
    world.intent(Intent::Scale {
        target: ScaleTarget::Add(1),
        request: None,
    });
    assert_eq!(world.in_slot(2).len(), 1);
    assert!(!world.machine.is_degraded());
    world.ready_all();
    // Both have served a while: a crash now is no failed start-up.
    world.advance(Duration::from_secs(2));
    let id = world.in_slot(2)[0];
    world.crash(id);
    assert!(world.machine.is_degraded());
    world.advance(Duration::from_secs(1));
    world.ready_all();
    assert!(!world.machine.is_degraded());
}

#[test]
fn a_crash_loop_is_errored_and_keeps_retrying() {
    let mut world = World::started(2);
    // Slot 1 serves for good; slot 2's workers keep dying young.
    world.advance(Duration::from_secs(2));
    let mut delays = Vec::new();
    for _ in 0..6 {
        let id = world.in_slot(2)[0];
        world.crash(id);
        let before = world.now;
        while world.in_slot(2).is_empty() {
            world.advance(Duration::from_millis(50));
        }
        delays.push((world.now - before).as_millis());
    }
    assert_eq!(delays, [0, 100, 200, 400, 800, 1600]);
    assert!(world.logged("slot 2 is crash-looping (errored): 5 failures in a row"));
    // Errored while empty, and still retried: a worker that stays up serves again.
    let id = world.in_slot(2)[0];
    world.crash(id);
    assert_eq!(world.machine.slot_state(2), Some(SlotState::Errored));
    assert!(world.is_set(Timer::Respawn(2)));
    world.advance(Duration::from_secs(5));
    world.ready_all();
    assert_eq!(world.machine.slot_state(2), Some(SlotState::Serving));
    // One that served the healthy uptime starts the count over: restarted at once.
    world.advance(Duration::from_secs(2));
    let id = world.in_slot(2)[0];
    world.crash(id);
    assert_eq!(world.machine.slot(2).unwrap().failures, 1);
    assert_eq!(world.in_slot(2).len(), 1, "restarted at once");
    // Counted by kind: eight crashes; then a kill from outside.
    let id = world.in_slot(2)[0];
    world.exit(id, ExitReason::Signal(9));
    let reasons = &world.machine.slot(2).unwrap().restart_reasons;
    assert_eq!(
        reasons.iter().map(|(k, n)| (*k, *n)).collect::<Vec<_>>(),
        [("crashed", 8), ("killed", 1)]
    );
}

#[test]
fn a_reload_asked_for_during_a_reload_waits_for_it() {
    let mut world = World::started(1);
    let first = reload(&mut world, 1);
    let second = reload(&mut world, 1);
    let third = reload(&mut world, 1);
    let queued = "a reload is in progress; this one starts when it ends";
    assert_eq!(
        world.answers(second),
        [Update::Progress {
            message: queued.into()
        }]
    );
    assert_eq!(world.spawns(), [(1, 1), (1, 2)], "not interleaved");
    world.ready_all();
    world.advance(Duration::from_secs(1));
    world.exit_signalled();
    assert_eq!(world.results(first).len(), 1);
    // The two queued ones are one reload, to generation 3.
    assert_eq!(world.spawns().last(), Some(&(1, 3)));
    world.ready_all();
    world.advance(Duration::from_secs(1));
    world.exit_signalled();
    for request in [second, third] {
        let results = world.results(request);
        assert_eq!(results.len(), 1);
        assert!(results[0].1.contains("on generation 3"), "{results:?}");
    }
}

#[test]
fn start_up_fails_when_every_slot_fails_twice_before_any_is_ready() {
    let mut world = World::new(2);
    world.start();
    for _ in 0..2 {
        for slot in 1..=2 {
            world.advance(Duration::from_millis(150));
            let id = world.in_slot(slot)[0];
            world.crash(id);
        }
    }
    assert_eq!(world.machine.phase(), ClusterPhase::Stopping);
    let report = world.machine.failure().unwrap();
    assert!(
        report.starts_with("no worker became ready: worker 2 (pid"),
        "{report}"
    );
    assert!(report.contains("(2 times)"), "{report}");
    assert!(report.contains("\nhint: "), "{report}");
    for id in world.ids(|_| true) {
        assert_eq!(world.signals_to(id), [Signal::SIGKILL]);
    }
    world.exit_signalled();
    assert!(world.machine.is_finished());
    assert!(world.logged("(start-up failed: the cluster stops)"));

    // A worker that said it was ready but died within the ready delay was never ready.
    let mut world = World::new(1);
    world.start();
    let id = world.in_slot(1)[0];
    world.feed(super::Input::ReadySignal { worker: id });
    world.crash(id);
    assert!(world.logged("after it said it was ready (not counted"));
    let id = world.in_slot(1)[0];
    world.crash(id);
    assert!(world.machine.failure().is_some());

    // Ready (start-up said "the 1 worker is ready"), then dead young, twice: not "no worker
    // became ready".
    let mut world = World::new(1);
    world.start();
    for _ in 0..2 {
        world.ready_all();
        assert!(world.logged("the 1 worker is ready"));
        let id = world.in_slot(1)[0];
        world.advance(Duration::from_millis(400));
        world.crash(id);
    }
    let report = world.machine.failure().unwrap();
    assert!(
        report.starts_with(
            "no worker stayed up: each died within 1s of becoming ready; the last, worker 1 (pid"
        ),
        "{report}"
    );
    assert!(report.contains("(2 times)"), "{report}");
}

#[test]
fn a_worker_that_cannot_be_forked_is_a_failure_of_its_slot() {
    let mut world = World::started(2);
    world.fail_spawns = true;
    let id = world.in_slot(2)[0];
    world.crash(id);
    assert!(world.logged("cannot start worker 2: out of processes"));
    assert!(world.in_slot(2).is_empty());
    assert!(world.is_set(Timer::Respawn(2)));
    world.fail_spawns = false;
    world.advance(Duration::from_secs(1));
    assert_eq!(world.in_slot(2).len(), 1);
    // A replacement that cannot be forked aborts its reload.
    world.ready_all();
    world.fail_spawns = true;
    let request = reload(&mut world, 1);
    assert_eq!(
        world.results(request)[0].1.lines().next(),
        Some("reload aborted: the new worker for slot 1 could not be started")
    );
}

#[test]
fn a_ready_worker_not_accepting_is_replaced_like_a_crashed_one() {
    let mut world = World::started(1);
    let id = world.in_slot(1)[0];
    let side = world.machine.worker(id).unwrap().side;
    world.queued.insert((1, side), 2);
    world.advance(Duration::from_secs(30));
    assert!(world.machine.worker(id).unwrap().is_serving());
    world.advance(Duration::from_secs(2));
    assert!(world.logged("worker 1 (pid 101) not accepting: 2 connections waited in its queue"));
    assert!(matches!(
        world.machine.worker(id).unwrap().life,
        Life::Draining {
            reason: StopReason::NotAccepting
        }
    ));
    world.exit_signalled();
    assert_eq!(world.machine.slot(1).unwrap().failures, 1);
    assert_eq!(world.in_slot(1).len(), 1, "restarted, on the same socket");
    let new = world.in_slot(1)[0];
    assert_eq!(world.machine.worker(new).unwrap().side, side);
}

#[test]
fn disconnect_retires_and_refills_kill_refills_at_once() {
    let mut world = World::started(2);
    let id = world.in_slot(1)[0];
    world.intent(Intent::Worker {
        slot: 1,
        pid: None,
        order: WorkerOrder::Disconnect,
    });
    world.advance(Duration::from_millis(200));
    assert_eq!(world.signals_to(id), [Signal::SIGTERM]);
    world.exit_signalled();
    assert_eq!(world.machine.slot(1).unwrap().failures, 0, "asked for");
    world.advance(Duration::ZERO);
    assert_eq!(world.in_slot(1).len(), 1, "refilled");

    let id = world.in_slot(2)[0];
    world.intent(Intent::Worker {
        slot: 2,
        pid: Some(world.machine.worker(id).unwrap().pid),
        order: WorkerOrder::Kill,
    });
    assert_eq!(world.signals_to(id), [Signal::SIGKILL]);
    world.exit(id, ExitReason::Signal(9));
    world.advance(Duration::ZERO);
    assert_eq!(world.in_slot(2).len(), 1);
    // A replacement still starting is left alone.
    reload(&mut world, 1);
    let replacement = world.in_slot(1)[1];
    world.intent(Intent::Worker {
        slot: 1,
        pid: Some(world.machine.worker(replacement).unwrap().pid),
        order: WorkerOrder::Kill,
    });
    assert!(world.signals_to(replacement).is_empty());
    assert!(world.logged("is a replacement still starting"));
}

#[test]
fn scale_is_refused_while_stopping_or_reloading_and_below_one() {
    let mut world = World::started(2);
    let request = world.request();
    world.intent(Intent::Scale {
        target: ScaleTarget::Remove(2),
        request: Some(request),
    });
    assert!(world.results(request)[0]
        .1
        .contains("would leave no worker"));
    reload(&mut world, 1);
    let request = world.request();
    world.intent(Intent::Scale {
        target: ScaleTarget::Add(1),
        request: Some(request),
    });
    assert_eq!(
        world.results(request),
        [(false, "a reload is in progress; scale when it ends".into())]
    );
    // One from a signal is logged instead.
    world.intent(Intent::Scale {
        target: ScaleTarget::Add(1),
        request: None,
    });
    assert!(world.logged("a reload is in progress; scale when it ends"));
}

#[test]
fn a_reread_configuration_changes_the_command_and_then_the_count() {
    let mut world = World::with(config(1), true);
    world.start();
    world.ready_all();
    let mut changed = config(2);
    changed.command = vec!["app2".into()];
    world.next_config = Some(Ok(changed));
    let request = reload(&mut world, 1);
    assert!(world.logged(
        "reloading 1 worker, 1 at a time, to generation 2\n  command: app → app2\n  workers: 1 → 2"
    ));
    world.ready_all();
    world.advance(Duration::from_secs(1));
    world.exit_signalled();
    assert!(world.results(request)[0].0);
    assert!(world.logged("scaled 1 → 2: started slot 2"));
    // A configuration that does not read changes nothing.
    world.next_config = Some(Err(crate::config::ConfigError::File {
        path: "herdsman.toml".into(),
        message: "line 3: bad".into(),
    }));
    let request = reload(&mut world, 1);
    assert_eq!(
        world.results(request),
        [(
            false,
            "reload refused, nothing changed: herdsman.toml: line 3: bad".into()
        )]
    );
}

#[test]
fn the_admin_events_follow_a_worker_and_a_reload() {
    use crate::domain::{LifecycleEvent, ReloadChange, WorkerChange};
    let reloads = |world: &World| -> Vec<(ReloadChange, u64)> {
        let events = world.announced().into_iter();
        let reloads = events.filter_map(|event| match event {
            LifecycleEvent::Reload {
                change, generation, ..
            } => Some((change, generation)),
            _ => None,
        });
        reloads.collect()
    };
    let mut world = World::started(1);
    let old = world.in_slot(1)[0];
    let pid = world.machine.worker(old).unwrap().pid;
    let before = world.announced().len();
    world.crash(old);
    let new = world.in_slot(1)[0];
    world.ready(new);
    let new_pid = world.machine.worker(new).unwrap().pid;
    let worker = |pid, change| LifecycleEvent::Worker {
        slot: 1,
        pid,
        generation: 1,
        change,
    };
    let exited = WorkerChange::Exited {
        code: Some(1),
        signal: None,
        reason: "died",
        description: "exited with code 1".into(),
    };
    assert_eq!(
        world.announced()[before..],
        [
            worker(pid, exited),
            worker(new_pid, WorkerChange::Spawned),
            worker(new_pid, WorkerChange::Ready),
        ]
    );

    // A reload whose replacement dies is started, then aborted, on its generation.
    reload(&mut world, 1);
    let replacement = world.in_slot(1)[1];
    world.crash(replacement);
    assert_eq!(
        reloads(&world),
        [(ReloadChange::Started, 2), (ReloadChange::Aborted, 2)]
    );
    reload(&mut world, 1);
    let replacement = world.in_slot(1)[1];
    world.ready(replacement);
    world.advance(Duration::from_secs(1));
    world.exit_signalled();
    assert_eq!(
        reloads(&world)[2..],
        [(ReloadChange::Started, 3), (ReloadChange::Completed, 3)]
    );
}
