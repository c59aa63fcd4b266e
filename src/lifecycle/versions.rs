//! The runner version check of a life: the newest release GitHub offers for the scope (fetched
//! beside start-up, never on its path) and the image's (the listener's `Current runner version`
//! line), compared once both are known. The comparison itself is `runner::version`'s.

use crate::runner::version::{RunnerVersions, Version};
use tokio::sync::watch;

/// What is known so far, shared by the fetch, the listener's output and the state publisher.
pub struct Tracker(watch::Sender<(Option<Version>, Option<Version>)>);

impl Default for Tracker {
    fn default() -> Self {
        Tracker(watch::channel((None, None)).0)
    }
}

impl Tracker {
    /// The image's runner said its version.
    pub fn image(&self, v: &str) {
        match Version::parse(v) {
            Some(v) => self.update(|p| p.0 = Some(v)),
            None => tracing::debug!("runner version {v:?} does not parse"),
        }
    }

    /// GitHub's newest release for this machine (`None`: it offers none for it).
    pub fn offered(&self, v: Option<Version>) {
        if v.is_none() {
            tracing::warn!(
                "GitHub offers no actions/runner release for linux-{}",
                crate::runner::version::runner_arch()
            );
        }
        self.update(|p| p.1 = v);
    }

    pub fn current(&self) -> RunnerVersions {
        let (i, o) = *self.0.borrow();
        RunnerVersions::new(i, o)
    }

    pub fn subscribe(&self) -> watch::Receiver<(Option<Version>, Option<Version>)> {
        self.0.subscribe()
    }

    /// Applies `f`; the first time both versions are known, says how they compare.
    fn update(&self, f: impl FnOnce(&mut (Option<Version>, Option<Version>))) {
        self.0.send_if_modified(|p| {
            let before = *p;
            f(p);
            let was = RunnerVersions::new(before.0, before.1);
            let now = RunnerVersions::new(p.0, p.1);
            if was.outdated.is_none() && now.outdated.is_some() {
                let (image, offered) = (
                    now.image.clone().unwrap_or_default(),
                    now.offered.clone().unwrap_or_default(),
                );
                match now.warning() {
                    Some(w) => tracing::warn!(image, offered, "{w}"),
                    None => tracing::info!(
                        image,
                        offered,
                        "the image's actions/runner {image} is current (GitHub offers {offered})"
                    ),
                }
            }
            before != *p
        });
    }
}
