//! What a life of the soak does, drawn from the seed and the life's number alone: life K of seed
//! S is the same whether the soak starts at 0 or at K (`--from K`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fmt;

/// Which boxes the soak may draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxChoice {
    Sysbox,
    Privileged,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SoakBox {
    Sysbox,
    Privileged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Jit,
    Config,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// `echo`, done at once.
    Short,
    /// A few seconds of `sleep`: long enough for a signal to find it busy.
    Long,
    /// A step that exits 3.
    Failing,
    /// `docker import` and `docker run` against the life's dockerd.
    Docker,
    /// Forks a daemon that outlives its step (the life must kill it).
    Daemon,
}

impl JobKind {
    pub fn steps(self) -> &'static [&'static str] {
        match self {
            JobKind::Short => &["echo soak-short"],
            JobKind::Long => &["sleep 6", "echo soak-long"],
            JobKind::Failing => &["echo soak-failing", "exit 3"],
            JobKind::Docker => &[
                "docker import ../busybox.tar soak/busybox >/dev/null && docker run --rm soak/busybox busybox echo soak-docker",
            ],
            JobKind::Daemon => {
                &["setsid sh -c 'sleep 600' </dev/null >/dev/null 2>&1 & echo soak-daemon"]
            }
        }
    }
}

/// The REST call an API fault is aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiTarget {
    /// `generate-jitconfig` (jit) or `registration-token` (config).
    Register,
    /// `DELETE …/actions/runners/{id}`: the deregistration.
    Delete,
    /// `GET …/actions/runners/downloads`, beside start-up.
    Downloads,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Term,
    Int,
}

/// When a timed fault strikes: so long after the life's start, or after the runner is first seen
/// online (listening), or after its job is first seen in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    Start(u64),
    Online(u64),
    Busy(u64),
}

impl fmt::Display for Moment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Moment::Start(ms) => write!(f, "start+{ms}ms"),
            Moment::Online(ms) => write!(f, "online+{ms}ms"),
            Moment::Busy(ms) => write!(f, "busy+{ms}ms"),
        }
    }
}

/// One fault of a life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `count` 5xx answers in a row.
    Burst5xx {
        target: ApiTarget,
        status: u16,
        count: u32,
    },
    /// 429 with `retry-after`.
    TooMany { target: ApiTarget, retry_after: u64 },
    /// 403 secondary rate limit with `retry-after`.
    Secondary { target: ApiTarget, retry_after: u64 },
    /// The connection held past API_TIMEOUT, then closed without an answer.
    Hang { target: ApiTarget },
    /// The operation done, its answer never sent.
    Drop { target: ApiTarget },
    /// The listener exits with this code after `Listening for Jobs` (once).
    ListenerExit { code: i32 },
    /// SIGTERM or SIGINT to sysrunner at that moment, and again `again_ms` later.
    Signal {
        sig: Sig,
        at: Moment,
        again_ms: Option<u64>,
    },
    /// dockerd SIGKILLed at that moment (when it runs then).
    KillDockerd { at: Moment },
    /// A runner of the life's name is registered before the life: offline (a leftover, deleted
    /// on the 409) or online (a live duplicate).
    Leftover { online: bool },
    /// Every process of the box SIGKILLed at that moment (a container's death), the box's volume
    /// kept for the next life.
    BoxKill { at: Moment },
}

impl Fault {
    /// The fault's kind, for the summary's counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Burst5xx { .. } => "5xx-burst",
            Fault::TooMany { .. } => "429",
            Fault::Secondary { .. } => "secondary-rate-limit",
            Fault::Hang { .. } => "hang",
            Fault::Drop { .. } => "dropped-answer",
            Fault::ListenerExit { code: 1 } => "listener-crash",
            Fault::ListenerExit { .. } => "listener-exit",
            Fault::Signal { again_ms: None, .. } => "signal-once",
            Fault::Signal { .. } => "signal-twice",
            Fault::KillDockerd { .. } => "dockerd-killed",
            Fault::Leftover { online: false } => "409-offline-leftover",
            Fault::Leftover { online: true } => "409-online-duplicate",
            Fault::BoxKill { .. } => "box-sigkill",
        }
    }

    pub fn target(&self) -> Option<ApiTarget> {
        match *self {
            Fault::Burst5xx { target, .. }
            | Fault::TooMany { target, .. }
            | Fault::Secondary { target, .. }
            | Fault::Hang { target }
            | Fault::Drop { target } => Some(target),
            _ => None,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Burst5xx {
                target,
                status,
                count,
            } => write!(f, "{count}x{status} on {target:?}"),
            Fault::TooMany {
                target,
                retry_after,
            } => write!(f, "429 (retry-after {retry_after}s) on {target:?}"),
            Fault::Secondary {
                target,
                retry_after,
            } => write!(f, "secondary limit ({retry_after}s) on {target:?}"),
            Fault::Hang { target } => write!(f, "hang on {target:?}"),
            Fault::Drop { target } => write!(f, "dropped answer on {target:?}"),
            Fault::ListenerExit { code } => write!(f, "listener exits {code}"),
            Fault::Signal { sig, at, again_ms } => match again_ms {
                None => write!(f, "SIG{sig:?} at {at}"),
                Some(a) => write!(f, "SIG{sig:?} at {at} and +{a}ms"),
            },
            Fault::KillDockerd { at } => write!(f, "dockerd killed at {at}"),
            Fault::Leftover { online } => write!(
                f,
                "{} runner of the name registered before",
                if *online { "an online" } else { "an offline" }
            ),
            Fault::BoxKill { at } => write!(f, "box SIGKILLed at {at}"),
        }
    }
}

/// One life, as drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifePlan {
    pub seed: u64,
    pub life: u64,
    pub boxed: SoakBox,
    pub registration: Registration,
    pub job: JobKind,
    pub faults: Vec<Fault>,
}

impl fmt::Display for LifePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults: Vec<String> = self.faults.iter().map(|x| x.to_string()).collect();
        write!(
            f,
            "life {} ({:?}, {:?}, job {:?}): {}",
            self.life,
            self.boxed,
            self.registration,
            self.job,
            if faults.is_empty() {
                "no fault".to_string()
            } else {
                faults.join(", ")
            }
        )
    }
}

/// The seed of one life's generator: the soak's seed mixed with the life's number.
pub fn life_seed(seed: u64, life: u64) -> u64 {
    seed ^ life.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A moment of the life: a life without faults takes about 1 s here (a long job 6 s more), so
/// moments are anchored to start-up, listening and the job as often as to the clock.
fn moment(rng: &mut StdRng) -> Moment {
    match rng.random_range(0..4) {
        0 => Moment::Start(rng.random_range(0..800)),
        1 => Moment::Online(rng.random_range(0..300)),
        2 => Moment::Busy(rng.random_range(0..1_500)),
        _ => Moment::Start(rng.random_range(800..8_000)),
    }
}

fn target(rng: &mut StdRng) -> ApiTarget {
    match rng.random_range(0..4) {
        0 | 1 => ApiTarget::Register,
        2 => ApiTarget::Delete,
        _ => ApiTarget::Downloads,
    }
}

/// Life `life` of the soak seeded with `seed`.
pub fn plan(seed: u64, life: u64, boxes: BoxChoice) -> LifePlan {
    let mut rng = StdRng::seed_from_u64(life_seed(seed, life));
    let drawn_box = if rng.random_bool(0.5) {
        SoakBox::Sysbox
    } else {
        SoakBox::Privileged
    };
    let boxed = match boxes {
        BoxChoice::Sysbox => SoakBox::Sysbox,
        BoxChoice::Privileged => SoakBox::Privileged,
        BoxChoice::Both => drawn_box,
    };
    let registration = if rng.random_bool(0.7) {
        Registration::Jit
    } else {
        Registration::Config
    };
    let job = match rng.random_range(0..5) {
        0 => JobKind::Short,
        1 => JobKind::Long,
        2 => JobKind::Failing,
        3 => JobKind::Docker,
        _ => JobKind::Daemon,
    };
    let n = rng.random_range(0..=3);
    let mut faults: Vec<Fault> = Vec::new();
    while faults.len() < n {
        let f = match rng.random_range(0..10) {
            0 => Fault::Burst5xx {
                target: target(&mut rng),
                status: [500, 502, 503][rng.random_range(0..3)],
                count: rng.random_range(1..=3),
            },
            1 => Fault::TooMany {
                target: target(&mut rng),
                retry_after: rng.random_range(1..=2),
            },
            2 => Fault::Secondary {
                target: target(&mut rng),
                retry_after: rng.random_range(1..=2),
            },
            3 => Fault::Hang {
                target: target(&mut rng),
            },
            4 => Fault::Drop {
                target: target(&mut rng),
            },
            5 => Fault::ListenerExit {
                code: [1, 2, 3, 5][rng.random_range(0..4)],
            },
            6 => Fault::Signal {
                sig: if rng.random_bool(0.5) {
                    Sig::Term
                } else {
                    Sig::Int
                },
                at: moment(&mut rng),
                again_ms: rng.random_bool(0.3).then(|| rng.random_range(100..2_000)),
            },
            7 => Fault::KillDockerd {
                at: moment(&mut rng),
            },
            8 => Fault::Leftover {
                // `config.sh --replace` takes any runner's name: a live duplicate only for jit.
                online: registration == Registration::Jit && rng.random_bool(0.5),
            },
            _ => Fault::BoxKill {
                at: moment(&mut rng),
            },
        };
        // One fault per kind and per API target: the fake's rules match in order, and the
        // listener and the clock each take one.
        let clash = faults.iter().any(|g| {
            std::mem::discriminant(g) == std::mem::discriminant(&f)
                || (g.target().is_some() && g.target() == f.target())
                || matches!(
                    (g, &f),
                    (Fault::ListenerExit { .. }, Fault::ListenerExit { .. })
                        | (Fault::Signal { .. }, Fault::Signal { .. })
                )
        });
        if !clash {
            faults.push(f);
        }
    }
    LifePlan {
        seed,
        life,
        boxed,
        registration,
        job,
        faults,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_life_is_the_same_drawn_alone() {
        for life in 0..50 {
            assert_eq!(
                plan(7, life, BoxChoice::Both),
                plan(7, life, BoxChoice::Both)
            );
        }
        assert_ne!(
            (0..20)
                .map(|l| plan(1, l, BoxChoice::Both))
                .collect::<Vec<_>>(),
            (0..20)
                .map(|l| plan(2, l, BoxChoice::Both))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_kind_is_drawn_and_no_life_has_more_than_three_faults() {
        let mut kinds = std::collections::BTreeSet::new();
        let mut boxes = std::collections::BTreeSet::new();
        for life in 0..400 {
            let p = plan(1, life, BoxChoice::Both);
            assert!(p.faults.len() <= 3, "{p}");
            boxes.insert(p.boxed);
            for f in &p.faults {
                kinds.insert(f.kind());
            }
            let targets: Vec<_> = p.faults.iter().filter_map(|f| f.target()).collect();
            let mut dedup = targets.clone();
            dedup.dedup();
            dedup.sort_by_key(|t| *t as u8);
            dedup.dedup();
            assert_eq!(targets.len(), dedup.len(), "{p}");
        }
        assert_eq!(boxes.len(), 2);
        assert_eq!(kinds.len(), 13, "{kinds:?}");
    }

    #[test]
    fn a_box_choice_fixes_the_box() {
        for life in 0..30 {
            assert_eq!(plan(3, life, BoxChoice::Sysbox).boxed, SoakBox::Sysbox);
            assert_eq!(
                plan(3, life, BoxChoice::Privileged).boxed,
                SoakBox::Privileged
            );
        }
    }
}
