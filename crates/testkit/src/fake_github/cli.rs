//! `sysrunner-testkit fake-github`: the fake as a program a person can run on a laptop. Parses its flags,
//! starts the server, prints where it listens, stops on Ctrl-C or SIGTERM.

use super::{ALL_GRANTS_PAT, APP_ID, FakeConfig, FakeGitHub, REPO_ONLY_PAT};
use crate::exit::Exit;
use clap::{Arg, ArgMatches, Command};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

pub fn command() -> Command {
    Command::new("fake-github")
        .about("Serve a fake GitHub API for self-hosted runners (REST, App, runner side, the runner scale set API's Actions service, control API) for tests and demos")
        .arg(
            Arg::new("listen")
                .long("listen")
                .value_name("ADDR")
                .help("IP:PORT to listen on; port 0 picks a free one [default: the config's, else 127.0.0.1:0]"),
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("A JSON FakeConfig (repos, orgs, enterprises, pats, app, ttls); absent fields take the test defaults"),
        )
        .arg(
            Arg::new("public-url")
                .long("public-url")
                .value_name("URL")
                .help("The URL clients reach it by, when not the listening address (e.g. http://github:8080 for a container listening on 0.0.0.0:8080)"),
        )
        .arg(
            Arg::new("base-path")
                .long("base-path")
                .value_name("PATH")
                .help("Also serve the REST API under this prefix, e.g. /api/v3 (GitHub Enterprise Server style)"),
        )
}

pub fn run(m: &ArgMatches) -> Exit {
    let default_config = m.get_one::<PathBuf>("config").is_none();
    let mut cfg = match m.get_one::<PathBuf>("config") {
        Some(path) => match FakeConfig::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("sysrunner-testkit fake-github: {e}");
                return Exit::Usage;
            }
        },
        None => FakeConfig::default(),
    };
    if let Some(listen) = m.get_one::<String>("listen") {
        match listen.parse::<SocketAddr>() {
            Ok(a) => cfg.listen = a,
            Err(_) => {
                eprintln!(
                    "sysrunner-testkit fake-github: --listen {listen:?}: expected IP:PORT, e.g. 127.0.0.1:8080"
                );
                return Exit::Usage;
            }
        }
    }
    if let Some(url) = m.get_one::<String>("public-url") {
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.path() == "/" => {
                cfg.public_url = url.clone()
            }
            _ => {
                eprintln!(
                    "sysrunner-testkit fake-github: --public-url {url:?}: expected http(s)://HOST[:PORT] without a path"
                );
                return Exit::Usage;
            }
        }
    }
    if let Some(bp) = m.get_one::<String>("base-path") {
        cfg.base_path = bp.clone();
    }
    if let Err(e) = cfg.check() {
        eprintln!("sysrunner-testkit fake-github: {e}");
        return Exit::Usage;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sysrunner-testkit fake-github: cannot start a runtime: {e}");
            return Exit::Internal;
        }
    };
    rt.block_on(async move {
        let fake = match FakeGitHub::start(cfg).await {
            Ok(f) => f,
            Err(e) => {
                eprintln!("sysrunner-testkit fake-github: {e}");
                return Exit::Failed;
            }
        };
        println!("listening on {}", fake.web_url());
        let _ = std::io::stdout().flush();
        eprintln!("REST API:    {}", fake.api_url());
        eprintln!(
            "Actions service (runner scale sets): {}/_actions/{{orgs/ORG|repos/OWNER/REPO|enterprises/ENT}}/, handed out by POST {}/actions/runner-registration",
            fake.web_url(),
            fake.api_url()
        );
        eprintln!(
            "control API: {}/_fake/control/ (see crates/testkit/src/fake_github/README.md)",
            fake.web_url()
        );
        if default_config {
            eprintln!("PATs:        {ALL_GRANTS_PAT} (all grants), {REPO_ONLY_PAT} (repo only)");
            eprintln!("App:         id {APP_ID}, key crates/testkit/tests/keys/app.pem");
        }
        wait_for_stop().await;
        fake.stop().await;
        Exit::Ok
    })
}

/// Ctrl-C or SIGTERM.
async fn wait_for_stop() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
