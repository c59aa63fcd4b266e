//! Test doubles that run as real servers or processes on this machine. Owns nothing the product
//! uses at run time; built only with the `testkit` feature (default in source builds, not in the image).

pub mod fake_github;
