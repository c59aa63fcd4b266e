//! The runner's output, line by line, as the listener's forwarder reads it: every line parses
//! without a panic, and the states the markers drive never move a finished job back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysrunner::runner::markers::{self, State};

fuzz_target!(|text: &str| {
    let mut state = State::Starting;
    for line in text.lines() {
        if let Some(m) = markers::parse(line) {
            let next = state.clone().on(&m);
            if matches!(state, State::Done { .. }) {
                assert_eq!(next, state);
            }
            state = next;
        }
    }
});
