//! When to retry a GitHub request, and how long to wait: GitHub's rules (retry-after, rate-limit
//! reset, secondary limits), exponential back-off with jitter for server errors and transport
//! failures, all within one operation's deadline. Pure: the clock, the sleeper and the jitter are
//! given, so a test runs a whole schedule in milliseconds.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The clock and the sleeper the client uses. Production: the system clock and tokio's sleep.
pub trait Time: Send + Sync {
    fn now(&self) -> SystemTime;
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// A factor in [0.5, 1.0] that spreads retries of many runners apart.
    fn jitter(&self) -> f64;
}

pub struct RealTime;

impl Time for RealTime {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(d))
    }
    fn jitter(&self) -> f64 {
        0.5 + rand::random::<f64>() * 0.5
    }
}

/// The rate-limit headers of one answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub retry_after: Option<u64>,
    pub remaining: Option<u64>,
    /// Epoch seconds.
    pub reset: Option<u64>,
}

/// What came back from one attempt, reduced to what the decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Status {
        status: u16,
        rate: RateHeaders,
        message: String,
    },
    /// No answer: connection refused or reset, DNS, TLS, or the request timed out.
    Transport { timed_out: bool, detail: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Hand the answer to the caller (success, or an error it must interpret: 401, 403, 404, 409, 422).
    Answer,
    Retry {
        after: Duration,
        reason: String,
    },
}

/// Back-off for server errors and transport failures: 1 s, 2 s, 4 s, … capped at 30 s, times jitter.
pub fn backoff(retry: u32, jitter: f64) -> Duration {
    let base = Duration::from_secs(1u64 << retry.min(5)).min(Duration::from_secs(30));
    base.mul_f64(jitter.clamp(0.5, 1.0))
}

/// GitHub's secondary rate limits come without useful headers: wait at least this long.
pub const SECONDARY_LIMIT_WAIT: Duration = Duration::from_secs(60);

fn is_secondary(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("secondary rate limit") || m.contains("abuse")
}

/// Decides one attempt. `retry` counts the retries already made (0 for the first attempt's answer).
pub fn decide(attempt: &Attempt, retry: u32, now: SystemTime, jitter: f64) -> Decision {
    match attempt {
        Attempt::Transport { timed_out, detail } => Decision::Retry {
            after: backoff(retry, jitter),
            reason: if *timed_out {
                format!("timed out ({detail})")
            } else {
                format!("no answer ({detail})")
            },
        },
        Attempt::Status {
            status,
            rate,
            message,
        } => {
            let limited = *status == 429
                || (*status == 403
                    && (rate.retry_after.is_some()
                        || rate.remaining == Some(0)
                        || is_secondary(message)));
            if limited {
                let after = if let Some(s) = rate.retry_after {
                    Duration::from_secs(s)
                } else if rate.remaining == Some(0)
                    && let Some(reset) = rate.reset
                {
                    let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                    // One second more: the reset second itself may still count against us.
                    Duration::from_secs(reset.saturating_sub(now_s) + 1)
                } else {
                    SECONDARY_LIMIT_WAIT.max(backoff(retry, jitter))
                };
                let kind = if rate.remaining == Some(0) && rate.retry_after.is_none() {
                    "rate limit exhausted"
                } else if is_secondary(message) || rate.retry_after.is_some() && *status == 403 {
                    "secondary rate limit"
                } else {
                    "rate limited"
                };
                return Decision::Retry {
                    after,
                    reason: format!("{status} {kind}"),
                };
            }
            if *status >= 500 {
                return Decision::Retry {
                    after: backoff(retry, jitter),
                    reason: format!("{status} server error"),
                };
            }
            Decision::Answer
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(epoch)
    }
    fn status(status: u16, rate: RateHeaders, message: &str) -> Attempt {
        Attempt::Status {
            status,
            rate,
            message: message.into(),
        }
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_jitter_only_shortens() {
        let secs: Vec<u64> = (0..8).map(|r| backoff(r, 1.0).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(2, 0.5), Duration::from_secs(2));
        assert_eq!(
            backoff(2, 0.0),
            Duration::from_secs(2),
            "jitter is clamped to at least half"
        );
    }

    #[test]
    fn success_and_caller_errors_are_answers() {
        for s in [200, 201, 204, 401, 403, 404, 409, 422] {
            assert_eq!(
                decide(&status(s, RateHeaders::default(), "x"), 0, at(0), 1.0),
                Decision::Answer,
                "{s}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured() {
        let d = decide(
            &status(
                429,
                RateHeaders {
                    retry_after: Some(7),
                    ..Default::default()
                },
                "",
            ),
            0,
            at(0),
            1.0,
        );
        assert_eq!(
            d,
            Decision::Retry {
                after: Duration::from_secs(7),
                reason: "429 rate limited".into()
            }
        );
        let d = decide(
            &status(
                403,
                RateHeaders {
                    retry_after: Some(3),
                    ..Default::default()
                },
                "You have exceeded a secondary rate limit",
            ),
            0,
            at(0),
            1.0,
        );
        assert!(
            matches!(d, Decision::Retry { after, ref reason } if after == Duration::from_secs(3) && reason.contains("secondary"))
        );
    }

    #[test]
    fn exhausted_primary_limit_waits_until_reset() {
        let rate = RateHeaders {
            remaining: Some(0),
            reset: Some(1_000_100),
            ..Default::default()
        };
        let d = decide(
            &status(403, rate, "API rate limit exceeded"),
            0,
            at(1_000_000),
            1.0,
        );
        assert_eq!(
            d,
            Decision::Retry {
                after: Duration::from_secs(101),
                reason: "403 rate limit exhausted".into()
            }
        );
    }

    #[test]
    fn secondary_limit_without_headers_waits_at_least_a_minute() {
        let d = decide(
            &status(
                403,
                RateHeaders::default(),
                "You have exceeded a secondary rate limit.",
            ),
            0,
            at(0),
            1.0,
        );
        assert!(matches!(d, Decision::Retry { after, .. } if after == SECONDARY_LIMIT_WAIT));
        let d = decide(&status(429, RateHeaders::default(), ""), 0, at(0), 1.0);
        assert!(matches!(d, Decision::Retry { after, .. } if after >= SECONDARY_LIMIT_WAIT));
    }

    #[test]
    fn a_plain_403_is_not_a_rate_limit() {
        let d = decide(
            &status(
                403,
                RateHeaders {
                    remaining: Some(4999),
                    ..Default::default()
                },
                "Resource not accessible by personal access token",
            ),
            0,
            at(0),
            1.0,
        );
        assert_eq!(d, Decision::Answer);
    }

    #[test]
    fn server_errors_and_transport_failures_back_off() {
        assert_eq!(
            decide(&status(502, RateHeaders::default(), ""), 3, at(0), 1.0),
            Decision::Retry {
                after: Duration::from_secs(8),
                reason: "502 server error".into()
            }
        );
        let d = decide(
            &Attempt::Transport {
                timed_out: true,
                detail: "10s".into(),
            },
            0,
            at(0),
            1.0,
        );
        assert!(
            matches!(d, Decision::Retry { after, ref reason } if after == Duration::from_secs(1) && reason.starts_with("timed out"))
        );
    }
}
