//! The driver with a scripted host, under tokio's paused clock: the machine's timers fire through
//! the driver, signals arrive through it, and a life's whole stop fits its budget, with the time
//! measured in the paused clock (instant to run, exact to check).

use super::machine::{Action, Config, Deleted, Event, Machine, Registration};
use super::{Host, drive};
use crate::runner::Marker;
use nix::sys::signal::Signal;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

const STOP: Duration = Duration::from_secs(9);

/// How slow each effect is, and what GitHub answers to a delete.
#[derive(Clone)]
struct Script {
    dockerd_ready: Option<Duration>,
    delete: Option<Deleted>,
    /// The runner's first `Running job` after starting, if any.
    job_after: Option<Duration>,
    /// How long the runner takes to exit after SIGINT (its job cancelled); `None`: never, it is
    /// killed when its grace is over.
    stops_after: Option<Duration>,
}

/// A host whose effects answer after the script's delays, recording every action with its time.
struct ScriptedHost {
    t0: Instant,
    script: Script,
    events: mpsc::UnboundedSender<Event>,
    actions: Arc<Mutex<Vec<(Duration, Action)>>>,
}

impl ScriptedHost {
    fn later(&self, after: Duration, e: Event) {
        let tx = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(e);
        });
    }
}

impl Host for ScriptedHost {
    fn perform(&mut self, action: Action) {
        self.actions
            .lock()
            .unwrap()
            .push((self.t0.elapsed(), action.clone()));
        match action {
            Action::StartDockerd => {
                if let Some(d) = self.script.dockerd_ready {
                    self.later(d, Event::DockerdReady);
                }
            }
            Action::Register => self.later(
                Duration::from_millis(200),
                Event::Registered(Registration {
                    runner_id: Some(7),
                    name: "sysrunner-a".into(),
                    configure: false,
                }),
            ),
            Action::StartListener => {
                self.later(Duration::from_millis(500), Event::Marker(Marker::Listening));
                if let Some(d) = self.script.job_after {
                    self.later(d, Event::Marker(Marker::JobStarted("build".into())));
                }
            }
            Action::StopListener { grace } => {
                let after = self.script.stops_after.map_or(grace, |d| d.min(grace));
                self.later(
                    after,
                    Event::ListenerExited {
                        code: Some(0),
                        status: "exit code 0".into(),
                    },
                );
            }
            Action::Deregister { within, .. } => match self.script.delete.clone() {
                Some(d) => self.later(Duration::from_millis(100), Event::Deregistered(d)),
                // GitHub hangs: the host gives up when the action says.
                None => self.later(within, Event::Deregistered(Deleted::TimedOut)),
            },
            Action::StopDockerd { .. } => {
                self.later(Duration::from_millis(10), Event::DockerdStopped)
            }
            _ => {}
        }
    }
}

fn cfg(drain: Duration) -> Config {
    Config {
        stop: STOP,
        drain,
        deregisters: true,
        pass_deprecated: false,
        registrar: "jit",
        dockerd: true,
    }
}

/// Runs a life with `script`, signalling at each of `signals` (times from the start). Returns
/// the outcome, when it ended, and the actions with their times.
async fn life(
    cfg: Config,
    script: Script,
    signals: &[Duration],
) -> (
    Result<(), crate::error::Error>,
    Duration,
    Vec<(Duration, Action)>,
) {
    let t0 = Instant::now();
    let (tx, mut events) = mpsc::unbounded_channel();
    let (sig_tx, mut sigs) = mpsc::unbounded_channel();
    for at in signals {
        let (tx, at) = (sig_tx.clone(), *at);
        tokio::spawn(async move {
            tokio::time::sleep(at).await;
            let _ = tx.send(Signal::SIGTERM);
        });
    }
    let actions = Arc::new(Mutex::new(Vec::new()));
    let mut host = ScriptedHost {
        t0,
        script,
        events: tx,
        actions: actions.clone(),
    };
    let (m, first) = Machine::new(cfg, t0);
    let outcome = drive(m, first, &mut host, &mut events, &mut sigs).await;
    let took = t0.elapsed();
    let recorded = actions.lock().unwrap().clone();
    (outcome, took, recorded)
}

fn when(actions: &[(Duration, Action)], f: impl Fn(&Action) -> bool) -> Option<Duration> {
    actions.iter().find(|(_, a)| f(a)).map(|(t, _)| *t)
}

#[tokio::test(start_paused = true)]
async fn an_idle_runner_signalled_while_github_hangs_still_ends_within_stop_timeout() {
    let script = Script {
        dockerd_ready: Some(Duration::from_secs(1)),
        delete: None,
        job_after: None,
        stops_after: None,
    };
    let signal_at = Duration::from_secs(5);
    let (outcome, took, actions) = life(cfg(Duration::ZERO), script, &[signal_at]).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    // Half the budget for the hanging delete, half of the rest for the runner, then dockerd with
    // at least a second: STOP_TIMEOUT + 1 s at most, as README promises compose's grace covers.
    assert!(
        took <= signal_at + STOP + Duration::from_secs(1),
        "{took:?}: {actions:?}"
    );
    let stop_listener = when(&actions, |a| matches!(a, Action::StopListener { .. })).unwrap();
    assert_eq!(stop_listener, signal_at + STOP / 2, "{actions:?}");
}

#[tokio::test(start_paused = true)]
async fn a_busy_runners_drain_ends_on_the_drivers_timer_and_the_job_is_cancelled() {
    let drain = Duration::from_secs(60);
    let script = Script {
        dockerd_ready: Some(Duration::from_secs(1)),
        delete: Some(Deleted::NotFound),
        job_after: Some(Duration::from_secs(1)),
        stops_after: Some(Duration::from_secs(2)),
    };
    let signal_at = Duration::from_secs(10);
    let (outcome, took, actions) = life(cfg(drain), script, &[signal_at]).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    let cancelled = when(&actions, |a| matches!(a, Action::StopListener { .. })).unwrap();
    assert_eq!(cancelled, signal_at + drain, "{actions:?}");
    assert!(
        took <= signal_at + drain + STOP + Duration::from_secs(1),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_signal_ends_the_drain_early() {
    let script = Script {
        dockerd_ready: Some(Duration::from_secs(1)),
        delete: Some(Deleted::NotFound),
        job_after: Some(Duration::from_secs(1)),
        stops_after: Some(Duration::from_secs(1)),
    };
    let (first, second) = (Duration::from_secs(10), Duration::from_secs(12));
    let (outcome, _, actions) = life(cfg(Duration::from_secs(300)), script, &[first, second]).await;
    assert!(outcome.is_ok());
    let cancelled = when(&actions, |a| matches!(a, Action::StopListener { .. })).unwrap();
    assert_eq!(cancelled, second, "{actions:?}");
}

#[tokio::test(start_paused = true)]
async fn a_dockerd_that_never_answers_ends_the_life_stop_timeout_after_the_signal() {
    let script = Script {
        dockerd_ready: None,
        delete: Some(Deleted::Deleted),
        job_after: None,
        stops_after: None,
    };
    let signal_at = Duration::from_secs(3);
    let (outcome, took, actions) = life(cfg(Duration::ZERO), script, &[signal_at]).await;
    assert!(outcome.is_ok());
    assert_eq!(took, signal_at + STOP, "{actions:?}");
    // The registration was deleted as soon as it existed, long before the end.
    let deleted = when(&actions, |a| matches!(a, Action::Deregister { .. })).unwrap();
    assert_eq!(deleted, signal_at, "{actions:?}");
    assert!(actions.iter().any(|(_, a)| *a == Action::KillAll));
}

/// The runners earlier lives left: deleted when GitHub lets them go, kept while busy (the soak's
/// seed 78: the record of a busy leftover was forgotten after one try, and the life after took
/// the still-busy runner for another container's: exit 77).
mod leftovers {
    use crate::github::Deleted as ApiDeleted;
    use crate::lifecycle::pristine::Layout;
    use crate::lifecycle::{Record, delete_leftover, read_left_busy, read_record, write_record};
    use crate::register::{BoxFut, RegisterError, Registered, Registrar};
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// GitHub's runners by id: `true` when busy.
    struct Gh(Mutex<BTreeMap<u64, (String, bool)>>);

    impl Registrar for Gh {
        fn kind(&self) -> &'static str {
            "stub"
        }
        fn register(&self, _: Option<u64>) -> BoxFut<'_, Result<Registered, RegisterError>> {
            unreachable!("not registering here")
        }
        fn deregisters(&self) -> bool {
            true
        }
        fn deregister(&self, _: u64) -> BoxFut<'_, Result<ApiDeleted, RegisterError>> {
            unreachable!("not deregistering here")
        }
        fn delete_leftover(
            &self,
            runner_id: u64,
            name: &str,
        ) -> BoxFut<'_, Result<Option<ApiDeleted>, RegisterError>> {
            let mut all = self.0.lock().unwrap();
            let out = match all.get(&runner_id) {
                Some((n, _)) if n != name => None,
                None => None,
                Some((_, true)) => Some(ApiDeleted::Busy),
                Some((_, false)) => {
                    all.remove(&runner_id);
                    Some(ApiDeleted::Deleted)
                }
            };
            Box::pin(async move { Ok(out) })
        }
        fn runner_downloads(
            &self,
        ) -> Option<
            BoxFut<'static, Result<Vec<crate::github::RunnerDownload>, crate::github::ApiError>>,
        > {
            None
        }
    }

    /// A container's layout under a temporary root (kept alive by the returned guard).
    fn layout() -> (tempfile::TempDir, Layout) {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::new(
            &root.path().join("release"),
            &root.path().join("home"),
            root.path(),
        );
        (root, layout)
    }

    fn record(id: u64, name: &str) -> Record {
        Record {
            runner_id: id,
            name: name.into(),
        }
    }

    #[tokio::test]
    async fn a_busy_leftover_is_kept_until_github_lets_it_go() {
        let (_root, layout) = layout();
        let gh = Gh(Mutex::new(BTreeMap::from([(
            1,
            ("sysrunner-a".to_string(), true),
        )])));

        // Life 1 finds life 0's runner busy: kept, and named as the name's holder.
        write_record(&layout, &record(1, "sysrunner-a"));
        assert_eq!(delete_leftover(&gh, &layout, "sysrunner-a").await, Some(1));
        assert!(
            read_record(&layout).is_none(),
            "the record moves to the busy list"
        );
        assert_eq!(read_left_busy(&layout).len(), 1);

        // Life 1 registered as sysrunner-a-0001 (id 2) and ended cleanly: its record is gone, but
        // life 2 must still know runner 1 is this container's own.
        gh.0.lock()
            .unwrap()
            .insert(2, ("sysrunner-a-0001".to_string(), false));
        write_record(&layout, &record(2, "sysrunner-a-0001"));
        assert_eq!(delete_leftover(&gh, &layout, "sysrunner-a").await, Some(1));
        assert!(
            !gh.0.lock().unwrap().contains_key(&2),
            "life 1's runner deleted"
        );
        assert_eq!(read_left_busy(&layout).len(), 1);

        // GitHub gives up on the cut-off job: the runner is offline and idle, and goes.
        gh.0.lock().unwrap().get_mut(&1).unwrap().1 = false;
        assert_eq!(delete_leftover(&gh, &layout, "sysrunner-a").await, None);
        assert!(gh.0.lock().unwrap().is_empty());
        assert!(read_left_busy(&layout).is_empty());
        assert!(!layout.state.join("left-busy.json").exists());
    }

    #[tokio::test]
    async fn a_busy_leftover_of_another_name_does_not_rename_this_life() {
        let (_root, layout) = layout();
        let gh = Gh(Mutex::new(BTreeMap::from([(
            7,
            ("sysrunner-a-00ff".to_string(), true),
        )])));
        write_record(&layout, &record(7, "sysrunner-a-00ff"));
        assert_eq!(delete_leftover(&gh, &layout, "sysrunner-a").await, None);
        assert_eq!(
            read_left_busy(&layout).len(),
            1,
            "still tried by later lives"
        );
    }
}
