//! The lifecycle's invariants under random sequences of events and intents.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use super::world::World;
use super::{Effect, ExitReason, Intent, RequestId, Timer, Update, WorkerOrder};
use crate::domain::ClusterPhase;
use crate::domain::ScaleTarget;

#[derive(Clone, Debug)]
enum Step {
    /// The `n`th live worker (modulo) says it is ready.
    Ready(usize),
    Crash(usize),
    /// Every worker that was signalled exits.
    ExitSignalled,
    Advance(u64),
    Reload(usize),
    Restart(usize),
    Scale(usize),
    Disconnect(usize),
    Kill(usize),
    /// The `n`th live worker sends `WATCHDOG=1`.
    Heartbeat(usize),
    /// Its tree's RSS goes over `--max-memory`.
    Grow(usize),
    /// It has served its `--max-requests`.
    Serve(usize),
}

/// A world with every limit on: `watchdog` (2 s) only when asked, since a hung worker whose
/// replacement fails goes all the same, and ready capacity drops then by design.
fn limited(workers: usize, watchdog: bool) -> World {
    let config = crate::config::Config {
        watchdog: watchdog.then_some(Duration::from_secs(2)),
        max_memory: Some(crate::config::Size(100 << 20)),
        max_requests: Some(100),
        max_requests_jitter: 10,
        ..super::world::config(workers)
    };
    World::with(config, false)
}

fn step(crashes: bool) -> impl Strategy<Value = Step> {
    let calm = prop_oneof![
        4 => (0usize..8).prop_map(Step::Ready),
        2 => Just(Step::ExitSignalled),
        4 => (0u64..3000).prop_map(Step::Advance),
        1 => (1usize..4).prop_map(Step::Reload),
        1 => (1usize..5).prop_map(Step::Restart),
        3 => (0usize..8).prop_map(Step::Heartbeat),
        1 => (0usize..8).prop_map(Step::Grow),
        1 => (0usize..8).prop_map(Step::Serve),
    ];
    if !crashes {
        return calm.boxed();
    }
    prop_oneof![
        8 => calm,
        2 => (0usize..8).prop_map(Step::Crash),
        1 => (1usize..5).prop_map(Step::Scale),
        1 => (1usize..5).prop_map(Step::Disconnect),
        1 => (1usize..5).prop_map(Step::Kill),
    ]
    .boxed()
}

fn nth_live(world: &World, n: usize) -> Option<super::WorkerId> {
    let ids = world.ids(|_| true);
    (!ids.is_empty()).then(|| ids[n % ids.len()])
}

fn apply(world: &mut World, step: &Step, requests: &mut Vec<RequestId>) {
    match *step {
        Step::Ready(n) => {
            if let Some(id) = nth_live(world, n) {
                world.feed(super::Input::ReadySignal { worker: id });
            }
        }
        Step::Crash(n) => {
            if let Some(id) = nth_live(world, n) {
                world.crash(id);
            }
        }
        Step::ExitSignalled => world.exit_signalled(),
        Step::Advance(ms) => world.advance(Duration::from_millis(ms)),
        Step::Reload(parallel) => {
            let request = world.request();
            requests.push(request);
            world.intent(Intent::Reload {
                parallel,
                request: Some(request),
            });
        }
        Step::Restart(slot) => {
            let request = world.request();
            requests.push(request);
            world.intent(Intent::Restart {
                slot,
                request: Some(request),
            });
        }
        Step::Scale(count) => {
            let request = world.request();
            requests.push(request);
            world.intent(Intent::Scale {
                target: ScaleTarget::To(count),
                request: Some(request),
            });
        }
        Step::Heartbeat(n) => {
            if let Some(id) = nth_live(world, n) {
                world.feed(super::Input::Heartbeat { worker: id });
            }
        }
        Step::Grow(n) => {
            if let Some(id) = nth_live(world, n) {
                world.rss.insert(id, 200 << 20);
            }
        }
        Step::Serve(n) => {
            if let Some(id) = nth_live(world, n) {
                world.served.insert(id, 1000);
            }
        }
        Step::Disconnect(slot) | Step::Kill(slot) => {
            let order = match step {
                Step::Kill(_) => WorkerOrder::Kill,
                _ => WorkerOrder::Disconnect,
            };
            world.intent(Intent::Worker {
                slot,
                pid: None,
                order,
            });
        }
    }
}

/// No slot is left empty unless the cluster stops or the slot was scaled away: an empty slot
/// waits for its next worker (backoff).
fn check_slots(world: &World) -> Result<(), TestCaseError> {
    if world.machine.phase() == ClusterPhase::Stopping {
        return Ok(());
    }
    for slot in 1..=world.machine.config().workers {
        prop_assert!(
            !world.in_slot(slot).is_empty() || world.is_set(Timer::Respawn(slot)),
            "slot {slot} is empty with no worker due"
        );
    }
    Ok(())
}

/// Each request gets at most one final answer, and nothing after it.
fn check_answers(
    world: &World,
    requests: &[RequestId],
    all_done: bool,
) -> Result<(), TestCaseError> {
    for &request in requests {
        let answers = world.answers(request);
        let finals = answers
            .iter()
            .filter(|answer| matches!(answer, Update::Done { .. }))
            .count();
        prop_assert!(
            finals <= 1,
            "{request:?} answered {finals} times: {answers:?}"
        );
        if finals == 1 {
            let ends_with_it = matches!(answers.last(), Some(Update::Done { .. }));
            prop_assert!(
                ends_with_it,
                "{:?} answered after its result: {:?}",
                request,
                answers
            );
        }
        if all_done {
            prop_assert_eq!(finals, 1, "{:?} never answered: {:?}", request, answers);
        }
    }
    Ok(())
}

/// Stops the cluster and lets every worker exit; every one still running is signalled.
fn stop(world: &mut World) -> Result<(), TestCaseError> {
    let before = world.effects.len();
    world.intent(Intent::Stop { fast: false });
    let live = world.ids(|_| true);
    let signalled: HashMap<_, _> = world.effects[before..]
        .iter()
        .filter_map(|effect| match effect {
            Effect::Signal { worker, .. } | Effect::Stop { worker } => Some((*worker, ())),
            _ => None,
        })
        .collect();
    for id in &live {
        let asked_before = !world.signals_to(*id).is_empty();
        prop_assert!(
            signalled.contains_key(id) || asked_before,
            "worker {id} is never asked to stop"
        );
    }
    for _ in 0..4 {
        world.exit_signalled();
        world.advance(Duration::from_secs(6));
    }
    prop_assert!(
        world.machine.is_finished(),
        "workers left: {:?}",
        world.ids(|_| true)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn slots_stay_filled_requests_are_answered_once_and_stop_stops_all(
        workers in 1usize..4,
        steps in prop::collection::vec(step(true), 0..60),
    ) {
        let mut world = limited(workers, true);
        world.start();
        let mut requests = Vec::new();
        for step in &steps {
            apply(&mut world, step, &mut requests);
            check_slots(&world)?;
            check_answers(&world, &requests, false)?;
        }
        stop(&mut world)?;
        check_answers(&world, &requests, true)?;
    }

    #[test]
    fn ready_capacity_never_drops_below_the_count_during_reloads(
        workers in 1usize..4,
        steps in prop::collection::vec(step(false), 0..60),
    ) {
        let mut world = limited(workers, false);
        world.start();
        world.ready_all();
        prop_assert_eq!(world.machine.ready_slots().len(), workers);
        let mut requests = Vec::new();
        for step in &steps {
            apply(&mut world, step, &mut requests);
            prop_assert_eq!(
                world.machine.ready_slots().len(),
                workers,
                "after {:?}: {:?}",
                step,
                world.machine.workers()
            );
            check_answers(&world, &requests, false)?;
        }
        stop(&mut world)?;
        check_answers(&world, &requests, true)?;
        let _ = ExitReason::Unknown;
    }
}
