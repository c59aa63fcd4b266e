//! The fake actions/runner's `bin/Runner.Listener` (`fake-runner install` copies it there): a shim
//! over `sysrunner_testkit::fake_runner::listener`.

fn main() {
    std::process::exit(sysrunner_testkit::fake_runner::listener::main());
}
