//! A scale set's message session: opened once (an earlier run's session, whose id was kept on
//! disk, deleted first; a 409 waited out within bounds), its queue polled, messages deleted, jobs
//! acquired, each of those refreshing the session once and trying once more when the queue token
//! has expired (a 401), as GitHub's client does; closed at the end. Owns the session and the file
//! that remembers its id; decides nothing about runners.

use super::client::{ActionsClient, QueueAnswer, ScalesetError};
use super::types::{QueueMessage, SessionAnswer, Statistics};
use crate::github::Time;
use crate::secret::Secret;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How a 409 on create (another session is live) is waited out, as actions-runner-controller's
/// listener did before it gave up: every 30 s, ten times.
#[derive(Debug, Clone, Copy)]
pub struct ConflictPolicy {
    pub every: Duration,
    pub attempts: u32,
}

impl Default for ConflictPolicy {
    fn default() -> Self {
        ConflictPolicy {
            every: Duration::from_secs(30),
            attempts: 10,
        }
    }
}

/// The session as the service last described it.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub owner: String,
    pub queue_url: String,
    pub queue_token: Secret,
    pub statistics: Statistics,
}

impl Session {
    fn from_answer(a: SessionAnswer, what: &str) -> Result<Session, ScalesetError> {
        let id =
            a.session_id
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ScalesetError::Unexpected {
                    what: what.into(),
                    detail: "a session without an id".into(),
                })?;
        if a.message_queue_url.is_empty() {
            return Err(ScalesetError::Unexpected {
                what: what.into(),
                detail: "a session without a message queue URL".into(),
            });
        }
        Ok(Session {
            id,
            owner: a.owner_name,
            queue_url: a.message_queue_url,
            queue_token: Secret::new(a.message_queue_access_token),
            statistics: a.statistics.ok_or_else(|| ScalesetError::Unexpected {
                what: what.into(),
                detail: "a session without statistics".into(),
            })?,
        })
    }
}

pub struct MessageSession {
    client: Arc<ActionsClient>,
    scale_set: u64,
    session: Session,
    /// Where the session's id is kept while it is open.
    store: Option<PathBuf>,
}

impl MessageSession {
    /// Opens the scale set's session. A session id kept in `store` by an earlier run is deleted
    /// first (gone or expired counts as done); then a 409 is tried again as `conflict` says, and
    /// ends in [`ScalesetError::SessionConflict`]. The new id is written to `store`.
    pub async fn open(
        client: Arc<ActionsClient>,
        scale_set: u64,
        owner: &str,
        store: Option<PathBuf>,
        conflict: ConflictPolicy,
        time: &dyn Time,
    ) -> Result<MessageSession, ScalesetError> {
        if let Some(path) = &store
            && let Ok(old) = std::fs::read_to_string(path)
        {
            let old = old.trim();
            if !old.is_empty() {
                let gone = client.delete_session(scale_set, old).await?;
                tracing::info!(
                    scale_set,
                    "deleted the message session {old} an earlier run left{}",
                    if gone {
                        ""
                    } else {
                        " (it had gone or expired already)"
                    }
                );
            }
            let _ = std::fs::remove_file(path);
        }
        let started = time.now();
        let mut attempt = 1;
        let answer = loop {
            match client.create_session(scale_set, owner).await {
                Ok(a) => break a,
                Err(e) if e.status() == Some(409) && attempt < conflict.attempts => {
                    tracing::warn!(
                        scale_set,
                        attempt,
                        "scale set {scale_set} already has an active message session: trying again in {:?}",
                        conflict.every
                    );
                    time.sleep(conflict.every).await;
                    attempt += 1;
                }
                Err(e) if e.status() == Some(409) => {
                    return Err(ScalesetError::SessionConflict {
                        scale_set,
                        attempts: attempt,
                        waited: time.now().duration_since(started).unwrap_or_default(),
                    });
                }
                Err(e) => return Err(e),
            }
        };
        let session = Session::from_answer(answer, "create a message session")?;
        if let Some(path) = &store {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = std::fs::write(path, &session.id) {
                tracing::warn!(
                    "cannot keep the session id in {}: {e}; a restart will wait for it to expire",
                    path.display()
                );
            }
        }
        tracing::info!(scale_set, session = %session.id, "message session open");
        Ok(MessageSession {
            client,
            scale_set,
            session,
            store,
        })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Refreshes the session: the service's answer replaces it whole (a new queue token).
    pub async fn refresh(&mut self) -> Result<(), ScalesetError> {
        let a = self
            .client
            .refresh_session(self.scale_set, &self.session.id)
            .await?;
        self.session = Session::from_answer(a, "refresh the message session")?;
        tracing::debug!(scale_set = self.scale_set, "message session refreshed");
        Ok(())
    }

    /// One long poll: the next message after `last_message_id`, or `None`.
    pub async fn get_message(
        &mut self,
        last_message_id: i64,
        max_capacity: u32,
    ) -> Result<Option<QueueMessage>, ScalesetError> {
        for refreshed in [false, true] {
            let s = &self.session;
            match self
                .client
                .get_message(&s.queue_url, &s.queue_token, last_message_id, max_capacity)
                .await?
            {
                QueueAnswer::Ok(m) => {
                    if let Some(stats) = m.as_ref().and_then(|m| m.statistics.clone()) {
                        self.session.statistics = stats;
                    }
                    return Ok(m);
                }
                QueueAnswer::TokenExpired if !refreshed => self.refresh().await?,
                QueueAnswer::TokenExpired => break,
            }
        }
        Err(expired("poll the message queue"))
    }

    pub async fn delete_message(&mut self, message_id: i64) -> Result<(), ScalesetError> {
        for refreshed in [false, true] {
            let s = &self.session;
            match self
                .client
                .delete_message(&s.queue_url, &s.queue_token, message_id)
                .await?
            {
                QueueAnswer::Ok(()) => return Ok(()),
                QueueAnswer::TokenExpired if !refreshed => self.refresh().await?,
                QueueAnswer::TokenExpired => break,
            }
        }
        Err(expired("delete a message"))
    }

    /// Acquires the jobs with these `runnerRequestId`s: those acquired.
    pub async fn acquire_jobs(&mut self, request_ids: &[i64]) -> Result<Vec<i64>, ScalesetError> {
        for refreshed in [false, true] {
            match self
                .client
                .acquire_jobs(self.scale_set, &self.session.queue_token, request_ids)
                .await?
            {
                QueueAnswer::Ok(ids) => return Ok(ids),
                QueueAnswer::TokenExpired if !refreshed => self.refresh().await?,
                QueueAnswer::TokenExpired => break,
            }
        }
        Err(expired("acquire jobs"))
    }

    /// Deletes the session and forgets its id.
    pub async fn close(self) -> Result<(), ScalesetError> {
        self.client
            .delete_session(self.scale_set, &self.session.id)
            .await?;
        if let Some(path) = &self.store {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!(scale_set = self.scale_set, "message session closed");
        Ok(())
    }
}

fn expired(what: &str) -> ScalesetError {
    ScalesetError::Refused {
        what: what.into(),
        status: 401,
        type_name: "MessageQueueTokenExpired".into(),
        message: "the queue token was refused again right after the session was refreshed".into(),
    }
}
