//! The fake actions/runner's `bin/Runner.Listener` (testkit): a thin shim over the library.

fn main() {
    std::process::exit(sysrunner::testkit::fake_runner::listener::main());
}
