//! One life as data: the phases a life goes through, the events that move it, and the actions it
//! asks for. Pure: no I/O, no clock of its own (the time comes with every call), no task; the
//! driver (`super::driver`) turns processes, HTTP calls and signals into [`Event`]s, performs the
//! [`Action`]s, and sleeps until [`Machine::poll_timeout`]. Every rule of a life's order and
//! budgets lives here, so that each path (signals idle and busy, the drain, restarts, self-update,
//! dockerd's death, a failing start-up) is tested without root, boxes or dockerd.
//!
//! The budgets, as README promises them:
//! - start-up: dockerd's start and the registration run at the same time; a signal during start-up
//!   gives both STOP_TIMEOUT to settle, and a registration that exists by then is deleted at once;
//! - a signal while idle: delete the runner at GitHub first (so it gets no job while it stops;
//!   a 422 means it just took one, which makes it busy), then stop the listener;
//! - a signal while busy: the job may run DRAIN_TIMEOUT, a second signal ends the drain, then the
//!   listener is stopped (SIGINT: the runner cancels and reports the job);
//! - one STOP_TIMEOUT budget from the signal (idle) or from the drain's end (busy) covers stopping
//!   the listener (half of what is left), deregistering and stopping dockerd (the rest, at least
//!   1 s), so that compose's grace of DRAIN_TIMEOUT + STOP_TIMEOUT + 1 s is never exceeded.

use crate::error::Error;
use crate::reaper::ExitStatus;
use crate::runner::{AfterExit, MAX_RESTARTS, Marker, State, after_exit};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::time::Instant;

/// How long the listener gets to stop after dockerd died under it.
pub const DOCKERD_DIED_GRACE: Duration = Duration::from_secs(5);
/// How long a self-update may take before the listener is started again anyway.
pub const UPDATE_WAIT: Duration = Duration::from_secs(300);
/// The pause between deletes while GitHub says the runner is still busy (422).
pub const BUSY_RETRY: Duration = Duration::from_millis(250);

/// The settings a life's decisions depend on.
#[derive(Debug, Clone)]
pub struct Config {
    /// STOP_TIMEOUT.
    pub stop: Duration,
    /// DRAIN_TIMEOUT.
    pub drain: Duration,
    /// Whether deregistration is ours (false: a controller made the JIT config and deletes it).
    pub deregisters: bool,
    /// ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1: a listener's 7 is the life's exit 7.
    pub pass_deprecated: bool,
    /// `jit`, `config` or `pre-made`, for the log.
    pub registrar: &'static str,
    /// DOCKERD=on: the life starts dockerd beside the registration and waits for both; off: the
    /// registration alone.
    pub dockerd: bool,
}

/// What the registration gave, as far as the life's decisions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Known at once for `jit`; after `config.sh` for `config`; never for a pre-made JIT config.
    pub runner_id: Option<u64>,
    pub name: String,
    /// `config` registration: `config.sh` runs before the listener.
    pub configure: bool,
}

/// How a delete at GitHub went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// Not there (any more): GitHub removed the ephemeral runner after its job.
    NotFound,
    /// 422: it is running a job right now.
    Busy,
    Failed(String),
    /// No answer within the time the action gave it.
    TimedOut,
}

/// What the health state says (`/run/sysrunner/state.json`, read by `sysrunner healthcheck`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Listening,
    Busy,
    /// The job is done (or the life ended); the container is about to exit.
    Done,
    Updating,
    Stopping,
}

impl Health {
    pub fn of(state: &State) -> Health {
        match state {
            State::Starting => Health::Starting,
            State::Listening => Health::Listening,
            State::Busy { .. } => Health::Busy,
            State::Done { .. } => Health::Done,
            State::Updating => Health::Updating,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Listening => "listening",
            Health::Busy => "busy",
            Health::Done => "done",
            Health::Updating => "updating",
            Health::Stopping => "stopping",
        }
    }
}

/// Something that happened.
#[derive(Debug)]
pub enum Event {
    DockerdReady,
    DockerdFailed(Error),
    /// dockerd exited on its own (not while we stop it).
    DockerdDied {
        status: ExitStatus,
    },
    DockerdStopped,
    Registered(Registration),
    RegisterFailed(Error),
    /// `config.sh` succeeded; the runner id it wrote into `.runner`.
    Configured {
        runner_id: Option<u64>,
    },
    ConfigureFailed(Error),
    ListenerSpawnFailed(Error),
    /// A line of the listener's output that matters.
    Marker(Marker),
    /// The listener exited (its output read to the end first): its code, and how it ended.
    ListenerExited {
        code: Option<i32>,
        status: String,
    },
    /// `update.finished` appeared after a self-update.
    UpdateFinished,
    Deregistered(Deleted),
    Signal(Signal),
}

/// Something the driver must do. Effects that take time report back with an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Prepare and start dockerd: `DockerdReady` or `DockerdFailed`, later maybe `DockerdDied`.
    StartDockerd,
    /// Register: `Registered` or `RegisterFailed`.
    Register,
    /// Keep the registration for the next life, in case this one never deletes it.
    Record {
        runner_id: u64,
        name: String,
    },
    ForgetRecord,
    Publish(Health),
    /// Run `config.sh`: `Configured` or `ConfigureFailed`.
    Configure,
    /// Start `bin/Runner.Listener run`: `Marker`s, then `ListenerExited`; or `ListenerSpawnFailed`.
    StartListener,
    /// SIGINT to the listener; its process group is killed if it has not exited within `grace`.
    /// `ListenerExited` follows either way.
    StopListener {
        grace: Duration,
    },
    /// Wait for `update.finished`: `UpdateFinished`.
    WatchUpdate,
    /// Delete the runner at GitHub, giving up after `within`: `Deregistered`.
    Deregister {
        runner_id: u64,
        within: Duration,
    },
    /// SIGTERM to dockerd, SIGKILL after `grace`, then every orphan: `DockerdStopped`.
    StopDockerd {
        grace: Duration,
    },
    /// Kill every process left (the life's end).
    KillAll,
    /// The life is over: [`Machine::take_outcome`] says how.
    Exit,
}

/// Where the life is.
#[derive(Debug)]
enum Phase {
    /// dockerd starting and the registration in flight. `stop_by`: set by a signal.
    StartingUp {
        dockerd: Option<Result<(), Error>>,
        registration: Option<Result<Registration, Error>>,
        stop_by: Option<Instant>,
    },
    /// `config.sh` running. `stop_by`: a signal came meanwhile.
    Configuring {
        stop_by: Option<Instant>,
    },
    /// The listener runs.
    Running,
    /// The listener exited retryably; it starts again at `until`.
    Pausing {
        until: Instant,
    },
    /// The listener is updating itself; it starts again on `update.finished` or at `until`.
    Updating {
        since: Instant,
        until: Instant,
    },
    /// A signal while idle: the delete at GitHub is in flight.
    IdleDeregistering {
        signal: Signal,
        end: Instant,
    },
    /// A signal while busy: the job may go on until `until`.
    Draining {
        until: Instant,
    },
    /// The listener was asked to stop; then the life ends with `outcome` within `end`.
    StoppingRunner {
        end: Instant,
        outcome: Option<Result<(), Error>>,
    },
    /// Deregistering (ours), stopping dockerd, killing what is left, within `end`.
    Ending {
        end: Instant,
        outcome: Option<Result<(), Error>>,
        step: EndStep,
    },
    Exited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndStep {
    /// A delete started before the end is still in flight.
    AwaitingDelete,
    Deleting,
    /// GitHub said busy: delete again at this time.
    RetryDeleteAt(Instant),
    StoppingDockerd,
}

/// One life's state machine.
#[derive(Debug)]
pub struct Machine {
    cfg: Config,
    phase: Phase,
    /// When start-up began: start-up times are logged from here.
    t0: Instant,
    runner: State,
    restarts: u32,
    registration: Option<Registration>,
    /// GitHub no longer has our runner (deleted by us, or gone).
    deregistered: bool,
    delete_in_flight: bool,
    /// dockerd answered, so it must be stopped at the end.
    dockerd_up: bool,
    health: Option<Health>,
    /// How the life ended, once it has.
    outcome: Option<Result<(), Error>>,
}

impl Machine {
    /// A life that starts dockerd and registers now.
    pub fn new(cfg: Config, now: Instant) -> (Machine, Vec<Action>) {
        let dockerd = cfg.dockerd;
        let mut m = Machine {
            cfg,
            phase: Phase::StartingUp {
                // Without a dockerd, there is none to wait for.
                dockerd: (!dockerd).then_some(Ok(())),
                registration: None,
                stop_by: None,
            },
            t0: now,
            runner: State::Starting,
            restarts: 0,
            registration: None,
            deregistered: false,
            delete_in_flight: false,
            dockerd_up: false,
            health: None,
            outcome: None,
        };
        let mut out = Vec::new();
        m.publish(Health::Starting, &mut out);
        if dockerd {
            out.push(Action::StartDockerd);
        }
        out.push(Action::Register);
        (m, out)
    }

    /// When the machine wants [`Machine::handle_timeout`] called, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::StartingUp { stop_by, .. } => *stop_by,
            Phase::Pausing { until } | Phase::Draining { until } => Some(*until),
            Phase::Updating { until, .. } => Some(*until),
            Phase::Ending {
                step: EndStep::RetryDeleteAt(at),
                ..
            } => Some(*at),
            _ => None,
        }
    }

    pub fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Exited)
    }

    /// How the life ended, after [`Action::Exit`]: `Ok` for a job done or a clean stop.
    pub fn take_outcome(&mut self) -> Option<Result<(), Error>> {
        self.outcome.take()
    }

    /// What the runner said it is doing, last.
    pub fn runner(&self) -> &State {
        &self.runner
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match std::mem::replace(&mut self.phase, Phase::Exited) {
            Phase::StartingUp {
                stop_by: Some(t), ..
            } if now >= t => {
                tracing::error!("start-up did not settle within STOP_TIMEOUT: killing every child");
                self.exit(Ok(()), &mut out);
            }
            Phase::Pausing { until } if now >= until => self.start_listener(&mut out),
            Phase::Updating { since, until } if now >= until => {
                tracing::warn!(
                    "the runner's self-update did not finish within {}s: starting it again",
                    (now - since).as_secs()
                );
                self.start_listener(&mut out);
            }
            Phase::Draining { until } if now >= until => self.cancel_job(now, &mut out),
            Phase::Ending {
                end,
                outcome,
                step: EndStep::RetryDeleteAt(at),
            } if now >= at => self.end_step_delete(now, end, outcome, &mut out),
            other => self.phase = other,
        }
        out
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        // Events that mean the same in every phase.
        match event {
            Event::Marker(m) => {
                self.on_marker(&m, &mut out);
                return out;
            }
            Event::Deregistered(d) if !self.awaits_delete() => {
                // A delete whose answer nobody waits for any more: only its news counts.
                self.delete_in_flight = false;
                self.note_deleted(&d, &mut out);
                return out;
            }
            event => self.dispatch(now, event, &mut out),
        }
        out
    }

    fn awaits_delete(&self) -> bool {
        matches!(
            self.phase,
            Phase::IdleDeregistering { .. }
                | Phase::Ending {
                    step: EndStep::Deleting | EndStep::AwaitingDelete,
                    ..
                }
        )
    }

    fn dispatch(&mut self, now: Instant, event: Event, out: &mut Vec<Action>) {
        match std::mem::replace(&mut self.phase, Phase::Exited) {
            Phase::StartingUp {
                dockerd,
                registration,
                stop_by,
            } => self.starting_up(now, event, dockerd, registration, stop_by, out),
            Phase::Configuring { stop_by } => self.configuring(now, event, stop_by, out),
            Phase::Running => self.running(now, event, out),
            Phase::Pausing { until } => match event {
                Event::Signal(_) => self.end(now, now + self.cfg.stop, Ok(()), out),
                Event::DockerdDied { status } => self.end(
                    now,
                    now + self.cfg.stop,
                    Err(self.dockerd_died(status)),
                    out,
                ),
                _ => self.phase = Phase::Pausing { until },
            },
            Phase::Updating { since, until } => match event {
                Event::UpdateFinished => {
                    tracing::warn!(
                        "the runner updated itself in {:.0}s: the image's pinned runner is behind; bump RUNNER_VERSION",
                        (now - since).as_secs_f64()
                    );
                    self.start_listener(out);
                }
                Event::Signal(_) => self.end(now, now + self.cfg.stop, Ok(()), out),
                Event::DockerdDied { status } => self.end(
                    now,
                    now + self.cfg.stop,
                    Err(self.dockerd_died(status)),
                    out,
                ),
                _ => self.phase = Phase::Updating { since, until },
            },
            Phase::IdleDeregistering { signal, end } => {
                self.idle_deregistering(now, event, signal, end, out)
            }
            Phase::Draining { until } => match event {
                Event::ListenerExited { status, .. } => {
                    tracing::info!("the job ended during the drain ({status})");
                    self.end(now, now + self.cfg.stop, Ok(()), out);
                }
                Event::Signal(_) => {
                    tracing::warn!("second signal: skipping the drain");
                    self.cancel_job(now, out);
                }
                Event::DockerdDied { status } => {
                    let e = self.dockerd_died(status);
                    self.stop_runner(now + self.cfg.stop, DOCKERD_DIED_GRACE, Err(e), out);
                }
                _ => self.phase = Phase::Draining { until },
            },
            Phase::StoppingRunner { end, outcome } => match event {
                Event::ListenerExited { .. } => self.end(now, end, outcome.unwrap_or(Ok(())), out),
                _ => self.phase = Phase::StoppingRunner { end, outcome },
            },
            Phase::Ending { end, outcome, step } => {
                self.ending(now, event, end, outcome, step, out)
            }
            Phase::Exited => {}
        }
    }

    fn starting_up(
        &mut self,
        now: Instant,
        event: Event,
        mut dockerd: Option<Result<(), Error>>,
        mut registration: Option<Result<Registration, Error>>,
        mut stop_by: Option<Instant>,
        out: &mut Vec<Action>,
    ) {
        match event {
            Event::DockerdReady => {
                tracing::info!(
                    phase = "dockerd-ready",
                    "dockerd ready in {:.2}s",
                    (now - self.t0).as_secs_f64()
                );
                self.dockerd_up = true;
                dockerd = Some(Ok(()));
            }
            Event::DockerdFailed(e) => dockerd = Some(Err(e)),
            Event::Registered(r) => {
                tracing::info!(
                    phase = "registered",
                    runner_id = r.runner_id,
                    "registered {} ({}) in {:.2}s",
                    r.name,
                    self.cfg.registrar,
                    (now - self.t0).as_secs_f64()
                );
                if let Some(id) = r.runner_id {
                    out.push(Action::Record {
                        runner_id: id,
                        name: r.name.clone(),
                    });
                }
                self.registration = Some(r.clone());
                registration = Some(Ok(r));
            }
            Event::RegisterFailed(e) => registration = Some(Err(e)),
            Event::Signal(sig) if stop_by.is_none() => {
                tracing::info!("{sig} while starting: stopping once start-up settles");
                stop_by = Some(now + self.cfg.stop);
            }
            // A second signal changes nothing: start-up already has its deadline.
            _ => {}
        }
        // After a signal, a registration is deleted as soon as it exists, so that a slow dockerd
        // cannot keep it alive past the budget.
        if let Some(end) = stop_by {
            self.delete_now(end.saturating_duration_since(now), out);
        }
        match (dockerd, registration) {
            (Some(Ok(())), Some(Ok(r))) => {
                tracing::info!(
                    phase = "started",
                    "start-up took {:.2}s",
                    (now - self.t0).as_secs_f64()
                );
                match stop_by {
                    Some(end) => self.end(now, end, Ok(()), out),
                    None if r.configure => {
                        self.phase = Phase::Configuring { stop_by: None };
                        out.push(Action::Configure);
                    }
                    None => self.start_listener(out),
                }
            }
            (Some(d), Some(r)) => {
                let end = stop_by.unwrap_or(now + self.cfg.stop);
                let outcome = match (d, r) {
                    (Err(e), _) | (_, Err(e)) => Err(e),
                    _ => unreachable!("both succeeded above"),
                };
                self.end(now, end, outcome, out);
            }
            (dockerd, registration) => {
                self.phase = Phase::StartingUp {
                    dockerd,
                    registration,
                    stop_by,
                }
            }
        }
    }

    fn configuring(
        &mut self,
        now: Instant,
        event: Event,
        stop_by: Option<Instant>,
        out: &mut Vec<Action>,
    ) {
        match event {
            Event::Configured { runner_id } => {
                if let Some(r) = self.registration.as_mut() {
                    r.runner_id = runner_id;
                    if let Some(id) = runner_id {
                        out.push(Action::Record {
                            runner_id: id,
                            name: r.name.clone(),
                        });
                    }
                }
                match stop_by {
                    Some(end) => self.end(now, end, Ok(()), out),
                    None => self.start_listener(out),
                }
            }
            Event::ConfigureFailed(e) => {
                self.end(now, stop_by.unwrap_or(now + self.cfg.stop), Err(e), out)
            }
            Event::Signal(sig) if stop_by.is_none() => {
                tracing::info!("{sig} while configuring: stopping once config.sh ends");
                self.phase = Phase::Configuring {
                    stop_by: Some(now + self.cfg.stop),
                };
            }
            Event::DockerdDied { status } => self.end(
                now,
                now + self.cfg.stop,
                Err(self.dockerd_died(status)),
                out,
            ),
            _ => self.phase = Phase::Configuring { stop_by },
        }
    }

    fn running(&mut self, now: Instant, event: Event, out: &mut Vec<Action>) {
        match event {
            Event::ListenerExited { code, status } => {
                match after_exit(code, self.restarts, self.cfg.pass_deprecated) {
                    AfterExit::Done => {
                        tracing::info!("runner done ({status}): {}", describe(&self.runner));
                        self.end(now, now + self.cfg.stop, Ok(()), out);
                    }
                    AfterExit::Restart { after, reason } => {
                        self.restarts += 1;
                        tracing::warn!(
                            "runner: {reason}; restart {} of {MAX_RESTARTS} in {}s",
                            self.restarts,
                            after.as_secs()
                        );
                        self.phase = Phase::Pausing { until: now + after };
                    }
                    AfterExit::AwaitUpdate => {
                        self.set_runner(State::Updating, out);
                        self.phase = Phase::Updating {
                            since: now,
                            until: now + UPDATE_WAIT,
                        };
                        out.push(Action::WatchUpdate);
                    }
                    AfterExit::Fail(f) => {
                        self.end(now, now + self.cfg.stop, Err(Error::Runner(f)), out)
                    }
                }
            }
            Event::ListenerSpawnFailed(e) => self.end(now, now + self.cfg.stop, Err(e), out),
            Event::DockerdDied { status } => {
                let e = self.dockerd_died(status);
                self.stop_runner(now + self.cfg.stop, DOCKERD_DIED_GRACE, Err(e), out);
            }
            Event::Signal(sig) => {
                let end = now + self.cfg.stop;
                if matches!(self.runner, State::Busy { .. }) {
                    self.drain(now, sig);
                } else if let Some(id) = self.ours() {
                    // Deleted first, so GitHub gives it no job while it stops.
                    self.delete_in_flight = true;
                    out.push(Action::Deregister {
                        runner_id: id,
                        within: end.saturating_duration_since(now) / 2,
                    });
                    self.phase = Phase::IdleDeregistering { signal: sig, end };
                } else {
                    tracing::info!("{sig} while idle: stopping the runner");
                    self.stop_runner(end, (end - now) / 2, Ok(()), out);
                }
            }
            _ => self.phase = Phase::Running,
        }
    }

    fn idle_deregistering(
        &mut self,
        now: Instant,
        event: Event,
        signal: Signal,
        end: Instant,
        out: &mut Vec<Action>,
    ) {
        match event {
            Event::Deregistered(d) => {
                self.delete_in_flight = false;
                match d {
                    Deleted::Busy => {
                        tracing::info!(
                            "GitHub says the runner is running a job: treating it as busy"
                        );
                        self.drain(now, signal);
                    }
                    Deleted::Deleted | Deleted::NotFound => {
                        self.note_deleted(&d, out);
                        tracing::info!("{signal} while idle: deregistered; stopping the runner");
                        self.stop_runner(end, end.saturating_duration_since(now) / 2, Ok(()), out);
                    }
                    Deleted::Failed(_) | Deleted::TimedOut => {
                        self.note_deleted(&d, out);
                        tracing::info!(
                            "{signal} while idle: not deregistered yet (tried again before the exit); stopping the runner"
                        );
                        self.stop_runner(end, end.saturating_duration_since(now) / 2, Ok(()), out);
                    }
                }
            }
            Event::ListenerExited { status, .. } => {
                // The job that started as we signalled has ended, or the runner quit.
                tracing::info!("runner done ({status}): {}", describe(&self.runner));
                self.end(now, end, Ok(()), out);
            }
            Event::DockerdDied { status } => {
                let e = self.dockerd_died(status);
                self.stop_runner(end, DOCKERD_DIED_GRACE, Err(e), out);
            }
            _ => self.phase = Phase::IdleDeregistering { signal, end },
        }
    }

    fn ending(
        &mut self,
        now: Instant,
        event: Event,
        end: Instant,
        outcome: Option<Result<(), Error>>,
        step: EndStep,
        out: &mut Vec<Action>,
    ) {
        match (step, event) {
            (EndStep::AwaitingDelete | EndStep::Deleting, Event::Deregistered(d)) => {
                self.delete_in_flight = false;
                match d {
                    Deleted::Busy if now < end => {
                        self.phase = Phase::Ending {
                            end,
                            outcome,
                            step: EndStep::RetryDeleteAt((now + BUSY_RETRY).min(end)),
                        };
                    }
                    d => {
                        self.note_deleted(&d, out);
                        if !self.deregistered {
                            self.still_registered();
                        }
                        self.stop_dockerd(now, end, outcome, out);
                    }
                }
            }
            (EndStep::StoppingDockerd, Event::DockerdStopped) => {
                self.exit(outcome.unwrap_or(Ok(())), out)
            }
            (step, _) => self.phase = Phase::Ending { end, outcome, step },
        }
    }

    /// The life ends: deregister (ours, if still registered), stop dockerd, kill what is left.
    fn end(
        &mut self,
        now: Instant,
        end: Instant,
        outcome: Result<(), Error>,
        out: &mut Vec<Action>,
    ) {
        if let Err(e) = &outcome {
            tracing::error!("{e}");
        }
        self.publish(Health::Stopping, out);
        let outcome = Some(outcome);
        if self.delete_in_flight {
            self.phase = Phase::Ending {
                end,
                outcome,
                step: EndStep::AwaitingDelete,
            };
        } else {
            self.end_step_delete(now, end, outcome, out);
        }
    }

    /// Deletes the runner within the budget if it is ours and still registered, else goes on.
    fn end_step_delete(
        &mut self,
        now: Instant,
        end: Instant,
        outcome: Option<Result<(), Error>>,
        out: &mut Vec<Action>,
    ) {
        let left = end.saturating_duration_since(now);
        match self.ours() {
            Some(id) if !self.deregistered && !left.is_zero() => {
                self.delete_in_flight = true;
                out.push(Action::Deregister {
                    runner_id: id,
                    within: left,
                });
                self.phase = Phase::Ending {
                    end,
                    outcome,
                    step: EndStep::Deleting,
                };
            }
            Some(_) if !self.deregistered => {
                self.still_registered();
                self.stop_dockerd(now, end, outcome, out);
            }
            _ => self.stop_dockerd(now, end, outcome, out),
        }
    }

    fn stop_dockerd(
        &mut self,
        now: Instant,
        end: Instant,
        outcome: Option<Result<(), Error>>,
        out: &mut Vec<Action>,
    ) {
        if self.dockerd_up {
            out.push(Action::StopDockerd {
                grace: end
                    .saturating_duration_since(now)
                    .max(Duration::from_secs(1)),
            });
            self.phase = Phase::Ending {
                end,
                outcome,
                step: EndStep::StoppingDockerd,
            };
        } else {
            self.exit(outcome.unwrap_or(Ok(())), out);
        }
    }

    /// Kills what is left and ends the life with `outcome`.
    fn exit(&mut self, outcome: Result<(), Error>, out: &mut Vec<Action>) {
        out.push(Action::KillAll);
        self.publish(Health::Done, out);
        self.phase = Phase::Exited;
        self.outcome = Some(outcome);
        out.push(Action::Exit);
    }

    fn still_registered(&self) {
        if let Some(id) = self.ours() {
            tracing::warn!(
                runner_id = id,
                "runner {id} is still registered: the next life or `sysrunner prune` deletes it"
            );
        }
    }

    /// After a signal during start-up: delete the registration as soon as it exists.
    fn delete_now(&mut self, within: Duration, out: &mut Vec<Action>) {
        if self.deregistered || self.delete_in_flight || within.is_zero() {
            return;
        }
        if let Some(id) = self.ours() {
            self.delete_in_flight = true;
            out.push(Action::Deregister {
                runner_id: id,
                within,
            });
        }
    }

    /// The runner id to delete, when deregistration is ours and GitHub knows the id.
    fn ours(&self) -> Option<u64> {
        if !self.cfg.deregisters {
            return None;
        }
        self.registration.as_ref()?.runner_id
    }

    fn note_deleted(&mut self, d: &Deleted, out: &mut Vec<Action>) {
        let id = self.ours();
        match d {
            Deleted::Deleted => {
                tracing::info!(phase = "deregistered", runner_id = id, "deregistered");
                self.deregistered = true;
                out.push(Action::ForgetRecord);
            }
            Deleted::NotFound => {
                tracing::info!(
                    phase = "deregistered",
                    runner_id = id,
                    "GitHub already removed the ephemeral runner"
                );
                self.deregistered = true;
                out.push(Action::ForgetRecord);
            }
            Deleted::Busy => {}
            Deleted::Failed(e) => tracing::warn!("deregistration failed: {e}"),
            Deleted::TimedOut => tracing::warn!("deregistration did not answer in time"),
        }
    }

    fn drain(&mut self, now: Instant, sig: Signal) {
        tracing::info!(
            "{sig} while busy: letting the job run up to DRAIN_TIMEOUT ({}s)",
            self.cfg.drain.as_secs()
        );
        self.phase = Phase::Draining {
            until: now + self.cfg.drain,
        };
    }

    /// The drain is over: the budget starts now; half of it for the runner to cancel and report.
    fn cancel_job(&mut self, now: Instant, out: &mut Vec<Action>) {
        tracing::info!("cancelling the job (SIGINT to the listener)");
        let end = now + self.cfg.stop;
        self.stop_runner(end, self.cfg.stop / 2, Ok(()), out);
    }

    fn stop_runner(
        &mut self,
        end: Instant,
        grace: Duration,
        outcome: Result<(), Error>,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::StopListener { grace });
        self.phase = Phase::StoppingRunner {
            end,
            outcome: Some(outcome),
        };
    }

    fn start_listener(&mut self, out: &mut Vec<Action>) {
        self.set_runner(State::Starting, out);
        out.push(Action::StartListener);
        self.phase = Phase::Running;
    }

    fn dockerd_died(&self, status: ExitStatus) -> Error {
        Error::DockerdDied {
            status,
            runner: self.runner.as_str(),
        }
    }

    fn on_marker(&mut self, m: &Marker, out: &mut Vec<Action>) {
        let next = self.runner.clone().on(m);
        if next != self.runner {
            self.set_runner(next, out);
        }
    }

    /// The one place a runner state is announced: each change is logged once, and published.
    fn set_runner(&mut self, next: State, out: &mut Vec<Action>) {
        tracing::info!(
            phase = next.phase(),
            state = next.as_str(),
            "runner {}",
            describe(&next)
        );
        self.publish(Health::of(&next), out);
        self.runner = next;
    }

    fn publish(&mut self, h: Health, out: &mut Vec<Action>) {
        if self.health != Some(h) {
            self.health = Some(h);
            out.push(Action::Publish(h));
        }
    }
}

pub fn describe(s: &State) -> String {
    match s {
        State::Busy { job } => format!("busy with {job}"),
        State::Done { job, result } => format!("job {job} completed: {result}"),
        other => other.as_str().to_string(),
    }
}

#[cfg(test)]
mod tests;
