//! Test tool: reads and writes COW images with the driver's own format code
//! (`rdm_core::persistent`), so that tests/host/test_cowformat.sh can check
//! the Python oracle (tests/lib/cowformat.py) against it.
//!
//! `rdm-cowcheck read FILE` prints what the driver's loader reads, in the
//! format of `cowformat.py read`: a line
//! `chunk= valid= exceptions= area= in_area= next_free=` (only `chunk= valid=0`
//! for an invalidated snapshot, `new` for magic 0), then one `old new` line per
//! exception in list order; exit 1 on a format error.
//!
//! `rdm-cowcheck write FILE CHUNK SECTORS COUNT` writes an image of SECTORS
//! sectors with COUNT exceptions placed as the driver places them (its
//! `Appender`), old chunk `i * 40503 mod 2^20` for exception `i`, and
//! prints the same as `read` would (the appender's own figures).

use rdm_core::persistent::{
    decode_entry, decode_header, encode_entry, encode_header, Appender, Layout, Loader,
    HEADER_BYTES,
};
use std::process::ExitCode;

fn read(path: &str) -> Result<(), String> {
    let img = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let hdr: &[u8; HEADER_BYTES] = img
        .get(..HEADER_BYTES)
        .and_then(|b| b.try_into().ok())
        .ok_or("short header")?;
    let Some(h) = decode_header(hdr).map_err(|e| format!("{e:?}"))? else {
        println!("new");
        return Ok(());
    };
    let chunk = u64::from(h.chunk_sectors);
    if !h.valid {
        println!("chunk={chunk} valid=0");
        return Ok(());
    }
    let layout = Layout::new(chunk, img.len() as u64 / 512).map_err(|e| format!("{e:?}"))?;
    let cb = layout.chunk_bytes();
    let mut loader = Loader::new(layout);
    let mut pairs = Vec::new();
    let mut olds = std::collections::HashSet::new();
    while let Some(area) = loader.next_area() {
        let at = layout.area_chunk(area) as usize * cb;
        let bytes = img.get(at..at + cb).ok_or("area past the end")?;
        loader
            .feed(
                |i| decode_entry(bytes, i),
                |old, new| {
                    if !olds.insert(old) {
                        return Err(());
                    }
                    pairs.push((old, new));
                    Ok(())
                },
            )
            .map_err(|e| format!("{e:?}"))?;
    }
    let p = loader.position();
    println!(
        "chunk={chunk} valid=1 exceptions={} area={} in_area={} next_free={}",
        p.exceptions, p.area, p.in_area, p.next_free
    );
    for (old, new) in pairs {
        println!("{old} {new}");
    }
    Ok(())
}

fn write(path: &str, chunk: u64, sectors: u64, count: u64) -> Result<(), String> {
    let layout = Layout::new(chunk, sectors).map_err(|e| format!("{e:?}"))?;
    let cb = layout.chunk_bytes();
    let mut img = vec![0u8; (sectors * 512) as usize];
    let header = encode_header(true, chunk as u32);
    img[..HEADER_BYTES].copy_from_slice(&header);
    let mut app = Appender::new(layout, None);
    let mut pairs = Vec::new();
    for i in 0..count {
        let slot = app
            .allocate(layout.cow_chunks())
            .map_err(|e| format!("exception {i}: {e:?}"))?;
        let old = i * 40503 % (1 << 20);
        let (area, index) = layout.entry_at(slot.pos);
        let at = layout.area_chunk(area) as usize * cb;
        encode_entry(&mut img[at..at + cb], index as usize, old, slot.new_chunk);
        pairs.push((old, slot.new_chunk));
    }
    std::fs::write(path, &img).map_err(|e| format!("{path}: {e}"))?;
    let (area, in_area) = layout.entry_at(app.next_pos());
    // A full last area that is the last to fit ends the list there.
    let (area, in_area) = if in_area == 0 && area > 0 && !layout.area_fits(area) {
        (area - 1, layout.epa())
    } else {
        (area, in_area)
    };
    println!(
        "chunk={chunk} valid=1 exceptions={count} area={area} in_area={in_area} next_free={}",
        app.next_free()
    );
    for (old, new) in pairs {
        println!("{old} {new}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |s: &String| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
    let r = match args.as_slice() {
        [cmd, path] if cmd == "read" => read(path),
        [cmd, path, c, s, n] if cmd == "write" => (|| write(path, num(c)?, num(s)?, num(n)?))(),
        _ => Err("usage: rdm-cowcheck read FILE | write FILE CHUNK SECTORS COUNT".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rdm-cowcheck: {e}");
            ExitCode::FAILURE
        }
    }
}
