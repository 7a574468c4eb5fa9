//! rdmsetup: a dmsetup-style control tool for rdm.
//!
//! It speaks the device-mapper ioctl ABI (through the structs shared with
//! the module in `rdm-core`) to `/dev/rdm-control`, or to any control node
//! given with `--control`, including `/dev/mapper/control` (rdm in
//! dm_compat mode, or the kernel's own dm-mod). Output follows dmsetup's.

mod control;

use clap::{Args, Parser, Subcommand};
use control::{Control, Error, Request};
use rdm_core::dm_ioctl::sys::*;
use rdm_core::dm_ioctl::{c_str, decode_dev, set_c_str, Command, NameList};
use rdm_core::payload::{
    decode_deps, encode_load_spec, load_payload_size, StatusSpecs, TargetSpec, TargetVersions,
};
use rdm_core::table::parse_table_line;
use std::io::Read;
use std::path::{Path, PathBuf};
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
        #[arg(long, conflicts_with_all = ["table", "file"])]
        notable: bool,
        /// Make the device read-only.
        #[arg(long, short = 'r')]
        readonly: bool,
        /// Set the device's uuid.
        #[arg(long, short = 'u')]
        uuid: Option<String>,
    },
    /// Load a table into the inactive slot (activated by `resume`).
    #[command(alias = "reload")]
    Load {
        name: String,
        #[command(flatten)]
        table: TableArgs,
    },
    /// Suspend I/O (waits for I/O in flight to complete).
    Suspend {
        name: String,
        /// Do not flush queued I/O (accepted for dmsetup compatibility).
        #[arg(long)]
        noflush: bool,
        /// Do not freeze the filesystem (accepted for dmsetup compatibility).
        #[arg(long)]
        nolockfs: bool,
    },
    /// Resume I/O, switching to the inactive table if one is loaded.
    Resume { name: String },
    /// Remove a device.
    Remove {
        name: String,
        /// Replace the table with one that fails all I/O first.
        #[arg(long, short = 'f')]
        force: bool,
        /// If the device is open, remove it on its last close.
        #[arg(long)]
        deferred: bool,
    },
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
    Table {
        name: Option<String>,
        /// Show the inactive table.
        #[arg(long)]
        inactive: bool,
    },
    /// Show target status.
    Status {
        name: Option<String>,
        /// Show the inactive table's status.
        #[arg(long)]
        inactive: bool,
    },
    /// Show the devices a device depends on.
    Deps { name: String },
    /// List the target types the driver has.
    Targets,
    /// Send a message to the target at a sector.
    Message {
        name: String,
        sector: u64,
        #[arg(required = true)]
        message: Vec<String>,
    },
    /// Wait for an event on a device (after event number N).
    Wait { name: String, event_nr: Option<u32> },
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
            readonly,
            uuid,
        } => {
            let lines = if *notable {
                None
            } else {
                Some(read_table(table)?)
            };
            create(&c, name, lines.as_deref(), *readonly, uuid.as_deref())?;
            mknode(&c, name, compat)
        }
        Cmd::Load { name, table } => load(&c, name, &read_table(table)?, false),
        Cmd::Suspend {
            name,
            noflush,
            nolockfs,
        } => {
            let mut r = Request::named(name)?;
            r.header.flags |= DM_SUSPEND_FLAG;
            if *noflush {
                r.header.flags |= DM_NOFLUSH_FLAG;
            }
            if *nolockfs {
                r.header.flags |= DM_SKIP_LOCKFS_FLAG;
            }
            c.call(Command::DevSuspend, &r).map(drop)
        }
        Cmd::Resume { name } => c
            .call(Command::DevSuspend, &Request::named(name)?)
            .map(drop),
        Cmd::Remove {
            name,
            force,
            deferred,
        } => remove(&c, name, *force, *deferred, compat),
        Cmd::RemoveAll => remove_all(&c),
        Cmd::Rename {
            name,
            new_name,
            setuuid,
        } => rename(&c, name, new_name.as_deref(), setuuid.as_deref(), compat),
        Cmd::Ls => ls(&c),
        Cmd::Info { name } => for_devices(&c, name.as_deref(), info),
        Cmd::Table { name, inactive } => for_devices(&c, name.as_deref(), |c, n| {
            status(c, n, true, *inactive, name.is_none())
        }),
        Cmd::Status { name, inactive } => for_devices(&c, name.as_deref(), |c, n| {
            status(c, n, false, *inactive, name.is_none())
        }),
        Cmd::Deps { name } => deps(&c, name),
        Cmd::Targets => targets(&c),
        Cmd::Message {
            name,
            sector,
            message,
        } => message_cmd(&c, name, *sector, &message.join(" ")),
        Cmd::Wait { name, event_nr } => {
            let mut r = Request::named(name)?;
            r.header.event_nr = event_nr.unwrap_or(0);
            let reply = c.call(Command::DevWait, &r)?;
            println!("{}", reply.header.event_nr);
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

fn create(
    c: &Control,
    name: &str,
    table: Option<&str>,
    readonly: bool,
    uuid: Option<&str>,
) -> Result<(), Error> {
    // Check the table before creating anything.
    if let Some(t) = table {
        encode_table(t)?;
    }
    let mut r = Request::named(name)?;
    if let Some(u) = uuid {
        set_c_str(&mut r.header.uuid, u.as_bytes())
            .ok_or_else(|| Error::Usage(format!("uuid {u:?} is too long (128 bytes at most)")))?;
    }
    if readonly {
        r.header.flags |= DM_READONLY_FLAG;
    }
    c.call(Command::DevCreate, &r)?;
    let Some(t) = table else {
        return Ok(());
    };
    // As dmsetup: if loading or resuming fails, the new device goes again.
    let activated = load(c, name, t, readonly).and_then(|()| {
        c.call(Command::DevSuspend, &Request::named(name)?)
            .map(drop)
    });
    if let Err(e) = activated {
        let _ = c.call(Command::DevRemove, &Request::named(name)?);
        return Err(e);
    }
    Ok(())
}

fn remove(c: &Control, name: &str, force: bool, deferred: bool, compat: bool) -> Result<(), Error> {
    let mut r = Request::named(name)?;
    if deferred {
        r.header.flags |= DM_DEFERRED_REMOVE;
    }
    let first = c.call(Command::DevRemove, &r);
    if let Ok(reply) = &first {
        if reply.header.flags & DM_DEFERRED_REMOVE != 0 {
            println!("Device {name} is open: it will be removed on its last close");
            return Ok(());
        }
    }
    let result = match first {
        Err(Error::Ioctl(_, _, nix::errno::Errno::EBUSY)) if force => {
            // dmsetup --force: fail all I/O, then try again.
            let size = device_size(c, name)?;
            if size > 0 {
                load(c, name, &format!("0 {size} error"), false)?;
                c.call(Command::DevSuspend, &Request::named(name)?)?;
            }
            c.call(Command::DevRemove, &r).map(drop)
        }
        other => other.map(drop),
    };
    result?;
    remove_node(name, compat);
    Ok(())
}

fn device_size(c: &Control, name: &str) -> Result<u64, Error> {
    let mut r = Request::named(name)?;
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

/// Runs `f` for the named device, or for every device (sorted by name).
fn for_devices(
    c: &Control,
    name: Option<&str>,
    mut f: impl FnMut(&Control, &str) -> Result<(), Error>,
) -> Result<(), Error> {
    match name {
        Some(n) => f(c, n),
        None => {
            let names = device_names(c)?;
            if names.is_empty() {
                println!("No devices found");
            }
            for n in names {
                f(c, &n)?;
            }
            Ok(())
        }
    }
}

fn device_count(c: &Control) -> Result<usize, Error> {
    let reply = c.call(Command::ListDevices, &Request::new())?;
    Ok(NameList::new(reply.payload()).count())
}

/// DM_REMOVE_ALL, repeated while it makes progress: a device held open by
/// another device's table (a snapshot's COW device) is closed only when
/// the call that removed its holder returns to user space.
fn remove_all(c: &Control) -> Result<(), Error> {
    let mut left = device_count(c)?;
    loop {
        c.call(Command::RemoveAll, &Request::new())?;
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

fn info(c: &Control, name: &str) -> Result<(), Error> {
    let h = c.call(Command::DevStatus, &Request::named(name)?)?.header;
    let mut state = if h.flags & DM_SUSPEND_FLAG != 0 {
        "SUSPENDED"
    } else {
        "ACTIVE"
    }
    .to_string();
    if h.flags & DM_READONLY_FLAG != 0 {
        state.push_str(" (READ-ONLY)");
    }
    let tables = match (
        h.flags & DM_ACTIVE_PRESENT_FLAG != 0,
        h.flags & DM_INACTIVE_PRESENT_FLAG != 0,
    ) {
        (true, true) => "LIVE & INACTIVE",
        (true, false) => "LIVE",
        (false, true) => "INACTIVE",
        (false, false) => "None",
    };
    let (major, minor) = decode_dev(h.dev);
    println!(
        "Name:              {}",
        String::from_utf8_lossy(c_str(&h.name).unwrap_or(name.as_bytes()))
    );
    println!("State:             {state}");
    println!("Tables present:    {tables}");
    println!("Open count:        {}", h.open_count);
    println!("Event number:      {}", h.event_nr);
    println!("Major, minor:      {major}, {minor}");
    println!("Number of targets: {}", h.target_count);
    if let Some(u) = c_str(&h.uuid).filter(|u| !u.is_empty()) {
        println!("UUID: {}", String::from_utf8_lossy(u));
    }
    println!();
    Ok(())
}

fn status(c: &Control, name: &str, table: bool, inactive: bool, prefix: bool) -> Result<(), Error> {
    let mut r = Request::named(name)?;
    if table {
        r.header.flags |= DM_STATUS_TABLE_FLAG;
    }
    if inactive {
        r.header.flags |= DM_QUERY_INACTIVE_TABLE_FLAG;
    }
    let reply = c.call(Command::TableStatus, &r)?;
    for s in StatusSpecs::new(reply.payload(), reply.header.target_count) {
        if prefix {
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
    Ok(())
}

fn deps(c: &Control, name: &str) -> Result<(), Error> {
    let reply = c.call(Command::TableDeps, &Request::named(name)?)?;
    let mut devs = vec![0u64; 256];
    let n = decode_deps(reply.payload(), &mut devs).unwrap_or(0);
    let list: Vec<String> = devs[..n.min(devs.len())]
        .iter()
        .map(|&d| {
            let (ma, mi) = decode_dev(d);
            format!("({ma}, {mi})")
        })
        .collect();
    println!("{n} dependencies\t: {}", list.join(" "));
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
        mknod(
            &path,
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o600),
            makedev(major.into(), minor.into()),
        )
        .map_err(io)?;
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
