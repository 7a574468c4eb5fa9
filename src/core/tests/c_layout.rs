//! Checks the bindgen structs against the C compiler's view of
//! `linux/dm-ioctl.h`: a small C program prints `sizeof` and `offsetof` for
//! every field, and each must equal Rust's `size_of`/`offset_of!`.
//!
//! The header is taken from `$RDM_KDIR/usr/include` (the test kernel's
//! exported headers, which `make check` sets) or else the system's
//! `/usr/include`. The test fails, rather than skips, when no C compiler
//! or header is found: a layout check that silently does nothing is worse
//! than none.

use rdm_core::dm_ioctl::sys;
use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::process::Command;

macro_rules! probe {
    ($($ty:ident { $($f:ident),* })*) => {{
        let mut c = String::from("#include <stdio.h>\n#include <stddef.h>\n#include <linux/dm-ioctl.h>\nint main(void) {\n");
        let mut rust: Vec<(String, usize)> = Vec::new();
        $(
            c.push_str(&format!("printf(\"{0} %zu\\n\", sizeof(struct {0}));\n", stringify!($ty)));
            rust.push((stringify!($ty).to_string(), size_of::<sys::$ty>()));
            $(
                c.push_str(&format!("printf(\"{0}.{1} %zu\\n\", offsetof(struct {0}, {1}));\n", stringify!($ty), stringify!($f)));
                rust.push((format!("{}.{}", stringify!($ty), stringify!($f)), offset_of!(sys::$ty, $f)));
            )*
        )*
        c.push_str("return 0;\n}\n");
        (c, rust)
    }};
}

#[test]
fn bindgen_layout_equals_the_c_header() {
    let (c_src, rust) = probe! {
        dm_ioctl { version, data_size, data_start, target_count, open_count, flags, event_nr, padding, dev, name, uuid, data }
        dm_target_spec { sector_start, length, status, next, target_type }
        dm_target_deps { count, padding, dev }
        dm_name_list { dev, next, name }
        dm_target_versions { next, version, name }
        dm_target_msg { sector, message }
    };
    let dir = std::env::temp_dir().join(format!("rdm-c-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("probe.c");
    let exe = dir.join("probe");
    std::fs::write(&src, c_src).unwrap();
    let include = match std::env::var("RDM_KDIR") {
        Ok(k) => format!("{k}/usr/include"),
        Err(_) => "/usr/include".to_string(),
    };
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&cc)
        .arg(format!("-I{include}"))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}"));
    assert!(status.success(), "the C layout probe did not compile");
    let out = Command::new(&exe).output().unwrap();
    let c: HashMap<String, usize> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(c.len(), rust.len());
    for (key, value) in rust {
        assert_eq!(
            c[&key], value,
            "{key}: C says {}, Rust says {value}",
            c[&key]
        );
    }
}
