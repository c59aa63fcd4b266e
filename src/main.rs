//! The `sysrunner` binary: a shim over the library. It decides nothing: `sysrunner::cli` dispatches,
//! and `sysrunner::exit` names the exit code.

fn main() -> std::process::ExitCode {
    sysrunner::cli::main()
}
