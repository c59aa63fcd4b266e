//! The actions/runner process: its environment, the markers in its output, the states they drive,
//! and what each listener exit code means. Knows nothing of GitHub's API or dockerd.

pub mod env;
pub mod exits;
pub mod markers;
pub mod version;

pub use exits::{AfterExit, Failure, MAX_RESTARTS, after_exit};
pub use markers::{Marker, State};
