//! A short seeded soak (`sysrunner-testkit soak`, SOAK.md): lives of the whole `sysrunner run`
//! binary in both boxes against the fake GitHub, each with zero to three faults drawn from the
//! seed, each checked against what README's contract allows for them, plus the invariants (no
//! registration left once the next life or `prune` has ran, no process left in the box, no secret
//! in the log). A fixed seed, and one drawn from the clock (printed, replayable with
//! `sysrunner-testkit soak --seed S --from K`). Needs root and dockerd; skips (or fails in CI)
//! through `testkit::require`.

use std::path::PathBuf;
use std::time::Duration;
use sysrunner_testkit::{self as testkit, soak};

const EXE: &str = env!("CARGO_BIN_EXE_sysrunner");
/// Lives per seed: about 3 s each on a 2-core machine.
const LIVES: u64 = 16;
/// The soak's share of CI: at most 3 minutes per seed (the scale soak has its own 3), then the
/// lives so far are checked.
const BUDGET: Duration = Duration::from_secs(3 * 60);

fn soak_seed(seed: u64) {
    let Some(_serial) =
        testkit::require("soak", &testkit::gate::BOX_WITH_DOCKERD).then(testkit::serial)
    else {
        return;
    };
    eprintln!("soak seed {seed} (replay: sysrunner-testkit soak --seed {seed} --lives {LIVES})");
    let report = soak::run(&soak::Options {
        seed,
        lives: LIVES,
        from: 0,
        boxes: soak::BoxChoice::Both,
        sysrunner: PathBuf::from(EXE),
        progress: false,
        budget: Some(BUDGET),
    })
    .unwrap_or_else(|e| panic!("soak seed {seed}: {e}"));
    eprint!("{}", report.summary());
    assert!(!report.failed(), "{}", report.summary());
    assert!(!report.lives.is_empty());
}

#[test]
fn a_short_soak_with_a_fixed_seed_keeps_every_invariant() {
    soak_seed(1);
}

/// A seed of its own each run, printed with any failure for `--seed S --from K` to replay.
#[test]
fn a_short_soak_with_a_seed_drawn_from_the_clock_keeps_every_invariant() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(2);
    soak_seed(seed);
}
