//! rdm-ioctl-probe: issues one device-mapper ioctl built by hand, so the
//! VM tests can send what no well-behaved tool would (a short or huge
//! `data_size`, a foreign version, an unknown request, a buffer that ends
//! at an unmapped page) and check the errno the driver answers.
//!
//! Prints `result OK` or `result <ERRNO>`, then `version A.B.C` as the
//! driver left it in the buffer (when the buffer is readable).

use clap::Parser;
use rdm_core::dm_ioctl::{decode_version, set_c_str, Header, STRUCT_SIZE, VERSION_BYTES};
use rdm_core::payload::{encode_load_spec, TargetSpec, RESULT_START};
use rdm_core::table::parse_table_line;
use rdm_ioctl_probe::{dm_ioctl_raw, GuardedBuffer};
use std::fs::OpenOptions;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// Control device.
    #[arg(long, default_value = "/dev/rdm-control")]
    control: PathBuf,
    /// Full ioctl request number (e.g. 0xc138fd02); or use --nr.
    #[arg(long, value_parser = parse_u32)]
    request: Option<u32>,
    /// dm command number, turned into `_IOWR(0xfd, nr, struct dm_ioctl)`.
    #[arg(long, value_parser = parse_u32)]
    nr: Option<u32>,
    /// The `data_size` field (default: the buffer length).
    #[arg(long, value_parser = parse_u32)]
    data_size: Option<u32>,
    /// The `version` field, as A.B.C.
    #[arg(long, default_value = "4.0.0")]
    version: String,
    /// Bytes of readable buffer; it ends right before an unmapped page.
    #[arg(long, default_value_t = 16384)]
    buffer_len: usize,
    /// Pass a NULL pointer instead of the buffer.
    #[arg(long)]
    null: bool,
    /// The `name` field (empty by default).
    #[arg(long, default_value = "")]
    name: String,
    /// The `uuid` field (empty by default).
    #[arg(long, default_value = "")]
    uuid: String,
    /// Fill the whole `name` field with 'x' (no NUL).
    #[arg(long)]
    name_no_nul: bool,
    /// A table-load target `START LENGTH TYPE [PARAMS]` (repeatable).
    #[arg(long)]
    spec: Vec<String>,
    /// The `target_count` field (default: the number of --spec).
    #[arg(long)]
    target_count: Option<u32>,
    /// The `data_start` field (default: 312, where the specs are put).
    #[arg(long, value_parser = parse_u32)]
    data_start: Option<u32>,
    /// Override the `next` field of spec I: `I=VALUE` (repeatable).
    #[arg(long)]
    next: Vec<String>,
    /// Payload string at data_start (rename's new name).
    #[arg(long)]
    string: Option<String>,
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s}: {e}"))
}

fn main() {
    let args = Args::parse();
    let request = match (args.request, args.nr) {
        (Some(r), _) => r,
        (None, Some(nr)) => rdm_core::dm_ioctl::request(nr),
        (None, None) => rdm_core::dm_ioctl::Command::Version.request(),
    };
    let v: Vec<u32> = args
        .version
        .split('.')
        .map(|p| p.parse().expect("version A.B.C"))
        .collect();
    let mut header = Header::new(args.data_size.unwrap_or(args.buffer_len as u32));
    header.version = [v[0], v[1], v[2]];
    if args.name_no_nul {
        header.name.fill(b'x');
    } else {
        set_c_str(&mut header.name, args.name.as_bytes()).expect("name fits");
    }
    set_c_str(&mut header.uuid, args.uuid.as_bytes()).expect("uuid fits");

    let len = args.buffer_len;
    let mut buf = GuardedBuffer::new(len);
    // Built in a roomy buffer; only the first --buffer-len bytes are passed.
    let mut full = vec![0u8; STRUCT_SIZE.max(len).max(65536)];
    let payload_at = RESULT_START;
    let mut at = payload_at;
    let mut spec_offsets = Vec::new();
    for line in &args.spec {
        let l = parse_table_line(line.as_bytes())
            .expect("--spec START LENGTH TYPE [PARAMS]")
            .expect("--spec is not empty");
        let spec = TargetSpec {
            start: l.start,
            length: l.length,
            target_type: l.target_type,
            params: l.params,
        };
        spec_offsets.push(at);
        at = encode_load_spec(&mut full, at, &spec).expect("--spec fits in --buffer-len");
    }
    for n in &args.next {
        let (i, v) = n.split_once('=').expect("--next I=VALUE");
        let off = spec_offsets[i.parse::<usize>().expect("index")]
            + std::mem::offset_of!(rdm_core::dm_ioctl::sys::dm_target_spec, next);
        full[off..off + 4].copy_from_slice(&parse_u32(v).expect("value").to_ne_bytes());
    }
    if let Some(s) = &args.string {
        full[payload_at..payload_at + s.len()].copy_from_slice(s.as_bytes());
        full[payload_at + s.len()] = 0;
    }
    header.target_count = args.target_count.unwrap_or(args.spec.len() as u32);
    header.data_start = args.data_start.unwrap_or(payload_at as u32);
    header.encode(&mut full).expect("header fits");
    buf.bytes(len).copy_from_slice(&full[..len]);

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&args.control)
        .unwrap_or_else(|e| panic!("open {}: {e}", args.control.display()));
    let ptr = if args.null { None } else { Some(&mut buf) };
    let ret = dm_ioctl_raw(&file, request, ptr);
    match ret {
        Ok(()) => println!("result OK"),
        Err(e) => println!("result {e:?}"),
    }
    if !args.null && len >= VERSION_BYTES {
        let mut vb = [0u8; VERSION_BYTES];
        vb.copy_from_slice(&buf.bytes(len)[..VERSION_BYTES]);
        let v = decode_version(&vb);
        println!("version {}.{}.{}", v[0], v[1], v[2]);
    }
}
