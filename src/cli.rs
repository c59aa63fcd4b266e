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
        "probe" => &[Group::Docker, Group::Time, Group::Logs],
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
                .about("Report the container runtime and the dockerd plan for it")
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("One JSON object on stdout"))
                .arg(
                    Arg::new("root")
                        .long("root")
                        .value_name("DIR")
                        .value_parser(clap::value_parser!(std::path::PathBuf))
                        .help("Read every fact from a captured tree instead of / (skips live checks)"),
                )
                .args(setting_args("probe"))
                .after_help(after),
        );
    #[cfg(feature = "testkit")]
    let cmd = crate::testkit::boxes::cli::register(cmd);
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
                    not_implemented("probe")
                }
            }
        }
        #[cfg(feature = "testkit")]
        Some((name, m)) if crate::testkit::boxes::cli::owns(name) => {
            crate::testkit::boxes::cli::run(name, m)
        }
        _ => unreachable!("clap requires a known subcommand"),
    }
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
