//! The worker's side of the Locust protocol as a pure state machine.
//!
//! [`Machine::step`] takes the current [`State`] and one [`Event`] (a
//! decoded master message, or something that happened locally: a ramp step
//! finished, a stop finished, the master fell silent, a signal) and returns
//! the next state and the [`Action`]s to perform, in order. It does no I/O,
//! reads no clock and owns no run: the driver in [`super::worker`] performs
//! the actions (send a message, start or stop the engine, reconnect) and
//! feeds back what they caused. This is why every transition, stale and
//! out-of-order messages included, can be tested as a table without a
//! master, a socket or a load (see the tests below).
//!
//! Owns: which messages are answered in which state, which spawns are stale,
//! what a spawn during a stop becomes, when the run is reset. Must not
//! touch: sockets, timers, the engine, metrics (the driver does those).
//!
//! Rules the transitions encode (from Locust's `runners.py` and what its
//! master expects):
//! - `spawn` carries absolute targets and a timestamp; one whose timestamp
//!   is not newer than the newest seen in this run is stale and dropped.
//! - A `spawn` during a stop is kept (the newest only) and applied once the
//!   stop has completed, after `client_stopped`/`client_ready`.
//! - `quit` arrives 2-3 times: the first one ends the worker; the others,
//!   and a master that is gone by then, change nothing (exit code 0).
//! - Losing the master (send error, silence, `reconnect`) resets the run and
//!   re-registers; messages before the new `ack` are the old master's.

use std::time::Duration;

use super::wire::{MasterMsg, Spawn, WorkerMsg, WorkerState};

/// On `quit` (or a signal) in-flight requests get this long to finish:
/// the master waits only about 0.5 s for the final stats.
pub const QUIT_GRACE: Duration = Duration::from_millis(100);

/// Where the worker is in the protocol. Spawn timestamps are the master's
/// wall clock (seconds); `newest_spawn` is 0 when no step of the current
/// run has been seen.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Registered, no run.
    Ready { newest_spawn: f64 },
    /// A ramp step is being applied; `spawning_complete` follows.
    Spawning { newest_spawn: f64 },
    /// Every user of the latest step runs.
    Running { newest_spawn: f64 },
    /// `stop` received: users wind down within the master's `stop_timeout`.
    /// `deferred` is the newest spawn that arrived meanwhile.
    Stopping {
        newest_spawn: f64,
        deferred: Option<Box<Spawn>>,
    },
    /// The stop completed: `client_stopped` and `client_ready` were sent,
    /// the master's `ack` is awaited. Behaves like `Ready`.
    Stopped,
    /// Not registered with a master: at start, and after losing one.
    /// Only the `ack` of a new registration leads out.
    Reconnecting,
    /// `quit` or a signal: the final stats are on their way; the process ends.
    Quitting,
}

impl State {
    /// The state a worker starts in: it has to register first.
    pub fn initial() -> State {
        State::Reconnecting
    }

    /// What the heartbeat tells the master (the master overwrites its view
    /// of the worker with it); `None` when no heartbeat is due.
    pub fn heartbeat_state(&self) -> Option<WorkerState> {
        match self {
            State::Ready { .. } | State::Stopped => Some(WorkerState::Ready),
            State::Spawning { .. } => Some(WorkerState::Spawning),
            State::Running { .. } => Some(WorkerState::Running),
            State::Stopping { .. } => Some(WorkerState::Stopped),
            State::Reconnecting | State::Quitting => None,
        }
    }
}

/// Something the machine reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A decoded message from the master.
    Master(MasterMsg),
    /// A frame from the master that did not decode or broke a wire limit.
    Undecodable(String),
    /// The latest ramp step has started all its users.
    SpawnComplete,
    /// The run could not start (bad config, setup error); the driver has
    /// told the master why.
    StartFailed,
    /// The stop in progress has finished: every user has ended.
    StopComplete,
    /// Time to send a heartbeat (every second).
    HeartbeatTick,
    /// Time to send a stats report (every 3 s).
    ReportTick,
    /// No heartbeat from the master for too long.
    HeartbeatTimeout,
    /// A send failed or the connection closed.
    ConnectionLost(String),
    /// SIGINT/SIGTERM: leave, telling the master.
    Signal,
}

/// What the driver must do, in order. When a send fails, the driver skips
/// the rest and steps [`Event::ConnectionLost`].
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a fixed message.
    Send(WorkerMsg),
    /// Send a heartbeat with this state and the process's CPU and memory.
    SendHeartbeat(WorkerState),
    /// Send a stats report of everything recorded since the last one.
    SendStats,
    /// Send the run's last stats report, then forget the run's metrics.
    /// Nothing to send (no run measured) is not an error.
    SendFinalStats,
    /// Send `spawning_complete` with the running users per class.
    SendSpawningComplete,
    /// Start the run if there is none, then apply the step's targets.
    /// The driver steps [`Event::StartFailed`] if the run cannot start.
    Apply(Box<Spawn>),
    /// Stop the run in the background within the master's `stop_timeout`;
    /// the driver steps [`Event::StopComplete`] when it has ended.
    BeginStop,
    /// Stop the run, or finish a stop in progress, within `grace`, now.
    WindDown { grace: Duration },
    /// End the run at once (a new master knows nothing of it) and drop the
    /// connection; keep what was measured but not reported, for the next
    /// master. Then register again.
    Reconnect { reason: String },
    /// Let the last messages drain, then end the worker (exit 0).
    Exit,
}

/// The transition function (a namespace: the state is passed in and out).
pub struct Machine;

impl Machine {
    pub fn step(state: State, event: Event) -> (State, Vec<Action>) {
        use Action as A;
        use State as S;
        match (state, event) {
            // ---- Quitting: the end is under way; nothing changes it.
            (S::Quitting, Event::ConnectionLost(_) | Event::HeartbeatTimeout) => (S::Quitting, vec![A::Exit]),
            (
                S::Quitting,
                Event::Master(_)
                | Event::Undecodable(_)
                | Event::SpawnComplete
                | Event::StartFailed
                | Event::StopComplete
                | Event::HeartbeatTick
                | Event::ReportTick
                | Event::Signal,
            ) => (S::Quitting, vec![]),

            // ---- Reconnecting: only an `ack` (or a quit) matters.
            (S::Reconnecting, Event::Master(MasterMsg::Ack { .. })) => {
                (S::Ready { newest_spawn: 0.0 }, vec![A::SendFinalStats])
            }
            (S::Reconnecting, Event::Master(MasterMsg::Quit)) => (S::Quitting, vec![A::SendStats, A::Exit]),
            (S::Reconnecting, Event::Signal) => (S::Quitting, vec![A::Exit]),
            (
                S::Reconnecting,
                Event::Master(
                    MasterMsg::Spawn(_)
                    | MasterMsg::Stop
                    | MasterMsg::Reconnect
                    | MasterMsg::Heartbeat
                    | MasterMsg::SpawningComplete { .. }
                    | MasterMsg::UpdateUserClass
                    | MasterMsg::Flush
                    | MasterMsg::Custom { .. },
                )
                | Event::Undecodable(_)
                | Event::SpawnComplete
                | Event::StartFailed
                | Event::StopComplete
                | Event::HeartbeatTick
                | Event::ReportTick
                | Event::HeartbeatTimeout
                | Event::ConnectionLost(_),
            ) => (S::Reconnecting, vec![]),

            // ---- Registered states: the same answer in each of them.
            (
                S::Ready { .. } | S::Spawning { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped,
                Event::Master(MasterMsg::Quit),
            ) => (
                S::Quitting,
                vec![A::WindDown { grace: QUIT_GRACE }, A::SendStats, A::Exit],
            ),
            (
                S::Ready { .. } | S::Spawning { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped,
                Event::Signal,
            ) => (
                S::Quitting,
                vec![
                    A::WindDown { grace: QUIT_GRACE },
                    A::SendStats,
                    A::Send(WorkerMsg::Quit),
                    A::Exit,
                ],
            ),
            (
                S::Ready { .. } | S::Spawning { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped,
                Event::Master(MasterMsg::Reconnect),
            ) => lost("the master asked us to reconnect".into()),
            (
                S::Ready { .. } | S::Spawning { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped,
                Event::ConnectionLost(reason),
            ) => lost(reason),
            (
                S::Ready { .. } | S::Spawning { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped,
                Event::HeartbeatTimeout,
            ) => lost("no heartbeat from the master".into()),
            (
                s @ (S::Ready { .. } | S::Spawning { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped),
                Event::HeartbeatTick,
            ) => {
                let actions = s.heartbeat_state().map(A::SendHeartbeat).into_iter().collect();
                (s, actions)
            }
            (
                s @ (S::Ready { .. } | S::Spawning { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped),
                Event::ReportTick,
            ) => (s, vec![A::SendStats]),
            (
                s @ (S::Ready { .. } | S::Spawning { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped),
                Event::Undecodable(detail),
            ) => (
                s,
                vec![exception(format!("rejected a message from the master: {detail}"))],
            ),
            (
                s @ (S::Ready { .. } | S::Spawning { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped),
                Event::Master(
                    MasterMsg::Heartbeat
                    | MasterMsg::SpawningComplete { .. }
                    | MasterMsg::UpdateUserClass
                    | MasterMsg::Custom { .. },
                ),
            ) => (s, vec![]),

            // Flush: the master plugin is about to quit. End the run now,
            // report everything, then answer (ordered after the stats).
            (
                S::Spawning { newest_spawn } | S::Running { newest_spawn } | S::Stopping { newest_spawn, .. },
                Event::Master(MasterMsg::Flush),
            ) => (
                S::Ready { newest_spawn },
                vec![
                    A::WindDown { grace: QUIT_GRACE },
                    A::SendFinalStats,
                    A::Send(WorkerMsg::Flushed),
                ],
            ),
            (s @ (S::Ready { .. } | S::Stopped), Event::Master(MasterMsg::Flush)) => {
                (s, vec![A::SendStats, A::Send(WorkerMsg::Flushed)])
            }

            // Ack: the answer to the client_ready sent after a stop.
            (S::Stopped, Event::Master(MasterMsg::Ack { .. })) => (S::Ready { newest_spawn: 0.0 }, vec![]),
            (
                s @ (S::Ready { .. } | S::Spawning { .. } | S::Running { .. } | S::Stopping { .. }),
                Event::Master(MasterMsg::Ack { .. }),
            ) => (s, vec![]),

            // Spawn.
            (
                s @ (S::Ready { newest_spawn } | S::Spawning { newest_spawn } | S::Running { newest_spawn }),
                Event::Master(MasterMsg::Spawn(spawn)),
            ) => apply(s, newest_spawn, spawn),
            (S::Stopped, Event::Master(MasterMsg::Spawn(spawn))) => apply(S::Stopped, 0.0, spawn),
            (S::Stopping { newest_spawn, deferred }, Event::Master(MasterMsg::Spawn(spawn))) => {
                let newest = deferred
                    .as_ref()
                    .map_or(newest_spawn, |d| d.timestamp.max(newest_spawn));
                let deferred = if spawn.timestamp > newest {
                    Some(spawn)
                } else {
                    deferred
                };
                (S::Stopping { newest_spawn, deferred }, vec![])
            }

            // Stop.
            (S::Spawning { newest_spawn } | S::Running { newest_spawn }, Event::Master(MasterMsg::Stop)) => (
                S::Stopping {
                    newest_spawn,
                    deferred: None,
                },
                vec![A::BeginStop],
            ),
            (s @ (S::Ready { .. } | S::Stopping { .. } | S::Stopped), Event::Master(MasterMsg::Stop)) => (s, vec![]),

            // Local results of earlier actions.
            (S::Spawning { newest_spawn }, Event::SpawnComplete) => {
                (S::Running { newest_spawn }, vec![A::SendSpawningComplete])
            }
            (s @ (S::Ready { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped), Event::SpawnComplete) => {
                (s, vec![])
            }
            (S::Spawning { newest_spawn }, Event::StartFailed) => (S::Ready { newest_spawn }, vec![]),
            (s @ (S::Ready { .. } | S::Running { .. } | S::Stopping { .. } | S::Stopped), Event::StartFailed) => {
                (s, vec![])
            }
            (S::Stopping { deferred, .. }, Event::StopComplete) => {
                let mut actions = vec![
                    A::SendFinalStats,
                    A::Send(WorkerMsg::ClientStopped),
                    A::Send(WorkerMsg::ClientReady),
                ];
                match deferred {
                    None => (S::Stopped, actions),
                    Some(spawn) => {
                        let newest_spawn = spawn.timestamp;
                        actions.push(A::Send(WorkerMsg::Spawning));
                        actions.push(A::Apply(spawn));
                        (S::Spawning { newest_spawn }, actions)
                    }
                }
            }
            (s @ (S::Ready { .. } | S::Spawning { .. } | S::Running { .. } | S::Stopped), Event::StopComplete) => {
                (s, vec![])
            }
        }
    }
}

/// A spawn in a state that applies it at once: stale ones change nothing.
fn apply(unchanged: State, newest_spawn: f64, spawn: Box<Spawn>) -> (State, Vec<Action>) {
    if spawn.timestamp <= newest_spawn {
        return (unchanged, vec![]);
    }
    (
        State::Spawning {
            newest_spawn: spawn.timestamp,
        },
        vec![Action::Send(WorkerMsg::Spawning), Action::Apply(spawn)],
    )
}

/// The master is gone (or wants a fresh start): reset and register again.
fn lost(reason: String) -> (State, Vec<Action>) {
    (State::Reconnecting, vec![Action::Reconnect { reason }])
}

fn exception(msg: String) -> Action {
    Action::Send(WorkerMsg::Exception {
        msg,
        traceback: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spawn(timestamp: f64, users: u32) -> Box<Spawn> {
        Box::new(Spawn {
            timestamp,
            user_classes_count: BTreeMap::from([("Chat".to_string(), users)]),
            host: None,
            stop_timeout: None,
            config: None,
            cluster_users: None,
            worker_count: None,
            spawn_rate: None,
        })
    }

    fn master(m: MasterMsg) -> Event {
        Event::Master(m)
    }

    fn spawn_msg(timestamp: f64, users: u32) -> Event {
        master(MasterMsg::Spawn(spawn(timestamp, users)))
    }

    /// Steps through `events`, returning the last state and every action.
    fn run(state: State, events: Vec<Event>) -> (State, Vec<Action>) {
        events.into_iter().fold((state, vec![]), |(s, mut all), e| {
            let (s, actions) = Machine::step(s, e);
            all.extend(actions);
            (s, all)
        })
    }

    fn applied(actions: &[Action]) -> Vec<f64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Apply(s) => Some(s.timestamp),
                _ => None,
            })
            .collect()
    }

    fn all_states() -> Vec<State> {
        vec![
            State::Ready { newest_spawn: 1.0 },
            State::Spawning { newest_spawn: 1.0 },
            State::Running { newest_spawn: 1.0 },
            State::Stopping {
                newest_spawn: 1.0,
                deferred: Some(spawn(2.0, 1)),
            },
            State::Stopped,
            State::Reconnecting,
            State::Quitting,
        ]
    }

    #[test]
    fn registration_leads_from_reconnecting_to_ready_and_flushes_the_last_window() {
        let (s, a) = Machine::step(State::initial(), master(MasterMsg::Ack { index: Some(0) }));
        assert_eq!(s, State::Ready { newest_spawn: 0.0 });
        assert_eq!(a, vec![Action::SendFinalStats]);
    }

    #[test]
    fn before_the_ack_nothing_is_answered_and_no_spawn_is_applied() {
        let events = vec![
            spawn_msg(5.0, 3),
            master(MasterMsg::Stop),
            master(MasterMsg::Heartbeat),
            master(MasterMsg::Reconnect),
            Event::HeartbeatTick,
            Event::ReportTick,
            Event::Undecodable("x".into()),
            Event::StopComplete,
            Event::SpawnComplete,
            Event::HeartbeatTimeout,
            Event::ConnectionLost("gone".into()),
        ];
        assert_eq!(run(State::Reconnecting, events), (State::Reconnecting, vec![]));
    }

    #[test]
    fn a_ramp_spawns_then_completes_and_each_newer_step_is_applied() {
        let (s, a) = run(
            State::Ready { newest_spawn: 0.0 },
            vec![spawn_msg(10.0, 2), Event::SpawnComplete, spawn_msg(11.0, 4)],
        );
        assert_eq!(s, State::Spawning { newest_spawn: 11.0 });
        assert_eq!(applied(&a), vec![10.0, 11.0]);
        assert_eq!(a[0], Action::Send(WorkerMsg::Spawning));
        assert_eq!(a[2], Action::SendSpawningComplete);
        let (s, a) = Machine::step(s, Event::SpawnComplete);
        assert_eq!(
            (s, a),
            (
                State::Running { newest_spawn: 11.0 },
                vec![Action::SendSpawningComplete]
            )
        );
    }

    #[test]
    fn stale_and_out_of_order_spawns_change_nothing() {
        // Proves: a step not newer than the newest one seen (equal or older
        // timestamp, in any state that applies spawns) is dropped silently.
        for state in [
            State::Ready { newest_spawn: 10.0 },
            State::Spawning { newest_spawn: 10.0 },
            State::Running { newest_spawn: 10.0 },
        ] {
            for ts in [10.0, 9.999, 0.0, -1.0] {
                let (s, a) = Machine::step(state.clone(), spawn_msg(ts, 7));
                assert_eq!((&s, a.len()), (&state, 0), "{state:?} {ts}");
            }
        }
        // Out of order: 12 arrives before 11; 11 is then stale.
        let (s, a) = run(
            State::Running { newest_spawn: 10.0 },
            vec![spawn_msg(12.0, 3), spawn_msg(11.0, 2)],
        );
        assert_eq!(s, State::Spawning { newest_spawn: 12.0 });
        assert_eq!(applied(&a), vec![12.0]);
    }

    #[test]
    fn a_spawn_during_stop_is_applied_after_the_stop_completes() {
        let (s, a) = run(
            State::Running { newest_spawn: 10.0 },
            vec![
                master(MasterMsg::Stop),
                spawn_msg(20.0, 1),
                spawn_msg(9.0, 9),  // older than the run: stale
                spawn_msg(21.0, 2), // newer: replaces 20
                spawn_msg(20.5, 5), // older than the deferred one: stale
                master(MasterMsg::Stop),
            ],
        );
        assert_eq!(a, vec![Action::BeginStop], "one stop, nothing applied yet");
        assert!(matches!(&s, State::Stopping { deferred: Some(d), .. } if d.timestamp == 21.0));
        let (s, a) = Machine::step(s, Event::StopComplete);
        assert_eq!(s, State::Spawning { newest_spawn: 21.0 });
        assert_eq!(
            a,
            vec![
                Action::SendFinalStats,
                Action::Send(WorkerMsg::ClientStopped),
                Action::Send(WorkerMsg::ClientReady),
                Action::Send(WorkerMsg::Spawning),
                Action::Apply(spawn(21.0, 2)),
            ]
        );
    }

    #[test]
    fn a_stop_without_spawns_ends_ready_again_and_the_next_run_starts_afresh() {
        let (s, a) = run(
            State::Spawning { newest_spawn: 50.0 },
            vec![master(MasterMsg::Stop), Event::SpawnComplete, Event::StopComplete],
        );
        assert_eq!(s, State::Stopped);
        assert_eq!(
            a,
            vec![
                Action::BeginStop,
                Action::SendFinalStats,
                Action::Send(WorkerMsg::ClientStopped),
                Action::Send(WorkerMsg::ClientReady),
            ]
        );
        // A new run's first spawn is applied whatever its timestamp.
        let (s2, a) = Machine::step(s.clone(), spawn_msg(1.0, 1));
        assert_eq!((s2, applied(&a)), (State::Spawning { newest_spawn: 1.0 }, vec![1.0]));
        let (s, a) = Machine::step(s, master(MasterMsg::Ack { index: Some(3) }));
        assert_eq!((s, a), (State::Ready { newest_spawn: 0.0 }, vec![]));
    }

    #[test]
    fn stop_when_idle_or_twice_does_nothing() {
        for state in [State::Ready { newest_spawn: 3.0 }, State::Stopped] {
            assert_eq!(Machine::step(state.clone(), master(MasterMsg::Stop)), (state, vec![]));
        }
        let stopping = State::Stopping {
            newest_spawn: 1.0,
            deferred: None,
        };
        assert_eq!(
            Machine::step(stopping.clone(), master(MasterMsg::Stop)),
            (stopping, vec![])
        );
    }

    #[test]
    fn losing_the_master_resets_and_a_replayed_spawn_after_reconnect_starts_a_new_run() {
        for lose in [
            Event::ConnectionLost("send failed".into()),
            Event::HeartbeatTimeout,
            master(MasterMsg::Reconnect),
        ] {
            let (s, a) = Machine::step(State::Running { newest_spawn: 30.0 }, lose.clone());
            assert_eq!(s, State::Reconnecting, "{lose:?}");
            assert!(matches!(a.as_slice(), [Action::Reconnect { .. }]), "{lose:?}");
            // The old master's spawn replayed before the ack: dropped.
            let (s, a) = run(s, vec![spawn_msg(30.0, 5)]);
            assert_eq!((&s, a.len()), (&State::Reconnecting, 0));
            // After the ack the same step is a new run's first step.
            let (s, a) = run(
                s,
                vec![
                    master(MasterMsg::Ack { index: Some(0) }),
                    spawn_msg(30.0, 5),
                    spawn_msg(30.0, 5),
                ],
            );
            assert_eq!(s, State::Spawning { newest_spawn: 30.0 });
            assert_eq!(a[0], Action::SendFinalStats);
            assert_eq!(applied(&a), vec![30.0], "a replay of the same step is stale");
        }
    }

    #[test]
    fn quit_in_every_state() {
        for state in all_states() {
            let (s, a) = Machine::step(state.clone(), master(MasterMsg::Quit));
            assert_eq!(s, State::Quitting, "{state:?}");
            let expected = match state {
                State::Quitting => vec![],
                // Nothing runs while unregistered; the unsent window still goes.
                State::Reconnecting => vec![Action::SendStats, Action::Exit],
                _ => vec![Action::WindDown { grace: QUIT_GRACE }, Action::SendStats, Action::Exit],
            };
            assert_eq!(a, expected, "{state:?}");
            // Repeated quits (the master sends 2-3) change nothing.
            assert_eq!(Machine::step(s, master(MasterMsg::Quit)), (State::Quitting, vec![]));
        }
    }

    #[test]
    fn flush_in_every_state_ends_the_run_reports_it_then_answers_and_quit_still_exits() {
        // Proves: the master plugin's `tokenswarm_flush` (sent just before
        // `quit`) ends a run at once and answers after the final stats in
        // every registered state; unregistered or quitting workers stay
        // silent (no master to answer); and the `quit` that follows exits.
        for state in all_states() {
            let (s, a) = Machine::step(state.clone(), master(MasterMsg::Flush));
            let expected = match &state {
                State::Quitting | State::Reconnecting => vec![],
                State::Ready { .. } | State::Stopped => vec![Action::SendStats, Action::Send(WorkerMsg::Flushed)],
                _ => vec![
                    Action::WindDown { grace: QUIT_GRACE },
                    Action::SendFinalStats,
                    Action::Send(WorkerMsg::Flushed),
                ],
            };
            assert_eq!(a, expected, "{state:?}");
            if matches!(
                state,
                State::Spawning { .. } | State::Running { .. } | State::Stopping { .. }
            ) {
                assert_eq!(s, State::Ready { newest_spawn: 1.0 }, "{state:?}");
            }
            let (s, a) = Machine::step(s, master(MasterMsg::Quit));
            assert_eq!(s, State::Quitting);
            if !matches!(state, State::Quitting) {
                assert_eq!(a.last(), Some(&Action::Exit), "{state:?}: {a:?}");
            }
        }
    }

    #[test]
    fn after_quit_a_master_that_is_gone_still_means_exit() {
        // Proves: the final stats failing to send (master already gone)
        // leads to Exit (exit code 0), not to a reconnect (exit code 3).
        for lose in [Event::ConnectionLost("broken pipe".into()), Event::HeartbeatTimeout] {
            assert_eq!(
                Machine::step(State::Quitting, lose),
                (State::Quitting, vec![Action::Exit])
            );
        }
    }

    #[test]
    fn a_signal_in_every_state_tells_the_master_and_exits() {
        for state in all_states() {
            let (s, a) = Machine::step(state.clone(), Event::Signal);
            assert_eq!(s, State::Quitting);
            let expected = match state {
                State::Quitting => vec![],
                State::Reconnecting => vec![Action::Exit],
                _ => vec![
                    Action::WindDown { grace: QUIT_GRACE },
                    Action::SendStats,
                    Action::Send(WorkerMsg::Quit),
                    Action::Exit,
                ],
            };
            assert_eq!(a, expected, "{state:?}");
        }
    }

    #[test]
    fn heartbeats_report_the_state_the_master_expects() {
        use WorkerState as W;
        let expected = [
            Some(W::Ready),
            Some(W::Spawning),
            Some(W::Running),
            Some(W::Stopped),
            Some(W::Ready),
            None,
            None,
        ];
        for (state, want) in all_states().into_iter().zip(expected) {
            let (s, a) = Machine::step(state.clone(), Event::HeartbeatTick);
            assert_eq!(s, state);
            assert_eq!(a, want.map(Action::SendHeartbeat).into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn undecodable_messages_are_reported_while_registered_and_change_no_state() {
        for state in all_states() {
            let (s, a) = Machine::step(state.clone(), Event::Undecodable("too many users".into()));
            assert_eq!(s, state);
            let reported = matches!(a.as_slice(), [Action::Send(WorkerMsg::Exception { msg, .. })] if msg.contains("too many users"));
            let registered = !matches!(state, State::Reconnecting | State::Quitting);
            assert_eq!(reported, registered, "{state:?}: {a:?}");
        }
    }

    #[test]
    fn a_run_that_cannot_start_leaves_the_worker_ready_and_keeps_the_step_seen() {
        let (s, a) = run(
            State::Ready { newest_spawn: 0.0 },
            vec![spawn_msg(4.0, 1), Event::StartFailed, spawn_msg(4.0, 1)],
        );
        assert_eq!(s, State::Ready { newest_spawn: 4.0 });
        assert_eq!(applied(&a), vec![4.0], "the same step is not retried");
        let (s, a) = Machine::step(s, spawn_msg(5.0, 2));
        assert_eq!((s, applied(&a)), (State::Spawning { newest_spawn: 5.0 }, vec![5.0]));
    }

    #[test]
    fn local_results_that_arrive_late_are_ignored() {
        for state in all_states() {
            for event in [Event::SpawnComplete, Event::StartFailed, Event::StopComplete] {
                let (s, a) = Machine::step(state.clone(), event.clone());
                let acts = match (&state, &event) {
                    (State::Spawning { .. }, Event::SpawnComplete | Event::StartFailed) => continue,
                    (State::Stopping { .. }, Event::StopComplete) => continue,
                    _ => a,
                };
                assert_eq!((s, acts), (state.clone(), vec![]), "{state:?} {event:?}");
            }
        }
    }

    #[test]
    fn reports_go_out_while_registered_only() {
        for state in all_states() {
            let (_, a) = Machine::step(state.clone(), Event::ReportTick);
            let registered = !matches!(state, State::Reconnecting | State::Quitting);
            assert_eq!(a == vec![Action::SendStats], registered, "{state:?}");
        }
    }
}
