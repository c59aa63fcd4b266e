//! The command line: builds clap's command from the settings table, collects raw strings, hands them
//! to `config`, dispatches to the library, and hands every outcome to [`Exit`], whose one mapping
//! names the code. clap only collects; it validates nothing a setting means, and no command here
//! picks an exit code of its own.

use crate::config::{self, Group, Inputs, SETTINGS};
use crate::error::Error;
use crate::exit::Exit;
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::ExitCode;

const ABOUT: &str =
    "Ephemeral self-hosted GitHub Actions runners with Docker inside, without --privileged";

/// Which settings each subcommand reads.
fn groups_of(subcommand: &str) -> &'static [Group] {
    match subcommand {
        "run" => &[
            Group::Scope,
            Group::Credentials,
            Group::GitHub,
            Group::Runner,
            Group::Docker,
            Group::Time,
            Group::Logs,
        ],
        "probe" => &[Group::Runner, Group::Docker, Group::Time, Group::Logs],
        "dockerd-check" => &[Group::Docker, Group::Time, Group::Logs],
        "prune" => config::API_GROUPS,
        _ => &[],
    }
}

/// The settings one subcommand reads.
fn settings_of(subcommand: &str) -> impl Iterator<Item = &'static config::Setting> + '_ {
    let groups = groups_of(subcommand);
    SETTINGS.iter().filter(move |s| {
        if subcommand == "prune" && s.group == Group::Runner {
            return s.name == config::defs::name::RUNNER_NAME_PREFIX;
        }
        if subcommand == "probe" {
            return config::probe_reads(s);
        }
        if subcommand == "scale" {
            return config::scale_reads(s);
        }
        groups.contains(&s.group)
    })
}

/// The settings' flags for one subcommand, generated from the table.
fn setting_args(subcommand: &str) -> Vec<Arg> {
    settings_of(subcommand)
        .filter_map(|s| {
            let flag = s.flag()?;
            let default = match s.default {
                config::defs::DefaultValue::None => String::new(),
                config::defs::DefaultValue::Value(v) => format!(" [default: {v}]"),
                config::defs::DefaultValue::Derived(how) => format!(" [default: {how}]"),
            };
            let mut arg = Arg::new(s.name)
                .long(flag)
                .value_name(s.name)
                .help(format!("{} [env: {}]{default}", s.doc, s.name))
                .help_heading(s.group.heading())
                .num_args(1);
            if s.kind == config::Kind::Bool {
                arg = arg.num_args(0..=1).default_missing_value("true");
            }
            Some(arg)
        })
        .collect()
}

fn env_only_note(subcommand: &str) -> String {
    let names: Vec<&str> = settings_of(subcommand)
        .filter(|s| s.flag().is_none())
        .map(|s| s.name)
        .collect();
    if names.is_empty() {
        return String::new();
    }
    format!(
        "Secrets are read only from the environment or a file, never from a flag (argv is readable by every process): {}.\n\n",
        names.join(", ")
    )
}

pub fn command() -> Command {
    let after = Exit::help_table();
    Command::new("sysrunner")
        .version(env!("CARGO_PKG_VERSION"))
        .about(ABOUT)
        .after_help(after.clone())
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("run")
                .about("The container entrypoint: probe, start dockerd, register, run one job, deregister, exit")
                .args(setting_args("run"))
                .after_help(format!("{}{after}", env_only_note("run"))),
        )
        .subcommand(
            Command::new("probe")
                .about("Report the container runtime and the dockerd plan for it (exit 0 if dockerd can run here, 78 if not)")
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("One JSON object on stdout"))
                .arg(
                    Arg::new("root")
                        .long("root")
                        .value_name("DIR")
                        .value_parser(clap::value_parser!(std::path::PathBuf))
                        .help("Read every fact from a captured tree instead of / (skips live checks)"),
                )
                .arg(
                    Arg::new("capture")
                        .long("capture")
                        .value_name("DIR")
                        .value_parser(clap::value_parser!(std::path::PathBuf))
                        .help("Also copy the files the probe reads into DIR, for a bug report or `--root`"),
                )
                .args(setting_args("probe"))
                .after_help(after.clone()),
        )
        .subcommand(
            Command::new("healthcheck")
                .about("For HEALTHCHECK: exit 0 when dockerd answers and the runner is listening or busy (starting counts for DOCKERD_READY_TIMEOUT + 60s), 1 otherwise")
                .after_help(after.clone()),
        )
        .subcommand(
            Command::new("prune")
                .about("Find runners this image left offline at GitHub, and delete them with --yes")
                .arg(Arg::new("yes").long("yes").action(ArgAction::SetTrue).help("Delete the runners found (without it: only list them)"))
                .arg(
                    Arg::new("grace")
                        .long("grace")
                        .value_name("DURATION")
                        .default_value("60s")
                        .help("A runner must be offline in two listings this far apart (one that registered a moment ago is offline too)"),
                )
                .args(setting_args("prune"))
                .after_help(format!("{}{}", env_only_note("prune"), Exit::help_table())),
        )
        .subcommand(
            Command::new("scale")
                .about("The controller: one fresh runner container per job on this Docker host, through GitHub's runner scale set API; the only holder of the credentials")
                .arg(
                    Arg::new("delete-scale-set")
                        .long("delete-scale-set")
                        .action(ArgAction::SetTrue)
                        .help("On SIGTERM, after the drain, delete the scale set at GitHub too (default: keep it for the next start)"),
                )
                .args(setting_args("scale"))
                .after_help(format!("{}{}", env_only_note("scale"), Exit::help_table())),
        )
        .subcommand(
            Command::new("dockerd-check")
                .about("Start dockerd exactly as `run` would, run a command against it, stop it: check a runtime before registering")
                .arg(
                    Arg::new("command")
                        .num_args(1..)
                        .trailing_var_arg(true)
                        .value_name("COMMAND")
                        .help("Run with DOCKER_HOST set to the inner socket [default: docker info]"),
                )
                .args(setting_args("dockerd-check"))
                .after_help(after),
        )
}

/// The flags given for settings, by setting name.
fn given_flags(m: &ArgMatches, subcommand: &str) -> BTreeMap<String, String> {
    settings_of(subcommand)
        .filter(|s| s.flag().is_some())
        .filter_map(|s| {
            m.get_one::<String>(s.name)
                .map(|v| (s.name.to_string(), v.clone()))
        })
        .collect()
}

fn real_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

fn real_read(path: &std::path::Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

fn inputs<'a>(flags: &'a BTreeMap<String, String>) -> Inputs<'a> {
    Inputs {
        flags,
        env: &real_env,
        read_file: &real_read,
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok()),
    }
}

pub fn main() -> ExitCode {
    // The life sandbox's init (`sandbox::init`): not a command for people, so not in `--help`;
    // it reads no setting and logs nothing, and its exit code is the life's, not an [`Exit`].
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "life-init") {
        let code = match args.next() {
            Some(a) if a == "--pid1" => crate::sandbox::init::pid1_main(),
            _ => crate::sandbox::init::setup_main(),
        };
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    run_with_args(std::env::args_os()).into()
}

pub fn run_with_args(args: impl IntoIterator<Item = OsString>) -> Exit {
    let matches = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Exit::Ok,
                _ => Exit::from(&Error::CommandLine(e)),
            };
        }
    };
    match matches.subcommand() {
        Some(("run", m)) => {
            let flags = given_flags(m, "run");
            if let Err(e) = crate::secret::reexec_without_env_secrets() {
                eprintln!(
                    "sysrunner: cannot re-execute without the secrets in the environment ({e}); continuing, but /proc/1/environ keeps them"
                );
            }
            let handed = crate::secret::take_handed_off();
            let env = |name: &str| {
                handed
                    .get(name)
                    .map(OsString::from)
                    .or_else(|| std::env::var_os(name))
            };
            let mut inputs = inputs(&flags);
            inputs.env = &env;
            match config::load_run(&inputs) {
                Err(problems) => Exit::from(&usage(problems)),
                Ok(settings) => {
                    crate::logging::init(&settings.log);
                    for w in &settings.warnings {
                        tracing::warn!("{w}");
                    }
                    let outcome = block_on(async {
                        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                        forward_signals(tx);
                        crate::lifecycle::run(settings, rx).await
                    });
                    Exit::of(&outcome)
                }
            }
        }
        Some(("probe", m)) => {
            let flags = given_flags(m, "probe");
            Exit::of(
                &config::load_probe(&inputs(&flags))
                    .map_err(usage)
                    .and_then(|settings| {
                        crate::logging::init(&settings.log);
                        probe_command(m, &settings)
                    }),
            )
        }
        Some(("dockerd-check", m)) => {
            let flags = given_flags(m, "dockerd-check");
            Exit::of(
                &config::load_probe(&inputs(&flags))
                    .map_err(usage)
                    .and_then(|settings| {
                        crate::logging::init(&settings.log);
                        let command: Vec<String> = m
                            .get_many::<String>("command")
                            .map(|v| v.cloned().collect())
                            .unwrap_or_else(|| vec!["docker".into(), "info".into()]);
                        block_on(crate::dockerd_check::run(&settings, &command))
                    }),
            )
        }
        Some(("scale", m)) => {
            let flags = given_flags(m, "scale");
            let delete = m.get_flag("delete-scale-set");
            match config::load_scale(&inputs(&flags)) {
                Err(problems) => Exit::from(&usage(problems)),
                Ok(settings) => {
                    crate::logging::init(&settings.log);
                    for w in &settings.warnings {
                        tracing::warn!("{w}");
                    }
                    let outcome = block_on(async {
                        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                        forward_signals(tx);
                        crate::scale::controller::run(settings, delete, rx).await
                    });
                    if let Err(e) = &outcome {
                        tracing::error!("{e}");
                    }
                    Exit::of(&outcome)
                }
            }
        }
        Some(("healthcheck", _)) => {
            let verdict = block_on(crate::lifecycle::health::healthcheck(std::path::Path::new(
                "/run/sysrunner",
            )));
            // Docker keeps this output in the container's health log (`docker inspect`).
            let registry = published()
                .and_then(|p| p.registry)
                .map(|r| format!("; registry: {}", r.human()))
                .unwrap_or_default();
            match &verdict {
                Ok(()) => println!("healthy{registry}"),
                Err(why) => println!("unhealthy: {why}{registry}"),
            }
            Exit::of(&verdict.map_err(Error::Unhealthy))
        }
        Some(("prune", m)) => {
            let flags = given_flags(m, "prune");
            let grace = m
                .get_one::<String>("grace")
                .map(String::as_str)
                .unwrap_or("60s");
            let grace = match config::parse_duration(grace) {
                Ok(d) => d,
                Err(source) => {
                    let e = Error::Flag {
                        flag: "grace",
                        value: grace.into(),
                        source,
                    };
                    eprintln!("error: {e}");
                    return Exit::from(&e);
                }
            };
            Exit::of(
                &config::load_api(&inputs(&flags))
                    .map_err(usage)
                    .and_then(|settings| {
                        crate::logging::init(&settings.log);
                        block_on(prune_command(&settings, grace, m.get_flag("yes")))
                    }),
            )
        }
        _ => unreachable!("clap requires a known subcommand"),
    }
}

async fn prune_command(
    settings: &config::ApiSettings,
    grace: std::time::Duration,
    yes: bool,
) -> Result<(), Error> {
    use crate::github::{Client, ClientOptions, RealTime, prune};
    let client = match Client::new(
        &settings.github.api,
        settings.scope.clone(),
        settings.auth.clone(),
        ClientOptions {
            request_timeout: settings.timeouts.api,
            deadline: settings.timeouts.api_deadline,
            time: std::sync::Arc::new(RealTime),
        },
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sysrunner prune: {e}");
            return Err(e.into());
        }
    };
    eprintln!(
        "listing runners of {} named {}-…, then again in {}s",
        settings.scope,
        settings.name_prefix,
        grace.as_secs()
    );
    match prune::prune(
        &client,
        &settings.name_prefix,
        yes,
        tokio::time::sleep(grace),
    )
    .await
    {
        Err(e) => {
            eprintln!("sysrunner prune: {e}");
            Err(e.into())
        }
        Ok(out) => {
            if out.candidates.is_empty() {
                println!(
                    "no offline runners named {}-… to prune",
                    settings.name_prefix
                );
            }
            for r in &out.candidates {
                let state = if out.deleted.contains(&r.id) {
                    "deleted"
                } else if out.busy.contains(&r.id) {
                    "busy now, kept"
                } else if out.gone.contains(&r.id) {
                    "already gone"
                } else {
                    "offline (run with --yes to delete)"
                };
                println!("{:>12}  {:<40}  {state}", r.id, r.name);
            }
            Ok(())
        }
    }
}

/// SIGTERM and SIGINT, each delivered to the lifecycle as it arrives.
fn forward_signals(tx: tokio::sync::mpsc::UnboundedSender<nix::sys::signal::Signal>) {
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, sig) in [
        (SignalKind::terminate(), nix::sys::signal::Signal::SIGTERM),
        (SignalKind::interrupt(), nix::sys::signal::Signal::SIGINT),
    ] {
        let tx = tx.clone();
        match signal(kind) {
            Ok(mut s) => {
                tokio::spawn(async move {
                    while s.recv().await.is_some() {
                        if tx.send(sig).is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => tracing::error!("cannot listen for {sig}: {e}"),
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

fn probe_command(m: &ArgMatches, settings: &config::ProbeSettings) -> Result<(), Error> {
    let root = m
        .get_one::<std::path::PathBuf>("root")
        .cloned()
        .unwrap_or_else(|| "/".into());
    if let Some(dest) = m.get_one::<std::path::PathBuf>("capture") {
        match crate::probe::capture(&root, dest) {
            Ok(files) => eprintln!("captured {} files into {}", files.len(), dest.display()),
            Err(source) => {
                let e = Error::Capture {
                    dest: dest.clone(),
                    source,
                };
                eprintln!("sysrunner probe: {e}");
                return Err(e);
            }
        }
    }
    let mut report = block_on(crate::assess::assess(&root, &settings.docker));
    if root == std::path::Path::new("/") {
        report.runner_version = Some(runner_versions(settings));
        report.sandbox = report
            .plan()
            .ok()
            .map(|plan| sandbox_request(&report, plan, settings))
            .map(|req| block_on(crate::sandbox::report(&req)));
        report.registry = registry(
            settings,
            report.sandbox.as_ref().is_some_and(|s| s.plan.is_some()),
        );
    }
    if m.get_flag("json") {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("sysrunner probe: {e}");
                return Err(e.into());
            }
        }
    } else {
        print!("{}", report.human());
    }
    // The report said why; the error only carries the cause to the exit code.
    report.plan()?;
    Ok(())
}

/// The life sandbox request `run` would make here, with the runner user's ids (root's where it
/// does not exist) and no LIFE_BINDS.
fn sandbox_request(
    report: &crate::assess::Report,
    plan: &crate::dockerd::Plan,
    settings: &config::ProbeSettings,
) -> crate::sandbox::Request {
    let user = nix::unistd::User::from_name(&settings.runner_user)
        .ok()
        .flatten();
    crate::sandbox::Request::for_container(
        report.runtime,
        &report.facts,
        plan,
        crate::sandbox::Runner {
            dir: settings.runner_dir.clone(),
            uid: user.as_ref().map_or(0, |u| u.uid.as_raw()),
            gid: user.as_ref().map_or(0, |u| u.gid.as_raw()),
            sudoers: None,
        },
        Vec::new(),
        settings.docker.data,
    )
}

/// The runner versions for `probe`: what a running life published (it asked GitHub and heard
/// the listener), else the release's own `--version`.
fn runner_versions(settings: &config::ProbeSettings) -> crate::runner::version::RunnerVersions {
    use crate::runner::version::{RunnerVersions, of_release};
    let mut v = published().map(|p| p.runner_version).unwrap_or_default();
    if v.image.is_none() {
        let user = nix::unistd::User::from_name(&settings.runner_user)
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()));
        let image = of_release(&settings.runner_dir, user);
        let offered = v
            .offered
            .as_deref()
            .and_then(crate::runner::version::Version::parse);
        v = RunnerVersions::new(image, offered);
    }
    v
}

/// Where pulls go for `probe`: what a running life decided, else the cache asked now (as a life
/// in a sandbox would, where one is available).
fn registry(
    settings: &config::ProbeSettings,
    sandboxed: bool,
) -> Option<crate::registry::Registry> {
    let decision = crate::registry::decide(&settings.docker, sandboxed)?;
    published()
        .and_then(|p| p.registry)
        .or_else(|| Some(block_on(crate::registry::resolve(decision))))
}

/// The state a running life published under /run/sysrunner, if one runs.
fn published() -> Option<crate::lifecycle::health::Published> {
    std::fs::read(std::path::Path::new("/run/sysrunner").join(crate::lifecycle::health::STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Says every problem, and that nothing was started.
fn usage(problems: config::Problems) -> Error {
    eprint!("{problems}");
    eprintln!(
        "sysrunner: {} invalid setting(s); nothing was started. See `sysrunner <command> --help`.",
        problems.0.len()
    );
    Error::Settings(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_command_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn secrets_have_no_flag_in_the_command() {
        let cmd = command();
        let run = cmd.find_subcommand("run").unwrap();
        let longs: Vec<&str> = run.get_arguments().filter_map(|a| a.get_long()).collect();
        assert!(longs.contains(&"access-token-file"));
        assert!(longs.contains(&"app-private-key-file"));
        for forbidden in [
            "access-token",
            "app-private-key",
            "actions-runner-input-jitconfig",
        ] {
            assert!(!longs.contains(&forbidden), "--{forbidden} must not exist");
        }
    }

    #[test]
    fn usage_errors_exit_64() {
        let e = run_with_args(["sysrunner", "run", "--no-such-flag"].map(OsString::from));
        assert_eq!(e, Exit::Usage);
        let e = run_with_args(["sysrunner", "frobnicate"].map(OsString::from));
        assert_eq!(e, Exit::Usage);
    }
}
