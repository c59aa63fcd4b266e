//! Test support that is also a product: the fakes that stand in for GitHub and actions/runner, and
//! the namespace boxes. Behind the `testkit` feature (on by default, off in the image).

pub mod fake_runner;
