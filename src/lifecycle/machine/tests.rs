//! Every path of a life through the machine, without root, boxes, dockerd or a clock: the time is
//! an `Instant` the test moves by hand. The root tests (tests/lifecycle.rs) prove the same paths end
//! to end; these say which action each event leads to, and when.

use super::*;
use crate::exit::Exit;

const STOP: Duration = Duration::from_secs(9);
const ID: u64 = 7;

fn cfg() -> Config {
    Config {
        stop: STOP,
        drain: Duration::ZERO,
        deregisters: true,
        pass_deprecated: false,
        registrar: "jit",
        dockerd: true,
    }
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A machine and the time, moved by hand.
struct Life {
    m: Machine,
    now: Instant,
}

impl Life {
    fn new(cfg: Config) -> (Life, Vec<Action>) {
        let now = Instant::now();
        let (m, out) = Machine::new(cfg, now);
        (Life { m, now }, out)
    }

    fn at(&mut self, d: Duration) -> &mut Life {
        self.now += d;
        self
    }

    fn on(&mut self, e: Event) -> Vec<Action> {
        self.m.handle(self.now, e)
    }

    /// Moves the time to the machine's next timeout and lets it fire.
    fn timeout(&mut self) -> Vec<Action> {
        let t = self.m.poll_timeout().expect("the machine waits for a time");
        assert!(t >= self.now, "a timeout in the past");
        self.now = t;
        self.m.handle_timeout(self.now)
    }

    fn outcome(&mut self) -> Result<(), Error> {
        assert!(self.m.is_over(), "the life is not over");
        self.m.take_outcome().expect("an outcome")
    }

    fn exit_code(&mut self) -> Exit {
        Exit::of(&self.outcome())
    }
}

fn refused() -> crate::register::RegisterError {
    crate::register::RegisterError::Api(crate::github::ApiError::Refused {
        what: "generate a JIT runner config".into(),
        status: 401,
        message: "Bad credentials".into(),
        hint: "Check ACCESS_TOKEN.".into(),
    })
}

fn registered(id: Option<u64>) -> Event {
    Event::Registered(Registration {
        runner_id: id,
        name: "sysrunner-a".into(),
        configure: false,
    })
}

fn exited(code: i32) -> Event {
    Event::ListenerExited {
        code: Some(code),
        status: format!("exit code {code}"),
    }
}

fn marker(m: Marker) -> Event {
    Event::Marker(m)
}

fn job_started() -> Event {
    marker(Marker::JobStarted("build".into()))
}

fn job_completed() -> Event {
    marker(Marker::JobCompleted {
        job: "build".into(),
        result: "Succeeded".into(),
    })
}

fn deregister(within: Duration) -> Action {
    Action::Deregister {
        runner_id: ID,
        within,
    }
}

/// A life that has started and whose runner listens.
fn listening(cfg: Config) -> Life {
    let (mut l, out) = Life::new(cfg);
    assert_eq!(
        out,
        [
            Action::Publish(Health::Starting),
            Action::StartDockerd,
            Action::Register
        ]
    );
    l.at(ms(300));
    assert_eq!(
        l.on(registered(Some(ID))),
        [Action::Record {
            runner_id: ID,
            name: "sysrunner-a".into()
        }]
    );
    l.at(ms(900));
    assert_eq!(l.on(Event::DockerdReady), [Action::StartListener]);
    l.at(ms(500));
    assert_eq!(
        l.on(marker(Marker::Listening)),
        [Action::Publish(Health::Listening)]
    );
    l
}

/// The end of a life after its deletes: dockerd stopped, everything killed, the exit.
fn finish(l: &mut Life, grace: Duration) {
    let out = l.on(Event::Deregistered(Deleted::NotFound));
    assert_eq!(out, [Action::ForgetRecord, Action::StopDockerd { grace }]);
    assert_eq!(
        l.on(Event::DockerdStopped),
        [Action::KillAll, Action::Publish(Health::Done), Action::Exit]
    );
}

#[test]
fn a_job_runs_then_the_runner_is_deleted_dockerd_stopped_and_the_life_exits_0() {
    let mut l = listening(cfg());
    assert_eq!(l.on(job_started()), [Action::Publish(Health::Busy)]);
    assert_eq!(l.on(job_completed()), [Action::Publish(Health::Done)]);
    l.at(s(1));
    // GitHub removes an ephemeral runner after its job; ours is deleted anyway, within STOP_TIMEOUT.
    assert_eq!(
        l.on(exited(0)),
        [Action::Publish(Health::Stopping), deregister(STOP)]
    );
    l.at(ms(100));
    finish(&mut l, STOP - ms(100));
    assert_eq!(l.exit_code(), Exit::Ok);
}

/// DOCKERD=off: the registration alone starts the listener, and the end stops no dockerd.
#[test]
fn without_dockerd_the_registration_alone_starts_the_runner_and_the_end_stops_none() {
    let (mut l, out) = Life::new(Config {
        dockerd: false,
        ..cfg()
    });
    assert_eq!(out, [Action::Publish(Health::Starting), Action::Register]);
    l.at(ms(300));
    assert_eq!(
        l.on(registered(Some(ID))),
        [
            Action::Record {
                runner_id: ID,
                name: "sysrunner-a".into()
            },
            Action::StartListener
        ]
    );
    assert_eq!(
        l.on(marker(Marker::Listening)),
        [Action::Publish(Health::Listening)]
    );
    assert_eq!(l.on(job_started()), [Action::Publish(Health::Busy)]);
    assert_eq!(l.on(job_completed()), [Action::Publish(Health::Done)]);
    assert_eq!(
        l.on(exited(0)),
        [Action::Publish(Health::Stopping), deregister(STOP)]
    );
    assert_eq!(
        l.on(Event::Deregistered(Deleted::NotFound)),
        [
            Action::ForgetRecord,
            Action::KillAll,
            Action::Publish(Health::Done),
            Action::Exit
        ]
    );
    assert_eq!(l.exit_code(), Exit::Ok);
}

#[test]
fn sigterm_while_idle_deletes_the_runner_first_then_stops_the_listener_within_one_budget() {
    let mut l = listening(cfg());
    // Half of the budget for the delete, so that the listener and dockerd keep the other half.
    assert_eq!(l.on(Event::Signal(Signal::SIGTERM)), [deregister(s(9) / 2)]);
    l.at(s(3));
    assert_eq!(
        l.on(Event::Deregistered(Deleted::Deleted)),
        [Action::ForgetRecord, Action::StopListener { grace: s(3) }]
    );
    l.at(s(1));
    // Deleted already: no second delete, and dockerd gets what is left of the one budget.
    assert_eq!(
        l.on(exited(0)),
        [
            Action::Publish(Health::Stopping),
            Action::StopDockerd { grace: s(5) }
        ]
    );
    assert_eq!(
        l.on(Event::DockerdStopped),
        [Action::KillAll, Action::Publish(Health::Done), Action::Exit]
    );
    assert_eq!(l.exit_code(), Exit::Ok);
}

/// Regression: a delete that failed or timed out while idle was logged as "deregistered" and
/// never tried again; now the listener still stops, and the delete is tried again at the end.
#[test]
fn sigterm_while_idle_with_github_failing_stops_anyway_and_deletes_again_before_the_exit() {
    for failure in [Deleted::TimedOut, Deleted::Failed("502 Bad Gateway".into())] {
        let mut l = listening(cfg());
        l.on(Event::Signal(Signal::SIGTERM));
        l.at(s(4));
        assert_eq!(
            l.on(Event::Deregistered(failure.clone())),
            [Action::StopListener { grace: ms(2500) }]
        );
        l.at(s(1));
        assert_eq!(
            l.on(exited(0)),
            [Action::Publish(Health::Stopping), deregister(s(4))],
            "{failure:?}"
        );
        l.at(s(1));
        finish(&mut l, s(3));
        assert_eq!(l.exit_code(), Exit::Ok);
    }
}

#[test]
fn a_runner_github_calls_busy_when_signalled_idle_is_drained() {
    let mut l = listening(Config {
        drain: s(60),
        ..cfg()
    });
    l.on(Event::Signal(Signal::SIGTERM));
    // 422: it took a job just now.
    assert_eq!(l.on(Event::Deregistered(Deleted::Busy)), []);
    assert_eq!(l.m.poll_timeout(), Some(l.now + s(60)));
    l.at(s(20));
    assert_eq!(
        l.on(exited(0)),
        [Action::Publish(Health::Stopping), deregister(STOP)]
    );
    finish(&mut l, STOP);
    assert_eq!(l.exit_code(), Exit::Ok);
}

#[test]
fn sigterm_while_busy_without_a_drain_cancels_the_job_then_deletes_within_the_budget() {
    let mut l = listening(cfg());
    l.on(job_started());
    assert_eq!(l.on(Event::Signal(Signal::SIGTERM)), []);
    // DRAIN_TIMEOUT=0: the drain ends at once; half the budget for the runner to cancel.
    assert_eq!(l.timeout(), [Action::StopListener { grace: ms(4500) }]);
    l.at(s(2));
    l.on(marker(Marker::JobCompleted {
        job: "build".into(),
        result: "Canceled".into(),
    }));
    assert_eq!(
        l.on(exited(0)),
        [Action::Publish(Health::Stopping), deregister(s(7))]
    );
    finish(&mut l, s(7));
    assert_eq!(l.exit_code(), Exit::Ok);
}

#[test]
fn sigterm_while_busy_with_a_drain_lets_the_job_finish_and_the_budget_starts_after_it() {
    let mut l = listening(Config {
        drain: s(300),
        ..cfg()
    });
    l.on(job_started());
    assert_eq!(l.on(Event::Signal(Signal::SIGTERM)), []);
    l.at(s(100));
    l.on(job_completed());
    assert_eq!(
        l.on(exited(0)),
        [Action::Publish(Health::Stopping), deregister(STOP)]
    );
    finish(&mut l, STOP);
    assert_eq!(l.exit_code(), Exit::Ok);
}

#[test]
fn a_second_signal_skips_the_drain() {
    let mut l = listening(Config {
        drain: s(300),
        ..cfg()
    });
    l.on(job_started());
    l.on(Event::Signal(Signal::SIGTERM));
    l.at(s(10));
    assert_eq!(
        l.on(Event::Signal(Signal::SIGINT)),
        [Action::StopListener { grace: ms(4500) }]
    );
    l.at(s(5));
    // The runner ignored SIGINT for its grace and was killed: the budget still holds.
    assert_eq!(
        l.on(Event::ListenerExited {
            code: None,
            status: "killed by SIGKILL".into()
        }),
        [Action::Publish(Health::Stopping), deregister(s(4))]
    );
    finish(&mut l, s(4));
    assert_eq!(l.exit_code(), Exit::Ok);
}

#[test]
fn the_drain_ending_cancels_the_job() {
    let mut l = listening(Config {
        drain: s(300),
        ..cfg()
    });
    l.on(job_started());
    l.on(Event::Signal(Signal::SIGTERM));
    assert_eq!(l.m.poll_timeout(), Some(l.now + s(300)));
    assert_eq!(l.timeout(), [Action::StopListener { grace: ms(4500) }]);
}

#[test]
fn retryable_exits_restart_after_growing_pauses_and_the_sixth_ends_the_life_with_75() {
    let mut l = listening(cfg());
    for (n, pause) in [5, 10, 20, 40, 60].into_iter().enumerate() {
        assert_eq!(l.on(exited(2)), [], "exit {n}");
        assert_eq!(l.m.poll_timeout(), Some(l.now + s(pause)));
        // The runner is starting again: it was listening before, so that is news.
        let out = l.timeout();
        assert_eq!(
            out,
            [Action::Publish(Health::Starting), Action::StartListener],
            "restart {n}"
        );
        l.on(marker(Marker::Listening));
    }
    assert_eq!(
        l.on(exited(5)),
        [Action::Publish(Health::Stopping), deregister(STOP)]
    );
    finish(&mut l, STOP);
    let e = l.outcome().unwrap_err();
    assert_eq!(Exit::from(&e), Exit::TempFail);
    assert!(e.to_string().contains("after 5 restarts"), "{e}");
}

#[test]
fn a_signal_during_a_restart_pause_ends_the_life_cleanly() {
    let mut l = listening(cfg());
    l.on(exited(2));
    l.at(s(1));
    assert_eq!(
        l.on(Event::Signal(Signal::SIGTERM)),
        [Action::Publish(Health::Stopping), deregister(STOP)]
    );
    finish(&mut l, STOP);
    assert_eq!(l.exit_code(), Exit::Ok);
}

#[test]
fn a_self_update_is_waited_for_then_the_listener_starts_again() {
    let mut l = listening(cfg());
    assert_eq!(
        l.on(exited(3)),
        [Action::Publish(Health::Updating), Action::WatchUpdate]
    );
    assert_eq!(l.m.poll_timeout(), Some(l.now + UPDATE_WAIT));
    l.at(s(40));
    assert_eq!(
        l.on(Event::UpdateFinished),
        [Action::Publish(Health::Starting), Action::StartListener]
    );
    // An update that never finishes: the listener starts again after UPDATE_WAIT.
    l.on(marker(Marker::Listening));
    l.on(exited(4));
    assert_eq!(
        l.timeout(),
        [Action::Publish(Health::Starting), Action::StartListener]
    );
}

#[test]
fn dockerd_dying_mid_job_stops_the_runner_and_the_life_ends_75() {
    let mut l = listening(cfg());
    l.on(job_started());
    assert_eq!(
        l.on(Event::DockerdDied {
            status: ExitStatus::Signal(9)
        }),
        [Action::StopListener {
            grace: DOCKERD_DIED_GRACE
        }]
    );
    l.at(s(1));
    assert_eq!(
        l.on(exited(0)),
        [Action::Publish(Health::Stopping), deregister(s(8))]
    );
    finish(&mut l, s(8));
    let e = l.outcome().unwrap_err();
    assert_eq!(Exit::from(&e), Exit::TempFail);
    assert!(
        e.to_string()
            .contains("dockerd died (killed by SIGKILL) while the runner was busy"),
        "{e}"
    );
}

#[test]
fn a_crashing_listener_ends_the_life_with_75_and_a_deprecated_one_with_7_only_when_asked() {
    for (pass, code, want) in [
        (false, 1, Exit::TempFail),
        (false, 7, Exit::TempFail),
        (true, 7, Exit::VersionDeprecated),
        (true, 1, Exit::TempFail),
    ] {
        let mut l = listening(Config {
            pass_deprecated: pass,
            ..cfg()
        });
        l.on(exited(code));
        finish(&mut l, STOP);
        assert_eq!(l.exit_code(), want, "pass {pass}, listener exit {code}");
    }
}

#[test]
fn dockerd_failing_to_start_deletes_the_registration_and_ends_75() {
    let (mut l, _) = Life::new(cfg());
    l.on(registered(Some(ID)));
    l.at(s(60));
    let out = l.on(Event::DockerdFailed(Error::Dockerd(
        crate::dockerd::LaunchError::Start(crate::dockerd::StartError::Exited(ExitStatus::Code(1))),
    )));
    assert_eq!(out, [Action::Publish(Health::Stopping), deregister(STOP)]);
    // dockerd never answered: nothing to stop.
    assert_eq!(
        l.on(Event::Deregistered(Deleted::Deleted)),
        [
            Action::ForgetRecord,
            Action::KillAll,
            Action::Publish(Health::Done),
            Action::Exit
        ]
    );
    assert_eq!(l.exit_code(), Exit::TempFail);
}

#[test]
fn a_refused_registration_stops_dockerd_and_ends_with_the_refusals_code() {
    let (mut l, _) = Life::new(cfg());
    l.on(Event::DockerdReady);
    let out = l.on(Event::RegisterFailed(Error::Register(refused())));
    assert_eq!(
        out,
        [
            Action::Publish(Health::Stopping),
            Action::StopDockerd { grace: STOP }
        ]
    );
    l.on(Event::DockerdStopped);
    assert_eq!(l.exit_code(), Exit::Refused);
}

#[test]
fn a_signal_during_start_up_deletes_the_registration_as_soon_as_it_exists() {
    let (mut l, _) = Life::new(cfg());
    assert_eq!(l.on(Event::Signal(Signal::SIGTERM)), []);
    // A second signal changes nothing: start-up already has its deadline.
    assert_eq!(l.on(Event::Signal(Signal::SIGTERM)), []);
    l.at(s(2));
    assert_eq!(
        l.on(registered(Some(ID))),
        [
            Action::Record {
                runner_id: ID,
                name: "sysrunner-a".into()
            },
            deregister(s(7))
        ]
    );
    l.at(s(1));
    assert_eq!(
        l.on(Event::Deregistered(Deleted::Deleted)),
        [Action::ForgetRecord]
    );
    l.at(s(1));
    // dockerd is up after all: the life ends at once, without a listener, within the budget.
    assert_eq!(
        l.on(Event::DockerdReady),
        [
            Action::Publish(Health::Stopping),
            Action::StopDockerd { grace: s(5) }
        ]
    );
    l.on(Event::DockerdStopped);
    assert_eq!(l.exit_code(), Exit::Ok);
}

#[test]
fn a_signal_while_dockerd_never_gets_ready_kills_everything_at_the_budgets_end() {
    let (mut l, _) = Life::new(cfg());
    l.on(registered(Some(ID)));
    l.at(s(1));
    assert_eq!(l.on(Event::Signal(Signal::SIGTERM)), [deregister(STOP)]);
    l.on(Event::Deregistered(Deleted::Deleted));
    assert_eq!(l.m.poll_timeout(), Some(l.now + STOP));
    assert_eq!(
        l.timeout(),
        [Action::KillAll, Action::Publish(Health::Done), Action::Exit]
    );
    assert_eq!(l.exit_code(), Exit::Ok);
}

#[test]
fn a_pre_made_jit_config_is_never_deleted_by_us() {
    let mut l = listening(Config {
        deregisters: false,
        registrar: "pre-made",
        ..cfg()
    });
    assert_eq!(
        l.on(Event::Signal(Signal::SIGTERM)),
        [Action::StopListener { grace: ms(4500) }]
    );
    assert_eq!(
        l.on(exited(0)),
        [
            Action::Publish(Health::Stopping),
            Action::StopDockerd { grace: STOP }
        ]
    );
}

#[test]
fn config_mode_runs_config_sh_before_the_listener_and_records_the_runner_it_made() {
    let (mut l, _) = Life::new(cfg());
    l.on(Event::DockerdReady);
    let out = l.on(Event::Registered(Registration {
        runner_id: None,
        name: "sysrunner-a".into(),
        configure: true,
    }));
    assert_eq!(out, [Action::Configure]);
    assert_eq!(
        l.on(Event::Configured {
            runner_id: Some(ID)
        }),
        [
            Action::Record {
                runner_id: ID,
                name: "sysrunner-a".into()
            },
            Action::StartListener
        ]
    );
    // The id config.sh gave is the one deleted at the end.
    l.on(exited(0));
    assert!(l.m.awaits_delete());
}

#[test]
fn a_failing_config_sh_ends_the_life_with_75() {
    let (mut l, _) = Life::new(cfg());
    l.on(Event::DockerdReady);
    l.on(Event::Registered(Registration {
        runner_id: None,
        name: "sysrunner-a".into(),
        configure: true,
    }));
    let out = l.on(Event::ConfigureFailed(Error::Configure(
        "exit code 1".into(),
    )));
    // No id yet (config.sh did not say one): nothing to delete.
    assert_eq!(
        out,
        [
            Action::Publish(Health::Stopping),
            Action::StopDockerd { grace: STOP }
        ]
    );
    l.on(Event::DockerdStopped);
    assert_eq!(l.exit_code(), Exit::TempFail);
}

#[test]
fn a_runner_github_still_calls_busy_at_the_end_is_deleted_again_until_the_budget_runs_out() {
    let mut l = listening(cfg());
    l.on(exited(1));
    for _ in 0..3 {
        assert_eq!(l.on(Event::Deregistered(Deleted::Busy)), []);
        assert_eq!(l.m.poll_timeout(), Some(l.now + BUSY_RETRY));
        let out = l.timeout();
        assert!(
            matches!(out.as_slice(), [Action::Deregister { runner_id: ID, .. }]),
            "{out:?}"
        );
    }
    // Past the budget: give up, stop dockerd with at least a second.
    l.at(s(20));
    assert_eq!(
        l.on(Event::Deregistered(Deleted::Busy)),
        [Action::StopDockerd { grace: s(1) }]
    );
}

#[test]
fn a_delete_still_in_flight_when_the_job_ends_is_awaited_not_repeated() {
    let mut l = listening(cfg());
    l.on(Event::Signal(Signal::SIGTERM));
    l.at(s(1));
    // The runner exits while the delete is in flight (its job just ended).
    assert_eq!(l.on(exited(0)), [Action::Publish(Health::Stopping)]);
    l.at(s(1));
    finish(&mut l, s(7));
    assert_eq!(l.exit_code(), Exit::Ok);
}

#[test]
fn a_listener_that_cannot_start_ends_the_life_with_75() {
    let (mut l, _) = Life::new(cfg());
    l.on(registered(Some(ID)));
    l.on(Event::DockerdReady);
    let out = l.on(Event::ListenerSpawnFailed(Error::ListenerStart(
        std::io::Error::other("ENOENT"),
    )));
    assert_eq!(out, [Action::Publish(Health::Stopping), deregister(STOP)]);
    finish(&mut l, STOP);
    assert_eq!(l.exit_code(), Exit::TempFail);
}

#[test]
fn each_runner_state_is_announced_once_in_the_order_the_runner_printed_it() {
    let mut l = listening(cfg());
    // A second `Listening` after a job started does not move it back.
    assert_eq!(l.on(job_started()), [Action::Publish(Health::Busy)]);
    assert_eq!(l.on(marker(Marker::Listening)), []);
    assert_eq!(l.on(marker(Marker::Connected)), []);
    assert_eq!(l.on(job_completed()), [Action::Publish(Health::Done)]);
    assert_eq!(
        l.m.runner(),
        &State::Done {
            job: "build".into(),
            result: "Succeeded".into()
        }
    );
}
