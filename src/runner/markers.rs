//! What the runner's output means: the markers actions/runner prints turned into events, and the
//! states they drive. Pure; written from the contract (docs/contracts.md: `Current runner version:
//! '2.336.0'`, `<time>: Listening for Jobs`, `<time>: Running job: <name>`, `<time>: Job <name>
//! completed with result: <result>`), and shares nothing with the fake runner, which prints these
//! lines from its own code.

/// A line of runner output that matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    Connected,
    Version(String),
    /// `<time>: Listening for Jobs`: registered and waiting.
    Listening,
    /// `<time>: Running job: <name>`.
    JobStarted(String),
    /// `<time>: Job <name> completed with result: Succeeded|Failed|Canceled`.
    JobCompleted {
        job: String,
        result: String,
    },
}

/// The marker a line of the listener's output is, if any. The job markers are read from the event
/// after the `<time>: ` prefix (or from the line's start), never from the middle of a line: a job's
/// name is the workflow author's text, and a name that holds a marker's words (`Listening for Jobs`,
/// `Running job: `, ` completed with result: `) must not become that marker.
pub fn parse(line: &str) -> Option<Marker> {
    let line = line.trim_end();
    let after_time = line.split_once(": ").map(|(_, event)| event);
    if let Some(m) = [Some(line), after_time]
        .into_iter()
        .flatten()
        .find_map(job_marker)
    {
        return Some(m);
    }
    if line.contains("Connected to GitHub") {
        return Some(Marker::Connected);
    }
    if let Some(i) = line.find("Current runner version: '") {
        let rest = &line[i + "Current runner version: '".len()..];
        return Some(Marker::Version(rest.trim_end_matches('\'').to_string()));
    }
    None
}

/// `Listening for Jobs`, `Running job: <name>` or `Job <name> completed with result: <result>`, as
/// the whole of `event`. The result is one word, so the last ` completed with result: ` ends the
/// name.
fn job_marker(event: &str) -> Option<Marker> {
    if event == "Listening for Jobs" {
        return Some(Marker::Listening);
    }
    if let Some(name) = event.strip_prefix("Running job:") {
        // The line was trimmed: a blank name lost the space after the colon.
        let name = name.strip_prefix(' ').unwrap_or(name);
        return Some(Marker::JobStarted(name.to_string()));
    }
    let (job, result) = event
        .strip_prefix("Job ")?
        .rsplit_once(" completed with result: ")?;
    Some(Marker::JobCompleted {
        job: job.to_string(),
        result: result.trim().to_string(),
    })
}

/// Where the runner is in its one life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Starting,
    Listening,
    Busy {
        job: String,
    },
    /// The job finished; the listener is about to exit.
    Done {
        job: String,
        result: String,
    },
    /// Self-updating (exit codes 3/4): starting again after `update.finished`.
    Updating,
}

impl State {
    /// The `phase` field of the log line that announces this state (the phases of a life are
    /// listed in README's log section).
    pub fn phase(&self) -> &'static str {
        match self {
            State::Starting => "runner-starting",
            State::Listening => "listening",
            State::Busy { .. } => "busy",
            State::Done { .. } => "job-done",
            State::Updating => "runner-updating",
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Listening => "listening",
            State::Busy { .. } => "busy",
            State::Done { .. } => "done",
            State::Updating => "updating",
        }
    }

    /// The state after a marker. Markers out of order (a second `Listening` after a job, say)
    /// never move a finished job back.
    pub fn on(self, m: &Marker) -> State {
        match (self, m) {
            (s @ State::Done { .. }, _) => s,
            (_, Marker::JobCompleted { job, result }) => State::Done {
                job: job.clone(),
                result: result.clone(),
            },
            (_, Marker::JobStarted(job)) => State::Busy { job: job.clone() },
            (s @ State::Busy { .. }, Marker::Listening) => s,
            (_, Marker::Listening) => State::Listening,
            (s, _) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_markers() {
        assert_eq!(parse("√ Connected to GitHub"), Some(Marker::Connected));
        assert_eq!(
            parse("Current runner version: '2.336.0'"),
            Some(Marker::Version("2.336.0".into()))
        );
        assert_eq!(
            parse("2026-11-27 21:00:01Z: Listening for Jobs"),
            Some(Marker::Listening)
        );
        assert_eq!(
            parse("2026-11-27 21:00:05Z: Running job: build (ubuntu)"),
            Some(Marker::JobStarted("build (ubuntu)".into()))
        );
        assert_eq!(
            parse("2026-11-27 21:03:05Z: Job build (ubuntu) completed with result: Failed"),
            Some(Marker::JobCompleted {
                job: "build (ubuntu)".into(),
                result: "Failed".into()
            })
        );
        assert_eq!(parse("√ Removed .runner"), None);
        assert_eq!(parse("some job output"), None);
    }

    /// Found by tests/parsers_fuzz.rs: a job named with a marker's words was read as that
    /// marker (`… Listening for Jobs` as listening, which lets SIGTERM stop a busy runner as if
    /// idle), and `Job <name> completed` cut a name holding `Job ` at its last one.
    #[test]
    fn a_job_named_with_marker_words_is_that_job() {
        let t = "2026-11-27 21:00:05Z";
        for name in [
            "Listening for Jobs",
            "wait: Listening for Jobs",
            "Job x completed with result: Failed",
            "Connected to GitHub",
            "Current runner version: '9'",
            "",
        ] {
            assert_eq!(
                parse(&format!("{t}: Running job: {name}")),
                Some(Marker::JobStarted(name.into())),
                "{name:?}"
            );
        }
        for name in [
            "Build Job 1",
            "Running job: x",
            "x completed with result: Failed",
            "Listening for Jobs",
        ] {
            assert_eq!(
                parse(&format!("{t}: Job {name} completed with result: Succeeded")),
                Some(Marker::JobCompleted {
                    job: name.into(),
                    result: "Succeeded".into()
                }),
                "{name:?}"
            );
        }
        assert_eq!(parse("some output: Listening for Jobs now"), None);
    }

    #[test]
    fn states_follow_the_markers() {
        let s = State::Starting.on(&Marker::Connected);
        assert_eq!(s, State::Starting);
        let s = s.on(&Marker::Listening);
        assert_eq!(s, State::Listening);
        let s = s.on(&Marker::JobStarted("j".into()));
        assert_eq!(s.as_str(), "busy");
        let s = s.on(&Marker::Listening);
        assert_eq!(s.as_str(), "busy", "a late Listening does not end a job");
        let s = s.on(&Marker::JobCompleted {
            job: "j".into(),
            result: "Succeeded".into(),
        });
        assert_eq!(
            s,
            State::Done {
                job: "j".into(),
                result: "Succeeded".into()
            }
        );
        assert_eq!(s.clone().on(&Marker::Listening), s, "done stays done");
    }
}
