//! The `sysrunner-testkit` binary: a shim over the library. Everything, the exit code included, is
//! decided in `sysrunner_testkit::cli`.

fn main() -> std::process::ExitCode {
    sysrunner_testkit::cli::main()
}
