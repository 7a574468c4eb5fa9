//! rdmsetup: a dmsetup-style control tool for rdm.
//!
//! It speaks the device-mapper ioctl ABI (through the structs shared with
//! the module in `rdm-core`) to `/dev/rdm-control`, or to any control node
//! given with `--control`, including `/dev/mapper/control` (rdm in
//! dm_compat mode, or the kernel's own dm-mod). Output follows dmsetup's.

mod control;
mod report;

use clap::{Args, Parser, Subcommand};
use control::{Control, Error, Request};
use rdm_core::dm_ioctl::sys::*;
use rdm_core::dm_ioctl::{c_str, decode_dev, set_c_str, Command, Header, NameList};
use rdm_core::payload::{
    decode_deps, encode_load_spec, load_payload_size, StatusSpecs, TargetSpec, TargetVersions,
};
use rdm_core::table::parse_table_line;
use report::DeviceInfo;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The default control node of rdm (its own name, so it coexists with dm-mod).
const DEFAULT_CONTROL: &str = "/dev/rdm-control";

/// Options may come before or after the command, as dmsetup's do.
#[derive(Parser)]
#[command(
    name = "rdmsetup",
    version,
    about = "Control tool for rdm mapped devices (dmsetup's commands, options and output)"
)]
struct Cli {
    /// Control device to talk to.
    #[arg(long, global = true, env = "RDM_CONTROL", default_value = DEFAULT_CONTROL)]
    control: PathBuf,

    /// The device's uuid: names the device a command is about (instead
    /// of its name), or sets the uuid of a device being created.
    #[arg(short = 'u', long = "uuid", global = true)]
    uuid: Option<String>,

    /// The device's major number (with --minor: names the device a command
    /// is about).
    #[arg(short = 'j', long = "major", global = true)]
    major: Option<u32>,

    /// The device's minor number: names the device a command is about
    /// (with --major), or asks for this minor when creating one.
    #[arg(short = 'm', long = "minor", global = true)]
    minor: Option<u32>,

    /// info: one line per device in columns (see --options).
    #[arg(
        short = 'c',
        visible_short_alias = 'C',
        long = "columns",
        global = true
    )]
    columns: bool,

    /// info -c: the fields, comma-separated (`+FIELDS` adds to the
    /// default name,major,minor,attr,open,segments,events,uuid).
    #[arg(short = 'o', long = "options", global = true)]
    options: Option<String>,

    /// info -c: no heading line; fields separated by ':' and not aligned.
    #[arg(long, global = true)]
    noheadings: bool,

    /// info -c: the field separator (fields are then not aligned).
    #[arg(long, global = true)]
    separator: Option<String>,

    /// info -c: print each field as DM_<FIELD>='value'.
    #[arg(long, global = true)]
    nameprefixes: bool,

    /// info -c: with --nameprefixes, values without quotes.
    #[arg(long, global = true)]
    unquoted: bool,

    /// info -c: a line per field instead of per device.
    #[arg(long, global = true)]
    rows: bool,

    /// More output: wait prints the device's info block.
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// suspend: do not flush; a filesystem on the device is not frozen
    /// (DM_NOFLUSH_FLAG).
    #[arg(long, global = true)]
    noflush: bool,

    /// suspend: do not freeze a filesystem on the device
    /// (DM_SKIP_LOCKFS_FLAG).
    #[arg(long, global = true)]
    nolockfs: bool,

    /// create, load: the device (or table) is read-only.
    #[arg(short = 'r', long = "readonly", global = true)]
    readonly: bool,

    /// table, status, deps: about the inactive table.
    #[arg(long, global = true)]
    inactive: bool,

    /// remove: if the device is open, load an error table first (its
    /// I/O fails), then remove it.
    #[arg(short = 'f', long, global = true)]
    force: bool,

    /// remove, remove_all: a device that is open is removed on its last
    /// close.
    #[arg(long, global = true)]
    deferred: bool,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args)]
struct TableArgs {
    /// The table, one target per line (`<start> <length> <type> [args]`).
    #[arg(long)]
    table: Option<String>,
    /// A file holding the table, or `-` for standard input.
    file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the tool's and the driver's versions.
    Version,
    /// Create a device, load its table and activate it.
    Create {
        name: String,
        #[command(flatten)]
        table: TableArgs,
        /// Create the device without a table.
        #[arg(long, short = 'n', conflicts_with_all = ["table", "file"])]
        notable: bool,
    },
    /// Load a table as the inactive table (activated by `resume`).
    #[command(alias = "reload")]
    Load {
        name: String,
        #[command(flatten)]
        table: TableArgs,
    },
    /// Suspend I/O (waits for I/O in flight to complete).
    Suspend { name: Option<String> },
    /// Resume I/O, switching to the inactive table if one is loaded.
    Resume { name: Option<String> },
    /// Remove a device.
    Remove { name: Option<String> },
    /// Remove every device that is not open.
    #[command(name = "remove_all")]
    RemoveAll,
    /// Rename a device, or set its uuid with --setuuid.
    Rename {
        name: String,
        new_name: Option<String>,
        #[arg(long)]
        setuuid: Option<String>,
    },
    /// List devices.
    Ls,
    /// Show a device's state (all devices if none is named).
    Info { name: Option<String> },
    /// Show table lines.
    Table { name: Option<String> },
    /// Show target status.
    Status { name: Option<String> },
    /// Show the devices a device depends on.
    Deps { name: Option<String> },
    /// List the target types the driver has.
    Targets,
    /// Send a message to the target at a sector.
    Message {
        name: String,
        sector: u64,
        #[arg(required = true)]
        message: Vec<String>,
    },
    /// Wait for an event on a device (after event number N): `wait
    /// [NAME] [N]`; with -v, print the device's info block then.
    Wait {
        #[arg(num_args = 0..=2)]
        args: Vec<String>,
    },
    /// Create the named device nodes (/dev/rdm/NAME, or /dev/mapper/NAME).
    Mknodes { name: Option<String> },
    /// Set a device's geometry (rdm does not support this yet: ENOTTY).
    Setgeometry {
        name: String,
        cylinders: u32,
        heads: u32,
        sectors: u32,
        start: u64,
    },
}

fn main() -> ExitCode {
    // A closed pipe ends the tool quietly, as it does dmsetup (Rust
    // ignores SIGPIPE, and printing would panic).
    // SAFETY: restoring a signal's default disposition at startup, before
    // any thread exists, has no memory-safety preconditions.
    unsafe { nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_DFL) };
    // As dmsetup: a usage error exits with 1 (clap's own code is 2).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rdmsetup: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The request about the device a command names: by `name`, or by the
/// -u or -j/-m options (dmsetup's `_set_task_device`).
fn device_request(cli: &Cli, name: Option<&str>) -> Result<Request, Error> {
    if let Some(n) = name {
        return Request::named(n);
    }
    if let Some(u) = &cli.uuid {
        return Request::with_uuid(u);
    }
    match (cli.major, cli.minor) {
        (Some(ma), Some(mi)) => Ok(Request::with_dev(ma, mi)),
        _ => Err(Error::Usage("No device specified.".into())),
    }
}

/// Whether the command names one device through -u or -j/-m.
fn addressed(cli: &Cli) -> bool {
    cli.uuid.is_some() || (cli.major.is_some() && cli.minor.is_some())
}

fn run(cli: &Cli) -> Result<(), Error> {
    if let Cmd::Version = cli.command {
        println!("rdmsetup version:  {}", env!("CARGO_PKG_VERSION"));
    }
    let c = Control::open(&cli.control)?;
    let compat = cli.control == Path::new("/dev/mapper/control");
    match &cli.command {
        Cmd::Version => {
            let v = c.call(Command::Version, &Request::new())?.header.version;
            println!("Driver version:    {}.{}.{}", v[0], v[1], v[2]);
            Ok(())
        }
        Cmd::Create {
            name,
            table,
            notable,
        } => {
            let lines = if *notable {
                None
            } else {
                Some(read_table(table)?)
            };
            create(&c, cli, name, lines.as_deref())?;
            mknode(&c, name, compat)
        }
        Cmd::Load { name, table } => load(&c, name, &read_table(table)?, cli.readonly),
        Cmd::Suspend { name } => {
            let mut r = device_request(cli, name.as_deref())?;
            r.header.flags |= DM_SUSPEND_FLAG;
            if cli.noflush {
                r.header.flags |= DM_NOFLUSH_FLAG;
            }
            if cli.nolockfs {
                r.header.flags |= DM_SKIP_LOCKFS_FLAG;
            }
            c.call(Command::DevSuspend, &r).map(drop)
        }
        Cmd::Resume { name } => {
            let mut r = device_request(cli, name.as_deref())?;
            if cli.noflush {
                r.header.flags |= DM_NOFLUSH_FLAG;
            }
            if cli.nolockfs {
                r.header.flags |= DM_SKIP_LOCKFS_FLAG;
            }
            c.call(Command::DevSuspend, &r).map(drop)
        }
        Cmd::Remove { name } => remove(&c, cli, name.as_deref(), compat),
        Cmd::RemoveAll => remove_all(&c, cli.deferred),
        Cmd::Rename {
            name,
            new_name,
            setuuid,
        } => rename(&c, name, new_name.as_deref(), setuuid.as_deref(), compat),
        Cmd::Ls => ls(&c),
        Cmd::Info { name } => info_cmd(&c, cli, name.as_deref()),
        Cmd::Table { name } => for_devices(&c, cli, name.as_deref(), |c, r, many| {
            status(
                c,
                r,
                Shown::Table,
                WhichTable::of(cli.inactive),
                NamePrefix::of(many),
            )
        }),
        Cmd::Status { name } => for_devices(&c, cli, name.as_deref(), |c, r, many| {
            status(
                c,
                r,
                Shown::Status,
                WhichTable::of(cli.inactive),
                NamePrefix::of(many),
            )
        }),
        Cmd::Deps { name } => for_devices(&c, cli, name.as_deref(), |c, r, many| {
            deps(c, r, cli.inactive, many)
        }),
        Cmd::Targets => targets(&c),
        Cmd::Message {
            name,
            sector,
            message,
        } => message_cmd(&c, name, *sector, &message.join(" ")),
        Cmd::Wait { args } => {
            // dmsetup: the device name comes first unless -u or -j/-m
            // names it; an event number is the last argument.
            let (name, event) = if addressed(cli) {
                (None, args.last())
            } else {
                match args.as_slice() {
                    [] => return Err(Error::Usage("No device specified.".into())),
                    [n] => (Some(n.as_str()), None),
                    [n, e] => (Some(n.as_str()), Some(e)),
                    _ => return Err(Error::Usage("too many arguments".into())),
                }
            };
            let mut r = device_request(cli, name)?;
            if let Some(e) = event {
                r.header.event_nr = e
                    .parse()
                    .map_err(|_| Error::Usage(format!("invalid event number {e:?}")))?;
            }
            let reply = c.call(Command::DevWait, &r)?;
            if cli.verbose > 0 {
                print_info_long(&device_info(&reply.header, false, None)?);
            }
            Ok(())
        }
        Cmd::Setgeometry {
            name,
            cylinders,
            heads,
            sectors,
            start,
        } => {
            let mut r = Request::named(name)?;
            r.payload = format!("{cylinders} {heads} {sectors} {start}\0").into_bytes();
            c.call(Command::DevSetGeometry, &r).map(drop)
        }
        Cmd::Mknodes { name } => match name {
            Some(n) => mknode(&c, n, compat),
            None => {
                for n in device_names(&c)? {
                    mknode(&c, &n, compat)?;
                }
                Ok(())
            }
        },
    }
}

/// The table text from --table, a file, or standard input (`-`).
fn read_table(t: &TableArgs) -> Result<String, Error> {
    match (&t.table, &t.file) {
        (Some(s), None) => Ok(s.clone()),
        (None, Some(p)) if p == Path::new("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Error::Io("standard input".into(), e))?;
            Ok(s)
        }
        (None, Some(p)) => {
            std::fs::read_to_string(p).map_err(|e| Error::Io(p.display().to_string(), e))
        }
        (Some(_), Some(_)) => Err(Error::Usage("give the table with --table or as a file, not both".into())),
        (None, None) => Err(Error::Usage(
            "no table given: use --table '<start> <length> <type> [args]', a file, `-` for standard input, or --notable".into(),
        )),
    }
}

/// Encodes a text table into a DM_TABLE_LOAD payload.
fn encode_table(text: &str) -> Result<(Vec<u8>, u32), Error> {
    let mut specs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_table_line(line.as_bytes()) {
            Ok(Some(l)) => specs.push(TargetSpec {
                start: l.start,
                length: l.length,
                target_type: l.target_type,
                params: l.params,
            }),
            Ok(None) => {}
            Err(e) => return Err(Error::Usage(format!("table line {}: {e}: {line:?}", i + 1))),
        }
    }
    if specs.is_empty() {
        return Err(Error::Usage("the table has no target lines".into()));
    }
    let size = load_payload_size(specs.iter().map(|s| (s.target_type, s.params)));
    // The encoder works on offsets of a whole request; the payload starts
    // at 0 here and is placed at data_start by `Control::call`.
    let mut buf = vec![0u8; size];
    let mut at = 0;
    for s in &specs {
        at = encode_load_spec(&mut buf, at, s).ok_or_else(|| {
            Error::Usage(format!(
                "target type {:?} is longer than 15 bytes",
                String::from_utf8_lossy(s.target_type)
            ))
        })?;
    }
    Ok((buf, specs.len() as u32))
}

fn load(c: &Control, name: &str, table: &str, readonly: bool) -> Result<(), Error> {
    let (payload, count) = encode_table(table)?;
    let mut r = Request::named(name)?;
    r.header.target_count = count;
    if readonly {
        r.header.flags |= DM_READONLY_FLAG;
    }
    r.payload = payload;
    c.call(Command::TableLoad, &r).map(drop)
}

fn create(c: &Control, cli: &Cli, name: &str, table: Option<&str>) -> Result<(), Error> {
    // Check the table before creating anything.
    if let Some(t) = table {
        encode_table(t)?;
    }
    let mut r = Request::named(name)?;
    if let Some(u) = &cli.uuid {
        set_c_str(&mut r.header.uuid, u.as_bytes())
            .ok_or_else(|| Error::Usage(format!("uuid {u:?} is too long (128 bytes at most)")))?;
    }
    if cli.readonly {
        r.header.flags |= DM_READONLY_FLAG;
    }
    if let Some(minor) = cli.minor {
        // As dmsetup: ask for this minor (the major is the driver's).
        r.header.flags |= DM_PERSISTENT_DEV_FLAG;
        r.header.dev = rdm_core::dm_ioctl::encode_dev(cli.major.unwrap_or(0), minor);
    }
    c.call(Command::DevCreate, &r)?;
    let Some(t) = table else {
        return Ok(());
    };
    // As dmsetup: if loading or resuming fails, the new device goes again.
    let activated = load(c, name, t, cli.readonly).and_then(|()| {
        c.call(Command::DevSuspend, &Request::named(name)?)
            .map(drop)
    });
    if let Err(e) = activated {
        let _ = c.call(Command::DevRemove, &Request::named(name)?);
        return Err(e);
    }
    Ok(())
}

fn remove(c: &Control, cli: &Cli, name: Option<&str>, compat: bool) -> Result<(), Error> {
    let mut r = device_request(cli, name)?;
    if cli.deferred {
        r.header.flags |= DM_DEFERRED_REMOVE;
    }
    let first = c.call(Command::DevRemove, &r);
    if let Ok(reply) = &first {
        if reply.header.flags & DM_DEFERRED_REMOVE != 0 {
            return Ok(());
        }
    }
    let reply = match first {
        Err(Error::Ioctl(_, _, nix::errno::Errno::EBUSY)) if cli.force => {
            // dmsetup --force: fail all I/O, then try again.
            let size = device_size(c, &r)?;
            if size > 0 {
                let mut load = r.clone();
                let (payload, count) = encode_table(&format!("0 {size} error"))?;
                load.header.target_count = count;
                load.payload = payload;
                c.call(Command::TableLoad, &load)?;
                c.call(Command::DevSuspend, &r)?;
            }
            c.call(Command::DevRemove, &r)?
        }
        other => other?,
    };
    // The node goes by the name the driver reports (the device may have
    // been named by uuid or number).
    if let Some(n) = c_str(&reply.header.name).filter(|n| !n.is_empty()) {
        remove_node(&String::from_utf8_lossy(n), compat);
    }
    Ok(())
}

/// The length of a device's live table.
fn device_size(c: &Control, r: &Request) -> Result<u64, Error> {
    let mut r = r.clone();
    r.header.flags |= DM_STATUS_TABLE_FLAG;
    let reply = c.call(Command::TableStatus, &r)?;
    Ok(StatusSpecs::new(reply.payload(), reply.header.target_count)
        .map(|s| s.start + s.length)
        .max()
        .unwrap_or(0))
}

fn rename(
    c: &Control,
    name: &str,
    new_name: Option<&str>,
    uuid: Option<&str>,
    compat: bool,
) -> Result<(), Error> {
    let mut r = Request::named(name)?;
    let new = match (new_name, uuid) {
        (Some(n), None) => n,
        (None, Some(u)) => {
            r.header.flags |= DM_UUID_FLAG;
            u
        }
        _ => {
            return Err(Error::Usage(
                "give either a new name or --setuuid UUID".into(),
            ))
        }
    };
    r.payload = new.as_bytes().to_vec();
    r.payload.push(0);
    c.call(Command::DevRename, &r)?;
    if new_name.is_some() {
        remove_node(name, compat);
        mknode(c, new, compat)?;
    }
    Ok(())
}

fn device_names(c: &Control) -> Result<Vec<String>, Error> {
    let reply = c.call(Command::ListDevices, &Request::new())?;
    let mut names: Vec<String> = NameList::new(reply.payload())
        .map(|e| String::from_utf8_lossy(e.name).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Runs `f` for the device the command names (by name, -u or -j/-m), or
/// for every device (sorted by name; `f` is then told there are many).
/// As dmsetup, a device that fails does not stop the others: its error
/// is printed and the command fails at the end.
fn for_devices(
    c: &Control,
    cli: &Cli,
    name: Option<&str>,
    mut f: impl FnMut(&Control, &Request, bool) -> Result<(), Error>,
) -> Result<(), Error> {
    if name.is_some() || addressed(cli) {
        return f(c, &device_request(cli, name)?, false);
    }
    let names = device_names(c)?;
    if names.is_empty() {
        println!("No devices found");
    }
    let mut failed = None;
    for n in names {
        if let Err(e) = f(c, &Request::named(&n)?, true) {
            eprintln!("rdmsetup: {e}");
            failed = Some(Error::Failed);
        }
    }
    failed.map_or(Ok(()), Err)
}

fn device_count(c: &Control) -> Result<usize, Error> {
    let reply = c.call(Command::ListDevices, &Request::new())?;
    Ok(NameList::new(reply.payload()).count())
}

/// DM_REMOVE_ALL, repeated while it makes progress: a device held open by
/// another device's table (a snapshot's COW device) is closed only when
/// the call that removed its holder returns to user space.
fn remove_all(c: &Control, deferred: bool) -> Result<(), Error> {
    let mut r = Request::new();
    if deferred {
        r.header.flags |= DM_DEFERRED_REMOVE;
    }
    let mut left = device_count(c)?;
    loop {
        c.call(Command::RemoveAll, &r)?;
        let now = device_count(c)?;
        if now == 0 || now >= left {
            return Ok(());
        }
        left = now;
    }
}

fn ls(c: &Control) -> Result<(), Error> {
    let reply = c.call(Command::ListDevices, &Request::new())?;
    let mut rows: Vec<(String, u64)> = NameList::new(reply.payload())
        .map(|e| (String::from_utf8_lossy(e.name).into_owned(), e.dev))
        .collect();
    if rows.is_empty() {
        println!("No devices found");
    }
    rows.sort();
    for (name, dev) in rows {
        let (major, minor) = decode_dev(dev);
        // dmsetup's format: "name<TAB>(major:minor)".
        println!("{name}\t({major}:{minor})");
    }
    Ok(())
}

/// A device's state as `info` shows it, from a reply naming it.
fn device_info(h: &Header, with_deps: bool, c: Option<&Control>) -> Result<DeviceInfo, Error> {
    let (major, minor) = decode_dev(h.dev);
    let text = |b: &[u8]| String::from_utf8_lossy(c_str(b).unwrap_or(&[])).into_owned();
    let mut d = DeviceInfo {
        name: text(&h.name),
        uuid: text(&h.uuid),
        major,
        minor,
        open_count: h.open_count,
        target_count: h.target_count,
        event_nr: h.event_nr,
        live_table: h.flags & DM_ACTIVE_PRESENT_FLAG != 0,
        inactive_table: h.flags & DM_INACTIVE_PRESENT_FLAG != 0,
        suspended: h.flags & DM_SUSPEND_FLAG != 0,
        read_only: h.flags & DM_READONLY_FLAG != 0,
        deferred_remove: h.flags & DM_DEFERRED_REMOVE != 0,
        read_ahead: read_ahead(major, minor),
        blkdevname: kernel_name(major, minor),
        deps: Vec::new(),
    };
    if let (true, Some(c)) = (with_deps, c) {
        let reply = c.call(Command::TableDeps, &Request::named(&d.name)?)?;
        let mut devs = vec![0u64; 256];
        let n = decode_deps(reply.payload(), &mut devs).unwrap_or(0);
        d.deps = devs[..n.min(devs.len())]
            .iter()
            .map(|&dev| {
                let (ma, mi) = decode_dev(dev);
                (ma, mi, kernel_name(ma, mi))
            })
            .collect();
    }
    Ok(d)
}

/// The read-ahead of a disk in sectors, as libdevmapper reads it
/// (`/sys/dev/block/M:m/bdi/read_ahead_kb` × 2).
fn read_ahead(major: u32, minor: u32) -> Option<u32> {
    let kb = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/bdi/read_ahead_kb"))
        .ok()?;
    kb.trim().parse::<u32>().ok().map(|v| v * 2)
}

/// The kernel's name of a block device (`dm-0`, `vda`), from sysfs (as
/// libdevmapper's `dm_device_get_name`), if it is there.
fn kernel_name(major: u32, minor: u32) -> Option<String> {
    std::fs::read_link(format!("/sys/dev/block/{major}:{minor}"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// dmsetup's info block (`_display_info_long`).
fn print_info_long(d: &DeviceInfo) {
    println!("Name:              {}", d.name);
    println!(
        "State:             {}{}{}",
        if d.suspended { "SUSPENDED" } else { "ACTIVE" },
        if d.read_only { " (READ-ONLY)" } else { "" },
        if d.deferred_remove {
            " (DEFERRED REMOVE)"
        } else {
            ""
        }
    );
    if let Some(ra) = d.read_ahead {
        println!("Read Ahead:        {ra}");
    }
    let tables = match (d.live_table, d.inactive_table) {
        (true, true) => "LIVE & INACTIVE",
        (true, false) => "LIVE",
        (false, true) => "INACTIVE",
        (false, false) => "None",
    };
    println!("Tables present:    {tables}");
    println!("Open count:        {}", d.open_count);
    println!("Event number:      {}", d.event_nr);
    println!("Major, minor:      {}, {}", d.major, d.minor);
    println!("Number of targets: {}", d.target_count);
    if !d.uuid.is_empty() {
        println!("UUID: {}", d.uuid);
    }
    println!();
}

/// `info`: the info block of each device, or with -c one report of them
/// all.
fn info_cmd(c: &Control, cli: &Cli, name: Option<&str>) -> Result<(), Error> {
    let columns = cli
        .columns
        .then(|| report::parse_fields(cli.options.as_deref()));
    let fields = match columns {
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => return Err(Error::Usage(e.to_string())),
        None => None,
    };
    let with_deps = fields.as_deref().is_some_and(report::needs_deps);
    let mut rows = Vec::new();
    let result = for_devices(c, cli, name, |c, r, _| {
        let h = c.call(Command::DevStatus, r)?.header;
        let d = device_info(&h, with_deps, Some(c))?;
        match &fields {
            // A row that cannot be made leaves the device out (dmsetup).
            Some(f) => rows.push(report::row(f, &d).map_err(|e| Error::Usage(e.to_string()))?),
            None => print_info_long(&d),
        }
        Ok(())
    });
    if let Some(f) = &fields {
        let style = report::Style::new(
            cli.noheadings,
            cli.separator.as_deref(),
            cli.nameprefixes,
            cli.unquoted,
            cli.rows,
        );
        if !rows.is_empty() {
            for line in report::render(f, &style, &rows) {
                println!("{line}");
            }
        }
    }
    result
}

/// What `status` prints of each target: its table line or its status.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shown {
    Table,
    Status,
}

/// Which of a device's tables a query is about.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WhichTable {
    Live,
    Inactive,
}

impl WhichTable {
    fn of(inactive: bool) -> Self {
        if inactive {
            WhichTable::Inactive
        } else {
            WhichTable::Live
        }
    }
}

/// Whether each line starts with the device's name (several devices).
#[derive(Clone, Copy, PartialEq, Eq)]
enum NamePrefix {
    No,
    Yes,
}

impl NamePrefix {
    fn of(many: bool) -> Self {
        if many {
            NamePrefix::Yes
        } else {
            NamePrefix::No
        }
    }
}

fn status(
    c: &Control,
    r: &Request,
    shown: Shown,
    which: WhichTable,
    prefix: NamePrefix,
) -> Result<(), Error> {
    let mut r = r.clone();
    if shown == Shown::Table {
        r.header.flags |= DM_STATUS_TABLE_FLAG;
    }
    if which == WhichTable::Inactive {
        r.header.flags |= DM_QUERY_INACTIVE_TABLE_FLAG;
    }
    let reply = c.call(Command::TableStatus, &r)?;
    let name = String::from_utf8_lossy(c_str(&reply.header.name).unwrap_or(&[])).into_owned();
    let mut any = false;
    for s in StatusSpecs::new(reply.payload(), reply.header.target_count) {
        any = true;
        if prefix == NamePrefix::Yes {
            print!("{name}: ");
        }
        println!(
            "{} {} {} {}",
            s.start,
            s.length,
            String::from_utf8_lossy(s.target_type),
            String::from_utf8_lossy(s.params)
        );
    }
    if !any {
        // dmsetup prints the device's line even without a table.
        if prefix == NamePrefix::Yes {
            print!("{name}: ");
        }
        println!();
    }
    Ok(())
}

/// dmsetup's `deps` line: `N dependencies\t: (M, m)...`.
fn deps(c: &Control, r: &Request, inactive: bool, prefix: bool) -> Result<(), Error> {
    let mut r = r.clone();
    if inactive {
        r.header.flags |= DM_QUERY_INACTIVE_TABLE_FLAG;
    }
    let reply = c.call(Command::TableDeps, &r)?;
    let mut devs = vec![0u64; 256];
    let n = decode_deps(reply.payload(), &mut devs).unwrap_or(0);
    let mut line = String::new();
    if prefix {
        line.push_str(&String::from_utf8_lossy(
            c_str(&reply.header.name).unwrap_or(&[]),
        ));
        line.push_str(": ");
    }
    line.push_str(&format!("{n} dependencies\t:"));
    for &d in &devs[..n.min(devs.len())] {
        let (ma, mi) = decode_dev(d);
        line.push_str(&format!(" ({ma}, {mi})"));
    }
    println!("{line}");
    Ok(())
}

fn targets(c: &Control) -> Result<(), Error> {
    let reply = c.call(Command::ListVersions, &Request::new())?;
    for (name, v) in TargetVersions::new(reply.payload()) {
        println!(
            "{:<16} v{}.{}.{}",
            String::from_utf8_lossy(name),
            v[0],
            v[1],
            v[2]
        );
    }
    Ok(())
}

fn message_cmd(c: &Control, name: &str, sector: u64, msg: &str) -> Result<(), Error> {
    let mut r = Request::named(name)?;
    r.payload = sector.to_ne_bytes().to_vec();
    r.payload.extend_from_slice(msg.as_bytes());
    r.payload.push(0);
    let reply = c.call(Command::TargetMsg, &r)?;
    if reply.header.flags & DM_DATA_OUT_FLAG != 0 {
        if let Some(out) = c_str(reply.payload()) {
            println!("{}", String::from_utf8_lossy(out));
        }
    }
    Ok(())
}

/// Where the named node of a device goes.
fn node_path(name: &str, compat: bool) -> PathBuf {
    if compat {
        Path::new("/dev/mapper").join(name)
    } else {
        Path::new("/dev/rdm").join(name)
    }
}

/// Creates `/dev/rdm/NAME` (a symlink to the disk's node) or, in dm_compat
/// mode, `/dev/mapper/NAME` (a block node, as dmsetup makes).
fn mknode(c: &Control, name: &str, compat: bool) -> Result<(), Error> {
    let h = c.call(Command::DevStatus, &Request::named(name)?)?.header;
    let (major, minor) = decode_dev(h.dev);
    let path = node_path(name, compat);
    let dir = path.parent().expect("node paths have a directory");
    std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.display().to_string(), e))?;
    let _ = std::fs::remove_file(&path);
    let io = |e: nix::errno::Errno| Error::Io(path.display().to_string(), e.into());
    if compat {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let dev = makedev(major.into(), minor.into());
        match mknod(&path, SFlag::S_IFBLK, Mode::from_bits_truncate(0o600), dev) {
            // With udev running, its symlink to /dev/dm-N may have come
            // in between: it names the same device, and is kept.
            Err(nix::errno::Errno::EEXIST)
                if std::fs::metadata(&path)
                    .is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == dev) => {}
            r => r.map_err(io)?,
        }
    } else {
        let target = format!("../rdm-{minor}");
        std::os::unix::fs::symlink(&target, &path)
            .map_err(|e| Error::Io(path.display().to_string(), e))?;
    }
    Ok(())
}

fn remove_node(name: &str, compat: bool) {
    let _ = std::fs::remove_file(node_path(name, compat));
}
