//! `sysrunner prune`: finds runners this image left behind (offline, not busy, named with the
//! prefix, and offline in two listings `grace` apart, because a runner that registered a moment
//! ago is offline too) and deletes them when asked. The decision is pure; the listing and deleting
//! go through the client. Touches only runners named with the prefix.

use super::{Client, Deleted, Runner};
use std::collections::HashSet;

/// Candidates: in both listings, offline and idle in both, named `PREFIX-…`.
pub fn candidates(first: &[Runner], second: &[Runner], prefix: &str) -> Vec<Runner> {
    assert!(
        !prefix.is_empty(),
        "an empty prefix would match every runner"
    );
    let pre = format!("{prefix}-");
    let idle_offline = |r: &Runner| !r.online() && !r.busy && r.name.starts_with(&pre);
    let earlier: HashSet<u64> = first
        .iter()
        .filter(|r| idle_offline(r))
        .map(|r| r.id)
        .collect();
    second
        .iter()
        .filter(|r| idle_offline(r) && earlier.contains(&r.id))
        .cloned()
        .collect()
}

#[derive(Debug, Default)]
pub struct PruneOutcome {
    pub candidates: Vec<Runner>,
    pub deleted: Vec<u64>,
    /// Became busy between the listing and the delete.
    pub busy: Vec<u64>,
    pub gone: Vec<u64>,
}

/// Lists, waits (`grace`, given as a future so tests need not wait), lists again, and deletes the
/// candidates when `delete`.
pub async fn prune(
    client: &Client,
    prefix: &str,
    delete: bool,
    grace: impl std::future::Future<Output = ()>,
) -> Result<PruneOutcome, super::ApiError> {
    let first = client.list_runners(None).await?;
    grace.await;
    let second = client.list_runners(None).await?;
    let mut out = PruneOutcome {
        candidates: candidates(&first, &second, prefix),
        ..Default::default()
    };
    if delete {
        for r in &out.candidates {
            match client.delete_runner(r.id).await? {
                Deleted::Deleted => out.deleted.push(r.id),
                Deleted::Busy => out.busy.push(r.id),
                Deleted::NotFound => out.gone.push(r.id),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: u64, name: &str, status: &str, busy: bool) -> Runner {
        Runner {
            id,
            name: name.into(),
            status: status.into(),
            busy,
            labels: vec![],
        }
    }

    #[test]
    fn only_prefixed_idle_runners_offline_in_both_listings() {
        let first = vec![
            r(1, "sysrunner-a", "offline", false),  // stale: offline twice
            r(2, "sysrunner-b", "offline", false),  // came online meanwhile
            r(3, "sysrunner-c", "online", true),    // busy
            r(4, "other-d", "offline", false),      // foreign
            r(6, "sysrunnerx-f", "offline", false), // prefix without the dash
        ];
        let second = vec![
            r(1, "sysrunner-a", "offline", false),
            r(2, "sysrunner-b", "online", false),
            r(3, "sysrunner-c", "online", true),
            r(4, "other-d", "offline", false),
            r(5, "sysrunner-e", "offline", false), // just registered: only in the second listing
            r(6, "sysrunnerx-f", "offline", false),
        ];
        let c = candidates(&first, &second, "sysrunner");
        assert_eq!(c.iter().map(|r| r.id).collect::<Vec<_>>(), [1]);
    }

    #[test]
    #[should_panic(expected = "empty prefix")]
    fn an_empty_prefix_is_a_bug() {
        candidates(&[], &[], "");
    }
}
