//! `sysrunner dockerd-check`: the dockerd part of `run` on its own. Assesses the container, launches
//! dockerd as `run` does, runs one command against it, stops dockerd and reports what it measured
//! and whether anything was left running. For operators checking a runtime, and for the live tests.
//! Owns only this report; the assessment is `assess`'s, dockerd's start and stop are `dockerd`'s.

use crate::config::ProbeSettings;
use crate::dockerd::{self, plan};
use crate::error::Error;
use crate::reaper::{self, Reaper};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Prints its report on stdout as it goes; the error names the cause the exit code comes from.
pub async fn run(settings: &ProbeSettings, command: &[String]) -> Result<(), Error> {
    let reaper = Reaper::start().map_err(|e| {
        eprintln!("sysrunner dockerd-check: cannot start the reaper: {e}");
        Error::Reaper(e)
    })?;
    let report = crate::assess::assess_reaped(Path::new("/"), &settings.docker, &reaper).await;
    println!(
        "runtime: {} ({})",
        report.runtime.as_str(),
        report.reasons.join("; ")
    );
    let plan = report.plan().inspect_err(|u| {
        if let Some(r) = u.remedy {
            println!("remedy: {r}");
        }
    })?;
    let spawner = std::sync::Arc::new(crate::process::Local {
        reaper: reaper.clone(),
    });
    let dockerd = dockerd::launch(
        plan,
        settings.docker.data,
        spawner,
        settings.docker.ready_timeout,
        dockerd::Beside {
            replan: None,
            sweep: Some(dockerd::leftovers::sweep(plan.iptables, reaper.clone())),
            registry: crate::registry::decide(&settings.docker, false)
                .map(|d| tokio::spawn(crate::registry::resolve(d))),
        },
    )
    .await
    .inspect_err(|e| println!("dockerd: {e}"))?;
    println!(
        "dockerd: ready in {:.2}s (storage {}, mtu {}, iptables {:?}, containerd started by {})",
        dockerd.ready_after.as_secs_f64(),
        plan.storage_driver,
        plan.mtu
            .map(|m| m.to_string())
            .unwrap_or_else(|| "1500".into()),
        plan.iptables,
        if dockerd.own_containerd() {
            "sysrunner"
        } else {
            "dockerd"
        }
    );
    if let Some(r) = &dockerd.registry {
        println!("registry: {}", r.human());
    }
    let code = run_command(command, &reaper).await;
    let stop = dockerd.stop(Duration::from_secs(10)).await;
    println!(
        "dockerd: stopped in {:.2}s ({}), {} orphans killed",
        stop.took.as_secs_f64(),
        stop.status,
        stop.orphans_killed
    );
    let left = reaper::orphan_children(&reaper).len();
    println!("processes left: {left}");
    match code {
        Some(0) if left == 0 => Ok(()),
        Some(0) => Err(Error::LeftRunning(left)),
        other => Err(Error::CheckCommand(other)),
    }
}

async fn run_command(command: &[String], reaper: &Reaper) -> Option<i32> {
    let started = Instant::now();
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .env("DOCKER_HOST", format!("unix://{}", plan::SOCKET))
        .stdin(Stdio::null());
    let child = match reaper.spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => {
            println!("command: cannot start {}: {e}", command[0]);
            return None;
        }
    };
    let status = child.exit.await.ok()?;
    println!(
        "command: {status} in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    status.code()
}
