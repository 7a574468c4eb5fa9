//! rdmsetup: a dmsetup-style control tool for rdm.
//!
//! It speaks the device-mapper ioctl ABI (through the structs shared with
//! the module in `rdm-core`) to `/dev/rdm-control`, or to any control node
//! given with `--control`, including the kernel's own `/dev/mapper/control`.

mod control;

use clap::{Parser, Subcommand};
use control::{Control, Error};
use rdm_core::dm_ioctl::{decode_dev, NameList};
use std::path::PathBuf;
use std::process::ExitCode;

/// The default control node of rdm (its own name, so it coexists with dm-mod).
const DEFAULT_CONTROL: &str = "/dev/rdm-control";

#[derive(Parser)]
#[command(
    name = "rdmsetup",
    version,
    about = "Control tool for rdm mapped devices"
)]
struct Cli {
    /// Control device to talk to.
    #[arg(long, global = true, env = "RDM_CONTROL", default_value = DEFAULT_CONTROL)]
    control: PathBuf,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the tool's and the driver's versions.
    Version,
    /// List mapped devices.
    Ls,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rdmsetup: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), Error> {
    match cli.command {
        Cmd::Version => version(cli),
        Cmd::Ls => ls(cli),
    }
}

fn version(cli: &Cli) -> Result<(), Error> {
    println!("rdmsetup version:  {}", env!("CARGO_PKG_VERSION"));
    let control = Control::open(&cli.control)?;
    let v = control.version()?;
    println!("Driver version:    {}.{}.{}", v[0], v[1], v[2]);
    Ok(())
}

fn ls(cli: &Cli) -> Result<(), Error> {
    let control = Control::open(&cli.control)?;
    let reply = control.list_devices()?;
    let mut found = false;
    for entry in NameList::new(reply.payload()) {
        found = true;
        let (major, minor) = decode_dev(entry.dev);
        // dmsetup's format: "name<TAB>(major:minor)".
        println!("{}\t({major}:{minor})", String::from_utf8_lossy(entry.name));
    }
    if !found {
        println!("No devices found");
    }
    Ok(())
}
