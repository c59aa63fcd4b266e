//! The GitHub REST client for runner registration and deregistration.
