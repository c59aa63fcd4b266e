//! The command line: builds clap's command from the settings table, collects raw strings, hands them
//! to `config`, dispatches to the library, and turns every outcome into an [`Exit`] code. clap only
//! collects; it validates nothing a setting means.

use crate::config::{self, Group, Inputs, SETTINGS};
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
        "probe" | "dockerd-check" => &[Group::Docker, Group::Time, Group::Logs],
        _ => &[],
    }
}

/// The settings' flags for one subcommand, generated from the table.
fn setting_args(subcommand: &str) -> Vec<Arg> {
    let groups = groups_of(subcommand);
    SETTINGS
        .iter()
        .filter(|s| groups.contains(&s.group))
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
    let groups = groups_of(subcommand);
    let names: Vec<&str> = SETTINGS
        .iter()
        .filter(|s| groups.contains(&s.group) && s.flag().is_none())
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
    let cmd = Command::new("sysrunner")
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
        );
    #[cfg(feature = "testkit")]
    let cmd = cmd.subcommand(crate::testkit::fake_github::cli::command());
    cmd
}

/// The flags given for settings, by setting name.
fn given_flags(m: &ArgMatches, subcommand: &str) -> BTreeMap<String, String> {
    let groups = groups_of(subcommand);
    SETTINGS
        .iter()
        .filter(|s| groups.contains(&s.group) && s.flag().is_some())
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
    run_with_args(std::env::args_os()).into()
}

pub fn run_with_args(args: impl IntoIterator<Item = OsString>) -> Exit {
    let matches = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Exit::Ok,
                _ => Exit::Usage,
            };
            let _ = e.print();
            return code;
        }
    };
    match matches.subcommand() {
        Some(("run", m)) => {
            let flags = given_flags(m, "run");
            match config::load_run(&inputs(&flags)) {
                Err(problems) => usage(&problems),
                Ok(settings) => {
                    crate::logging::init(&settings.log);
                    for w in &settings.warnings {
                        tracing::warn!("{w}");
                    }
                    let report = block_on(crate::probe::probe(
                        std::path::Path::new("/"),
                        &settings.docker,
                        crate::probe::dockerd_version(),
                        &proxy_env(),
                    ));
                    if !report.runtime.supported() {
                        return refuse_runtime(&report);
                    }
                    tracing::info!(
                        runtime = report.runtime.as_str(),
                        "runtime: {}",
                        report.reasons.join("; ")
                    );
                    not_implemented("run")
                }
            }
        }
        Some(("probe", m)) => {
            let flags = given_flags(m, "probe");
            match config::load_probe(&inputs(&flags)) {
                Err(problems) => usage(&problems),
                Ok(settings) => {
                    crate::logging::init(&settings.log);
                    probe_command(m, &settings)
                }
            }
        }
        Some(("dockerd-check", m)) => {
            let flags = given_flags(m, "dockerd-check");
            match config::load_probe(&inputs(&flags)) {
                Err(problems) => usage(&problems),
                Ok(settings) => {
                    crate::logging::init(&settings.log);
                    let command: Vec<String> = m
                        .get_many::<String>("command")
                        .map(|v| v.cloned().collect())
                        .unwrap_or_else(|| vec!["docker".into(), "info".into()]);
                    block_on(crate::dockerd::check::run(
                        &settings,
                        &command,
                        &proxy_env(),
                    ))
                }
            }
        }
        #[cfg(feature = "testkit")]
        Some(("fake-github", m)) => crate::testkit::fake_github::cli::run(m),
        _ => unreachable!("clap requires a known subcommand"),
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// Our proxy variables, for dockerd's pulls.
fn proxy_env() -> BTreeMap<String, String> {
    crate::dockerd::plan::PROXY_VARS
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

fn probe_command(m: &ArgMatches, settings: &config::ProbeSettings) -> Exit {
    let root = m
        .get_one::<std::path::PathBuf>("root")
        .cloned()
        .unwrap_or_else(|| "/".into());
    if let Some(dest) = m.get_one::<std::path::PathBuf>("capture") {
        match crate::probe::capture(&root, dest) {
            Ok(files) => eprintln!("captured {} files into {}", files.len(), dest.display()),
            Err(e) => {
                eprintln!(
                    "sysrunner probe: cannot capture into {}: {e}",
                    dest.display()
                );
                return Exit::Internal;
            }
        }
    }
    let report = block_on(crate::probe::probe(
        &root,
        &settings.docker,
        crate::probe::dockerd_version(),
        &proxy_env(),
    ));
    if m.get_flag("json") {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("sysrunner probe: {e}");
                return Exit::Internal;
            }
        }
    } else {
        print!("{}", report.human());
    }
    if report.runtime.supported() {
        Exit::Ok
    } else {
        Exit::Unsupported
    }
}

/// `run` where dockerd cannot run: say what this is, why, and how to fix it; touch nothing.
fn refuse_runtime(report: &crate::probe::Report) -> Exit {
    tracing::error!(
        runtime = report.runtime.as_str(),
        "sysrunner cannot run dockerd here ({}): {}",
        report.runtime.as_str(),
        report.reasons.join("; ")
    );
    if let Some(remedy) = report.remedy {
        tracing::error!("remedy: {remedy}");
    }
    Exit::Unsupported
}

fn usage(problems: &config::Problems) -> Exit {
    eprint!("{problems}");
    eprintln!(
        "sysrunner: {} invalid setting(s); nothing was started. See `sysrunner run --help`.",
        problems.0.len()
    );
    Exit::Usage
}

fn not_implemented(what: &str) -> Exit {
    eprintln!("sysrunner {what}: not implemented yet");
    Exit::Internal
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
