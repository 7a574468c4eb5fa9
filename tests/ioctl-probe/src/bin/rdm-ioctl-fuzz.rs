//! rdm-ioctl-fuzz: structured random dm ioctls against the control device,
//! from a printed seed, for a bounded count.
//!
//! Phase 1 sends random buffers: random commands, versions, flags, sizes,
//! offsets, names (too long, without NUL, with '/'), table specs with
//! random types, parameters and `next` links, random payload bytes; every
//! buffer ends at an unmapped page. Phase 2 runs valid-looking sequences
//! (create, load, resume, suspend, rename, status, remove) on a small pool
//! of names while keeping a model of which devices must exist, and checks
//! the driver's device list against it at the end.
//!
//! Prints the seed, the number of buffers tried and the errno histogram;
//! exits 1 if the driver's devices differ from the model.

use clap::Parser;
use rdm_core::dm_ioctl::{request, set_c_str, Command, Header, NameList, STRUCT_SIZE};
use rdm_core::payload::{encode_load_spec, TargetSpec, RESULT_START};
use rdm_ioctl_probe::{dm_ioctl_raw, GuardedBuffer};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "/dev/rdm-control")]
    control: PathBuf,
    /// Random seed (default: from the clock; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Random buffers in phase 1.
    #[arg(long, default_value_t = 2000)]
    count: u32,
    /// Operations in phase 2.
    #[arg(long, default_value_t = 300)]
    sequence: u32,
    /// A block device the valid-looking tables may map (linear).
    #[arg(long, default_value = "/dev/vda")]
    disk: String,
}

/// xorshift64*: small, deterministic, good enough to pick cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const TYPES: &[&str] = &[
    "linear",
    "zero",
    "error",
    "snapshot",
    "",
    "frobnicate",
    "linearlinearline",
];

fn random_name(rng: &mut Rng) -> Vec<u8> {
    match rng.below(6) {
        0 => Vec::new(),
        1 => vec![b'n'; 127],
        2 => b"a/b".to_vec(),
        3 => b"..".to_vec(),
        _ => format!("f{}", rng.below(8)).into_bytes(),
    }
}

fn random_params(rng: &mut Rng, disk: &str) -> String {
    match rng.below(7) {
        0 => String::new(),
        1 => format!("{disk} {}", rng.below(1 << 20)),
        2 => format!("{disk} {}", u64::MAX - rng.below(4)),
        3 => "254:0 x".to_string(),
        4 => "/dev/nonexistent 0".to_string(),
        5 => "1 2 3 4 5 6 7 8 9".to_string(),
        _ => "a".repeat(rng.below(3000) as usize),
    }
}

/// Builds one random request into `full`; returns (request number, length to pass).
fn random_request(rng: &mut Rng, full: &mut [u8], disk: &str) -> (u32, usize) {
    full.fill(0);
    let nr = if rng.chance(90) {
        rng.below(18) as u32
    } else {
        rng.below(256) as u32
    };
    let req = if rng.chance(97) {
        request(nr)
    } else {
        rng.next() as u32
    };
    let len = match rng.below(10) {
        0 => rng.below(STRUCT_SIZE as u64) as usize,
        1 => STRUCT_SIZE,
        _ => STRUCT_SIZE + rng.below(8192) as usize,
    };
    let mut h = Header::new(len as u32);
    if rng.chance(5) {
        h.version = [rng.below(6) as u32, rng.below(60) as u32, 0];
    }
    h.data_size = match rng.below(10) {
        0 => rng.next() as u32,
        1 => rng.below(400) as u32,
        2 => len as u32 + rng.below(4096) as u32,
        _ => len as u32,
    };
    h.flags = if rng.chance(50) { rng.next() as u32 } else { 0 };
    h.dev = if rng.chance(20) { rng.next() } else { 0 };
    h.event_nr = rng.next() as u32;
    let name = random_name(rng);
    if rng.chance(5) {
        h.name.fill(b'x');
    } else {
        let _ = set_c_str(&mut h.name, &name);
    }
    if rng.chance(20) {
        let _ = set_c_str(&mut h.uuid, format!("U{}", rng.below(4)).as_bytes());
    }
    // Table specs at RESULT_START, with random links.
    let nspecs = rng.below(4) as usize;
    let mut at = RESULT_START;
    let mut start = 0u64;
    for _ in 0..nspecs {
        let length = if rng.chance(10) {
            0
        } else {
            1 + rng.below(4096)
        };
        let params = random_params(rng, disk);
        let spec = TargetSpec {
            start: if rng.chance(10) {
                rng.below(1 << 20)
            } else {
                start
            },
            length,
            target_type: rng.pick(TYPES).as_bytes(),
            params: params.as_bytes(),
        };
        match encode_load_spec(full, at, &spec) {
            Some(next) => {
                if rng.chance(10) {
                    let bad = rng.next() as u32;
                    let next =
                        at + std::mem::offset_of!(rdm_core::dm_ioctl::sys::dm_target_spec, next);
                    full[next..next + 4].copy_from_slice(&bad.to_ne_bytes());
                }
                at = next;
            }
            None => break,
        }
        start += length;
    }
    h.target_count = if rng.chance(85) {
        nspecs as u32
    } else {
        rng.below(1 << 20) as u32
    };
    h.data_start = match rng.below(10) {
        0 => rng.next() as u32,
        1 => rng.below(STRUCT_SIZE as u64 + 64) as u32,
        _ => RESULT_START as u32,
    };
    if rng.chance(10) {
        for b in full[RESULT_START..]
            .iter_mut()
            .take(rng.below(4096) as usize)
        {
            *b = rng.next() as u8;
        }
    }
    let _ = h.encode(full);
    (req, len)
}

fn send(
    file: &std::fs::File,
    req: u32,
    bytes: &[u8],
    len: usize,
) -> Result<Vec<u8>, nix::errno::Errno> {
    let mut buf = GuardedBuffer::new(len.max(1));
    buf.bytes(len).copy_from_slice(&bytes[..len]);
    dm_ioctl_raw(file, req, Some(&mut buf))?;
    Ok(buf.bytes(len).to_vec())
}

/// A well-formed request for a command on a device `name`.
fn well_formed(
    cmd: Command,
    name: &str,
    flags: u32,
    specs: &[TargetSpec<'_>],
    extra: &[u8],
) -> (u32, Vec<u8>) {
    let mut buf = vec![0u8; 16384];
    let mut h = Header::new(buf.len() as u32);
    set_c_str(&mut h.name, name.as_bytes()).unwrap();
    h.flags = flags;
    h.data_start = RESULT_START as u32;
    h.target_count = specs.len() as u32;
    let mut at = RESULT_START;
    for s in specs {
        at = encode_load_spec(&mut buf, at, s).unwrap();
    }
    buf[RESULT_START..RESULT_START + extra.len()].copy_from_slice(extra);
    h.encode(&mut buf).unwrap();
    (cmd.request(), buf)
}

fn main() {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    }) | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&args.control)
        .expect("open the control device");
    let mut hist: BTreeMap<String, u32> = BTreeMap::new();
    let mut full = vec![0u8; STRUCT_SIZE + 8192 + 4096];

    for _ in 0..args.count {
        let (req, len) = random_request(&mut rng, &mut full, &args.disk);
        let key = match send(&file, req, &full, len) {
            Ok(_) => "OK".to_string(),
            Err(e) => format!("{e:?}"),
        };
        *hist.entry(key).or_default() += 1;
    }
    // Start phase 2 from a known state.
    let (req, buf) = well_formed(Command::RemoveAll, "", 0, &[], &[]);
    let _ = send(&file, req, &buf, buf.len());

    let pool = ["s0", "s1", "s2", "s3"];
    let mut model: BTreeSet<String> = BTreeSet::new();
    let mut ops = 0u32;
    for _ in 0..args.sequence {
        let name = rng.pick(&pool).to_string();
        let len = 8 * (1 + rng.below(64));
        let linear = format!("{} {}", args.disk, 8 * rng.below(1024));
        let specs_store;
        let (cmd, flags, specs, extra): (Command, u32, &[TargetSpec<'_>], Vec<u8>) =
            match rng.below(7) {
                0 => (Command::DevCreate, 0, &[], vec![]),
                1 => {
                    specs_store = [TargetSpec {
                        start: 0,
                        length: len,
                        target_type: if rng.chance(50) { b"linear" } else { b"zero" },
                        params: if rng.chance(50) {
                            linear.as_bytes()
                        } else {
                            b""
                        },
                    }];
                    (Command::TableLoad, 0, &specs_store[..], vec![])
                }
                2 => (Command::DevSuspend, 0, &[], vec![]),
                3 => (
                    Command::DevSuspend,
                    rdm_core::dm_ioctl::sys::DM_SUSPEND_FLAG,
                    &[],
                    vec![],
                ),
                4 => (Command::TableStatus, 0, &[], vec![]),
                5 => {
                    let new = rng.pick(&pool).to_string();
                    let mut e = new.into_bytes();
                    e.push(0);
                    (Command::DevRename, 0, &[], e)
                }
                _ => (Command::DevRemove, 0, &[], vec![]),
            };
        let (req, buf) = well_formed(cmd, &name, flags, specs, &extra);
        let ok = send(&file, req, &buf, buf.len()).is_ok();
        ops += 1;
        if ok {
            match cmd {
                Command::DevCreate => {
                    model.insert(name.clone());
                }
                Command::DevRemove => {
                    model.remove(&name);
                }
                Command::DevRename => {
                    model.remove(&name);
                    model.insert(String::from_utf8_lossy(&extra[..extra.len() - 1]).into_owned());
                }
                _ => {}
            }
        }
        let key = format!("seq {} {}", cmd.name(), if ok { "OK" } else { "failed" });
        *hist.entry(key).or_default() += 1;
    }
    // Resume whatever is suspended so the list is read from a quiet state.
    let (req, buf) = well_formed(Command::ListDevices, "", 0, &[], &[]);
    let reply = send(&file, req, &buf, buf.len()).expect("DM_LIST_DEVICES");
    let h = Header::decode(&reply).unwrap();
    let payload = &reply[h.data_start as usize..(h.data_size as usize).min(reply.len())];
    let listed: BTreeSet<String> = NameList::new(payload)
        .map(|e| String::from_utf8_lossy(e.name).into_owned())
        .collect();
    for (k, v) in &hist {
        println!("{v:>6} {k}");
    }
    println!(
        "tried {} random buffers and {ops} sequence operations",
        args.count
    );
    if listed != model {
        println!("MISMATCH: driver lists {listed:?}, the model says {model:?}");
        std::process::exit(1);
    }
    println!("devices match the model: {model:?}");
}
