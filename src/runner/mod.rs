//! The actions/runner process: spawning it as the runner user and reading its markers.
