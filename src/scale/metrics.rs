//! `sysrunner scale`'s `/metrics` (Prometheus, OpenMetrics text) and `/healthz`, on SCALE_LISTEN
//! only. Owns the metric handles the controller updates and the tiny HTTP server that shows them;
//! decides nothing about runners.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// The controller's numbers. Clones share the same values.
#[derive(Clone)]
pub struct Metrics {
    pub desired: Gauge,
    pub idle: Gauge,
    pub busy: Gauge,
    pub starting: Gauge,
    pub jobs_started: Counter,
    pub jobs_completed: Counter,
    pub start_failures: Counter,
    /// 1 while GitHub refuses the image's runner version (a runner exited 7).
    pub version_refused: Gauge,
    /// From JobAssigned to JobStarted, in seconds.
    pub job_start: Histogram,
    registry: Arc<Registry>,
    health: Arc<Mutex<Result<(), String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("sysrunner_scale");
        let desired = Gauge::default();
        let idle = Gauge::default();
        let busy = Gauge::default();
        let starting = Gauge::default();
        let jobs_started = Counter::default();
        let jobs_completed = Counter::default();
        let start_failures = Counter::default();
        let version_refused = Gauge::default();
        let job_start = Histogram::new([0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0]);
        r.register(
            "desired_runners",
            "Runners the scale set wants: the warm pool plus its assigned jobs, within the limits",
            desired.clone(),
        );
        r.register(
            "idle_runners",
            "Runners listening without a job",
            idle.clone(),
        );
        r.register("busy_runners", "Runners running a job", busy.clone());
        r.register(
            "starting_runners",
            "Runners whose JIT config or container is being made",
            starting.clone(),
        );
        r.register(
            "jobs_started",
            "Jobs a runner of this scale set started",
            jobs_started.clone(),
        );
        r.register(
            "jobs_completed",
            "Jobs a runner of this scale set completed",
            jobs_completed.clone(),
        );
        r.register(
            "container_start_failures",
            "Runner containers that could not be created or started",
            start_failures.clone(),
        );
        r.register(
            "version_refused",
            "1 while GitHub refuses the image's runner version (a runner exited 7): no runner is started until the image is updated",
            version_refused.clone(),
        );
        r.register(
            "job_start_seconds",
            "From a job assigned to the scale set to its runner busy",
            job_start.clone(),
        );
        Metrics {
            desired,
            idle,
            busy,
            starting,
            jobs_started,
            jobs_completed,
            start_failures,
            version_refused,
            job_start,
            registry: Arc::new(r),
            health: Arc::new(Mutex::new(Err("starting".into()))),
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String does not fail");
        s
    }

    /// What `/healthz` says: ok, or why not.
    pub fn set_health(&self, h: Result<(), String>) {
        *self.health.lock().expect("health lock") = h;
    }

    pub fn health(&self) -> Result<(), String> {
        self.health.lock().expect("health lock").clone()
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until the task is dropped. Binds before it returns,
/// so a taken port is an error at start.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Request, Response, StatusCode};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let metrics = metrics.clone();
                        async move {
                            let (status, ctype, body) = match req.uri().path() {
                                "/metrics" => (
                                    StatusCode::OK,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                    metrics.encode(),
                                ),
                                "/healthz" => match metrics.health() {
                                    Ok(()) => (StatusCode::OK, "text/plain", "ok\n".to_string()),
                                    Err(why) => (
                                        StatusCode::SERVICE_UNAVAILABLE,
                                        "text/plain",
                                        format!("unhealthy: {why}\n"),
                                    ),
                                },
                                _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
                            };
                            Response::builder()
                                .status(status)
                                .header("content-type", ctype)
                                .body(Full::new(Bytes::from(body)))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric_with_its_prefix() {
        let m = Metrics::new();
        m.desired.set(3);
        m.jobs_started.inc();
        m.job_start.observe(1.5);
        let text = m.encode();
        for line in [
            "sysrunner_scale_desired_runners 3",
            "sysrunner_scale_jobs_started_total 1",
            "sysrunner_scale_idle_runners 0",
            "sysrunner_scale_busy_runners 0",
            "sysrunner_scale_starting_runners 0",
            "sysrunner_scale_jobs_completed_total 0",
            "sysrunner_scale_container_start_failures_total 0",
            "sysrunner_scale_version_refused 0",
            "sysrunner_scale_job_start_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert_eq!(m.health(), Err("starting".into()));
        m.set_health(Ok(()));
        assert_eq!(m.health(), Ok(()));
    }
}
