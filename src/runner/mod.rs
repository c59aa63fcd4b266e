//! The actions/runner process: its environment, the markers in its output, the states they drive,
//! what each listener exit code means, and the release's version. Pure; starting the processes is
//! the lifecycle's. Knows nothing of GitHub's API or dockerd, and chooses no exit code.

pub mod env;
pub mod exits;
pub mod markers;
pub mod version;

pub use exits::{AfterExit, Failure, MAX_RESTARTS, after_exit};
pub use markers::{Marker, State};
