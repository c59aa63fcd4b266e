//! Settings as the environment gives them: `NAME=value` lines (a `*_FILE`'s content after a line
//! `--- FILE`). Every loader reads them without a panic, and every problem says what is wrong and
//! how to fix it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::path::Path;
use sysrunner::config::{self, Inputs, Problems};

fuzz_target!(|text: &str| {
    let (vars, file) = text.split_once("\n--- FILE\n").unwrap_or((text, ""));
    let env: HashMap<String, OsString> = vars
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), OsString::from(v.replace("\\n", "\n"))))
        .collect();
    let flags = BTreeMap::new();
    let getenv = |k: &str| env.get(k).cloned();
    let read = |p: &Path| {
        if p.as_os_str().is_empty() {
            Err(io::Error::from(io::ErrorKind::NotFound))
        } else {
            Ok(file.to_string())
        }
    };
    let inputs = Inputs {
        flags: &flags,
        env: &getenv,
        read_file: &read,
        hostname: Some("3f2a9c1d7e0b".into()),
    };
    let check = |p: Problems| {
        for problem in &p.0 {
            assert!(!problem.what.trim().is_empty(), "{problem:?}");
            assert!(!problem.fix.trim().is_empty(), "{problem:?}");
        }
        let _ = p.to_string();
    };
    if let Err(p) = config::load_run(&inputs) {
        check(p);
    }
    if let Err(p) = config::load_probe(&inputs) {
        check(p);
    }
    if let Err(p) = config::load_api(&inputs) {
        check(p);
    }
    if let Err(p) = config::load_scale(&inputs) {
        check(p);
    }
});
