//! The `sysrunner` binary: a shim over the library. All decisions, including the exit code, are made
//! in `sysrunner::cli`.

fn main() -> std::process::ExitCode {
    sysrunner::cli::main()
}
