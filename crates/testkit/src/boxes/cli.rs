//! The hidden subcommands the boxes harness runs the kit's binary as (`box-init`, `box-exec`):
//! their clap declarations and dispatch. Not for people: the host side builds their arguments.

use clap::{Arg, ArgMatches, Command};
use std::ffi::OsString;

pub const INIT: &str = "box-init";
pub const EXEC: &str = "box-exec";

/// Adds the hidden subcommands to the top-level command.
pub fn register(cmd: Command) -> Command {
    let spec = || Arg::new("spec").required(true).value_name("JSON");
    cmd.subcommand(
        Command::new(INIT)
            .hide(true)
            .about("testkit: a namespace box's first process (started by the harness)")
            .arg(spec()),
    )
    .subcommand(
        Command::new(EXEC)
            .hide(true)
            .about("testkit: run a command inside a running namespace box")
            .arg(spec())
            .arg(
                Arg::new("argv")
                    .required(true)
                    .num_args(1..)
                    .last(true)
                    .value_parser(clap::value_parser!(OsString)),
            ),
    )
}

/// Whether `name` is one of these subcommands.
pub fn owns(name: &str) -> bool {
    name == INIT || name == EXEC
}

/// Runs the subcommand; never returns (each ends the process with its own exit code).
pub fn run(name: &str, m: &ArgMatches) -> ! {
    let spec = m.get_one::<String>("spec").expect("clap requires spec");
    if name == INIT {
        super::init::main(spec)
    } else {
        let argv: Vec<OsString> = m
            .get_many::<OsString>("argv")
            .expect("clap requires argv")
            .cloned()
            .collect();
        super::exec::main(spec, &argv)
    }
}
