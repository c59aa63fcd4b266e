//! The `sysrunner-testkit` command line: `demo`, `fake-github`, `fake-runner install`, and the
//! hidden commands the kit runs itself as (the boxes' `box-init` and `box-exec`, `build-id`).
//! Parses and dispatches; every outcome becomes an [`Exit`] code here.

use crate::binaries::{BUILD_ID_COMMAND, SYSRUNNER_ENV};
use crate::exit::Exit;
use crate::{bench, boxes, demo, fake_github, fake_runner, soak};
use clap::{Arg, ArgMatches, Command};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

const ABOUT: &str =
    "sysrunner's test kit: the demo, a fake GitHub and a fake actions/runner (never in the image)";

/// `--sysrunner PATH`, as the demo and the bench take it.
fn sysrunner_arg(what: &str) -> Arg {
    Arg::new("sysrunner")
        .long("sysrunner")
        .value_name("PATH")
        .value_parser(clap::value_parser!(PathBuf))
        .help(format!(
            "{what} [env: {SYSRUNNER_ENV}] [default: the sysrunner beside this binary]"
        ))
}

pub fn command() -> Command {
    let cmd = Command::new("sysrunner-testkit")
        .version(env!("CARGO_PKG_VERSION"))
        .about(ABOUT)
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("demo")
                .about("One whole runner life on this machine against the bundled fakes: no GitHub account, needs root and dockerd")
                .arg(
                    Arg::new("box")
                        .long("box")
                        .value_name("KIND")
                        .value_parser(["sysbox", "privileged"])
                        .default_value("sysbox")
                        .help("The box to run in: sysbox-like (a user namespace) or privileged-like"),
                )
                .arg(sysrunner_arg("The sysrunner binary to run in the box")),
        )
        .subcommand(
            Command::new("bench")
                .about("Each phase of a runner's life against its physical limit, in both boxes: a table, a CSV and an SVG plot (needs root and dockerd)")
                .arg(
                    Arg::new("runs")
                        .long("runs")
                        .value_name("N")
                        .value_parser(clap::value_parser!(u32).range(1..))
                        .default_value("5")
                        .help("Interleaved runs of every variant"),
                )
                .arg(
                    Arg::new("k")
                        .long("k")
                        .value_name("K,…")
                        .value_delimiter(',')
                        .value_parser(clap::value_parser!(u32).range(1..=16))
                        .default_value("1,2,4,8")
                        .help("How many boxes start at once, for each concurrency step"),
                )
                .arg(
                    Arg::new("box")
                        .long("box")
                        .value_name("KIND")
                        .value_parser(["sysbox", "privileged", "both"])
                        .default_value("both"),
                )
                .arg(
                    Arg::new("out")
                        .long("out")
                        .value_name("DIR")
                        .value_parser(clap::value_parser!(PathBuf))
                        .default_value("target/bench")
                        .help("Where bench.csv and bench.svg go"),
                )
                .arg(
                    Arg::new("markdown")
                        .long("markdown")
                        .value_name("FILE")
                        .value_parser(clap::value_parser!(PathBuf))
                        .help("Also write this markdown report (BENCHMARK.md)"),
                )
                .arg(sysrunner_arg("The sysrunner binary to measure")),
        )
        .subcommand(
            Command::new("bench-scale")
                .about("How soon `sysrunner scale` gets a job's runner busy, warm and from zero, beside one runner container with no controller: a table and a CSV (needs root and dockerd)")
                .arg(
                    Arg::new("runs")
                        .long("runs")
                        .value_name("N")
                        .value_parser(clap::value_parser!(u32).range(1..))
                        .default_value("5")
                        .help("Interleaved runs of every variant"),
                )
                .arg(
                    Arg::new("jobs")
                        .long("jobs")
                        .value_name("J,…")
                        .value_delimiter(',')
                        .value_parser(clap::value_parser!(u32).range(1..=16))
                        .default_value("1,4,8")
                        .help("How many jobs are queued at once, for each step (SCALE_MAX_RUNNERS is J)"),
                )
                .arg(
                    Arg::new("out")
                        .long("out")
                        .value_name("DIR")
                        .value_parser(clap::value_parser!(PathBuf))
                        .default_value("target/bench")
                        .help("Where scale.csv goes"),
                )
                .arg(
                    Arg::new("markdown")
                        .long("markdown")
                        .value_name("FILE")
                        .value_parser(clap::value_parser!(PathBuf))
                        .help("Also replace the scale section of this markdown file (BENCHMARK.md), or append it"),
                )
                .arg(sysrunner_arg("The sysrunner binary to measure")),
        )
        .subcommand(
            Command::new("bench-pull")
                .about("What DOCKER_REGISTRY_CACHE saves a job's `docker pull`: cold and warm through a pull-through cache, against a plain registry at its place, the bytes the upstream served, and a hanging cache's delay (needs root, dockerd and docker-registry)")
                .arg(
                    Arg::new("runs")
                        .long("runs")
                        .value_name("N")
                        .value_parser(clap::value_parser!(u32).range(1..))
                        .default_value("5")
                        .help("Interleaved runs of every variant"),
                )
                .arg(
                    Arg::new("box")
                        .long("box")
                        .value_name("KIND")
                        .value_parser(["sysbox", "privileged", "both"])
                        .default_value("both"),
                )
                .arg(
                    Arg::new("out")
                        .long("out")
                        .value_name("DIR")
                        .value_parser(clap::value_parser!(PathBuf))
                        .default_value("target/bench")
                        .help("Where pull.csv goes"),
                )
                .arg(
                    Arg::new("markdown")
                        .long("markdown")
                        .value_name("FILE")
                        .value_parser(clap::value_parser!(PathBuf))
                        .help("Also replace the pull section of this markdown file (BENCHMARK.md), or append it"),
                )
                .arg(sysrunner_arg("The sysrunner binary to measure")),
        )
        .subcommand(
            soak_scale_args(Command::new("soak"))
                .about("Seeded lives of `sysrunner run` in the boxes with drawn faults (GitHub's 5xx, 429, hangs, dropped answers, listener exits, signals, dockerd killed), each checked against README's contract (needs root and dockerd)")
                .arg(
                    Arg::new("lives")
                        .long("lives")
                        .value_name("N")
                        .value_parser(clap::value_parser!(u64).range(1..))
                        .default_value("20")
                        .help("How many lives"),
                )
                .arg(
                    Arg::new("seed")
                        .long("seed")
                        .value_name("S")
                        .value_parser(clap::value_parser!(u64))
                        .help("The seed [default: drawn, and printed]"),
                )
                .arg(
                    Arg::new("from")
                        .long("from")
                        .value_name("K")
                        .value_parser(clap::value_parser!(u64))
                        .default_value("0")
                        .help("The first life (replays a failure of life K)"),
                )
                .arg(
                    Arg::new("box")
                        .long("box")
                        .value_name("KIND")
                        .value_parser(["sysbox", "privileged", "both"])
                        .default_value("both"),
                )
                .arg(
                    Arg::new("budget")
                        .long("budget")
                        .value_name("SECS")
                        .value_parser(clap::value_parser!(u64))
                        .help("Start no life after this many seconds (the lives run so far are reported)"),
                )
                .arg(sysrunner_arg("The sysrunner binary to run in the boxes")),
        )
        .subcommand(fake_github::cli::command())
        .subcommand(
            Command::new("fake-runner")
                .about("The fake actions/runner: `install DIR` lays out a release that sysrunner drives like the real one")
                .subcommand_required(true)
                .subcommand(
                    Command::new("install")
                        .about("Write the fake release into DIR; its bin/Runner.Listener is the fake-runner-listener beside this binary")
                        .arg(
                            Arg::new("dir")
                                .required(true)
                                .value_name("DIR")
                                .value_parser(clap::value_parser!(PathBuf)),
                        ),
                ),
        )
        .subcommand(bench::inside_command())
        .subcommand(
            Command::new(BUILD_ID_COMMAND)
                .hide(true)
                .about("Print the hash of the sources this binary was built from (see `binaries`)"),
        );
    boxes::cli::register(cmd)
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
        Some(("demo", m)) => {
            let kind = m
                .get_one::<String>("box")
                .and_then(|b| demo::parse_box(b))
                .expect("clap checks the value");
            demo::run(kind, m.get_one::<PathBuf>("sysrunner").cloned())
        }
        Some(("bench", m)) => bench::run(&bench_options(m)),
        Some(("bench-scale", m)) => bench::scale::run(&bench_scale_options(m)),
        Some(("bench-pull", m)) => bench::pull::run(&bench_pull_options(m)),
        Some((bench::INSIDE_COMMAND, m)) => bench::run_inside(m),
        Some(("soak", m)) => soak_command(m),
        Some(("fake-github", m)) => fake_github::cli::run(m),
        Some(("fake-runner", m)) => fake_runner_command(m),
        Some((BUILD_ID_COMMAND, _)) => {
            println!("{}", crate::BUILD_ID);
            Exit::Ok
        }
        Some((name, m)) if boxes::cli::owns(name) => boxes::cli::run(name, m),
        _ => unreachable!("clap requires a known subcommand"),
    }
}

/// The scale mode's flags of `soak`: `--scale` (rounds of one `sysrunner scale` controller
/// instead of lives of `sysrunner run`) and `--rounds N`.
fn soak_scale_args(cmd: Command) -> Command {
    cmd.arg(
        Arg::new("scale")
            .long("scale")
            .action(clap::ArgAction::SetTrue)
            .help("Scale mode: rounds of jobs and faults against one `sysrunner scale` controller in a box with a real dockerd (SOAK.md, \"Scale mode\")"),
    )
    .arg(
        Arg::new("rounds")
            .long("rounds")
            .value_name("N")
            .value_parser(clap::value_parser!(u64).range(1..))
            .default_value("20")
            .requires("scale")
            .help("With --scale: how many rounds (--from K is the first round)"),
    )
}

/// `soak --scale`: the scale soak, its summary on stdout.
fn soak_scale_command(m: &ArgMatches, sysrunner: PathBuf, seed: u64) -> Exit {
    let o = soak::scale::Options {
        seed,
        rounds: *m.get_one::<u64>("rounds").expect("a default"),
        from: *m.get_one::<u64>("from").expect("a default"),
        sysrunner,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        budget: m
            .get_one::<u64>("budget")
            .map(|s| std::time::Duration::from_secs(*s)),
    };
    eprintln!(
        "soak --scale: seed {seed}, rounds {}..{}",
        o.from,
        o.from + o.rounds
    );
    match soak::scale::run(&o) {
        Ok(r) => {
            print!("{}", r.summary());
            if r.failed() { Exit::Failed } else { Exit::Ok }
        }
        Err(e) => {
            eprintln!("sysrunner-testkit soak --scale (seed {seed}): {e}");
            Exit::Internal
        }
    }
}

fn soak_command(m: &ArgMatches) -> Exit {
    let missing: Vec<String> = crate::gate::BOX_WITH_DOCKERD
        .iter()
        .filter_map(|n| crate::gate::missing(*n))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "sysrunner-testkit soak cannot run here: {}",
            missing.join("; ")
        );
        return Exit::Unsupported;
    }
    let sysrunner = match crate::binaries::sysrunner(m.get_one::<PathBuf>("sysrunner").cloned()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sysrunner-testkit soak: {e}");
            return Exit::Internal;
        }
    };
    let seed = m
        .get_one::<u64>("seed")
        .copied()
        .unwrap_or_else(rand::random::<u64>);
    if m.get_flag("scale") {
        return soak_scale_command(m, sysrunner, seed);
    }
    let boxes = match m.get_one::<String>("box").map(String::as_str) {
        Some("sysbox") => soak::BoxChoice::Sysbox,
        Some("privileged") => soak::BoxChoice::Privileged,
        _ => soak::BoxChoice::Both,
    };
    let o = soak::Options {
        seed,
        lives: *m.get_one::<u64>("lives").expect("a default"),
        from: *m.get_one::<u64>("from").expect("a default"),
        boxes,
        sysrunner,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        budget: m
            .get_one::<u64>("budget")
            .map(|s| std::time::Duration::from_secs(*s)),
    };
    eprintln!("soak: seed {seed}, lives {}..{}", o.from, o.from + o.lives);
    match soak::run(&o) {
        Ok(r) => {
            print!("{}", r.summary());
            if r.failed() { Exit::Failed } else { Exit::Ok }
        }
        Err(e) => {
            eprintln!("sysrunner-testkit soak (seed {seed}): {e}");
            Exit::Internal
        }
    }
}

fn bench_options(m: &ArgMatches) -> bench::Options {
    let kinds = match m.get_one::<String>("box").map(String::as_str) {
        Some("sysbox") => vec![crate::BoxKind::SysboxLike],
        Some("privileged") => vec![crate::BoxKind::PrivilegedLike],
        _ => vec![crate::BoxKind::SysboxLike, crate::BoxKind::PrivilegedLike],
    };
    bench::Options {
        runs: *m.get_one::<u32>("runs").expect("defaulted"),
        k: m.get_many::<u32>("k")
            .expect("defaulted")
            .map(|k| *k as usize)
            .collect(),
        kinds,
        out: m.get_one::<PathBuf>("out").expect("defaulted").clone(),
        markdown: m.get_one::<PathBuf>("markdown").cloned(),
        sysrunner: m.get_one::<PathBuf>("sysrunner").cloned(),
    }
}

fn bench_pull_options(m: &ArgMatches) -> bench::pull::Options {
    bench::pull::Options {
        runs: *m.get_one::<u32>("runs").expect("defaulted"),
        kinds: match m.get_one::<String>("box").map(String::as_str) {
            Some("sysbox") => vec![crate::BoxKind::SysboxLike],
            Some("privileged") => vec![crate::BoxKind::PrivilegedLike],
            _ => vec![crate::BoxKind::SysboxLike, crate::BoxKind::PrivilegedLike],
        },
        out: m.get_one::<PathBuf>("out").expect("defaulted").clone(),
        markdown: m.get_one::<PathBuf>("markdown").cloned(),
        sysrunner: m.get_one::<PathBuf>("sysrunner").cloned(),
    }
}

fn bench_scale_options(m: &ArgMatches) -> bench::scale::Options {
    let mut jobs: Vec<usize> = m
        .get_many::<u32>("jobs")
        .expect("defaulted")
        .map(|j| *j as usize)
        .collect();
    jobs.dedup();
    bench::scale::Options {
        runs: *m.get_one::<u32>("runs").expect("defaulted"),
        jobs,
        out: m.get_one::<PathBuf>("out").expect("defaulted").clone(),
        markdown: m.get_one::<PathBuf>("markdown").cloned(),
        sysrunner: m.get_one::<PathBuf>("sysrunner").cloned(),
    }
}

fn fake_runner_command(m: &ArgMatches) -> Exit {
    let Some(("install", m)) = m.subcommand() else {
        unreachable!("clap requires install")
    };
    let dir = m.get_one::<PathBuf>("dir").expect("required");
    let installed = crate::binaries::locate_listener()
        .and_then(|l| fake_runner::install(dir, &l).map_err(|e| e.to_string()));
    match installed {
        Ok(()) => {
            println!(
                "installed the fake actions/runner {} into {}",
                fake_runner::VERSION,
                dir.display()
            );
            Exit::Ok
        }
        Err(e) => {
            eprintln!("sysrunner-testkit fake-runner install: {e}");
            Exit::Internal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_command_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn bench_scale_takes_its_job_counts() {
        let m = command()
            .try_get_matches_from(
                [
                    "sysrunner-testkit",
                    "bench-scale",
                    "--jobs",
                    "1,4",
                    "--runs",
                    "2",
                ]
                .map(OsString::from),
            )
            .unwrap();
        let Some(("bench-scale", m)) = m.subcommand() else {
            panic!("not bench-scale")
        };
        let o = bench_scale_options(m);
        assert_eq!(o.jobs, vec![1, 4]);
        assert_eq!(o.runs, 2);
        assert_eq!(o.out, PathBuf::from("target/bench"));
        assert!(o.markdown.is_none());
        let e =
            run_with_args(["sysrunner-testkit", "bench-scale", "--jobs", "0"].map(OsString::from));
        assert_eq!(e, Exit::Usage);
    }

    #[test]
    fn usage_errors_exit_64() {
        let e = run_with_args(["sysrunner-testkit", "frobnicate"].map(OsString::from));
        assert_eq!(e, Exit::Usage);
        let e = run_with_args(["sysrunner-testkit", "demo", "--box", "docker"].map(OsString::from));
        assert_eq!(e, Exit::Usage);
    }
}
