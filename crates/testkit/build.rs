//! The kit's build id: a hash of everything the `sysrunner-testkit` binary is built from here (its
//! sources, its manifest, the workspace's lock file), as `SYSRUNNER_TESTKIT_BUILD_ID`. The library
//! and the binary built from the same tree carry the same id, so a test can refuse a binary left
//! by an earlier build (see `binaries` in src/lib.rs). Content, not modification times: a fresh
//! checkout of the same commit gets the same id.

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// 64-bit FNV-1a: stable across Rust releases (std's hasher is not promised to be), and enough
/// to tell two source trees apart.
fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
}

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let named = [
        root.join("Cargo.toml"),
        root.join("build.rs"),
        root.join("../../Cargo.lock"),
        // A directory makes cargo look at every file below it, new ones included.
        root.join("src"),
    ];
    for p in &named {
        println!("cargo::rerun-if-changed={}", p.display());
    }
    let mut inputs = named[..3].to_vec();
    files(&root.join("src"), &mut inputs);
    inputs.sort();
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for p in &inputs {
        let rel = p.strip_prefix(&root).unwrap_or(p);
        fnv1a(&mut hash, rel.to_string_lossy().as_bytes());
        fnv1a(&mut hash, &std::fs::read(p).unwrap_or_default());
    }
    println!("cargo::rustc-env=SYSRUNNER_TESTKIT_BUILD_ID={hash:016x}");
}
