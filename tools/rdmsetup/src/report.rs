//! `info -c`: dmsetup's column report (libdevmapper's `dm_report` as
//! dmsetup sets it up), for the fields scripts and udev rules ask for.
//!
//! The layout rules are dm_report's: aligned columns under headings by
//! default (numbers right-aligned, text left-aligned, each column as wide
//! as its declared width or its widest value); `--noheadings` drops the
//! headings and the alignment and separates with `:`; `--separator S`
//! separates with `S`, unaligned; `--nameprefixes` prints
//! `DM_<FIELD>='value'`; `--rows` turns columns into rows.

use std::fmt;

/// What a device's report row is made from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    pub uuid: String,
    pub major: u32,
    pub minor: u32,
    pub open_count: i32,
    pub target_count: u32,
    pub event_nr: u32,
    pub live_table: bool,
    pub inactive_table: bool,
    pub suspended: bool,
    pub read_only: bool,
    pub deferred_remove: bool,
    /// Read-ahead in sectors (`bdi/read_ahead_kb` × 2), if known.
    pub read_ahead: Option<u32>,
    /// The kernel's name of the disk (`dm-0`, `rdm-0`), if it has one
    /// in sysfs (the kernel's dm adds the disk at the first table load).
    pub blkdevname: Option<String>,
    /// The devices the live table uses, as (major, minor), and their
    /// kernel names.
    pub deps: Vec<(u32, u32, Option<String>)>,
}

/// A field dmsetup's report knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Name,
    MangledName,
    UnmangledName,
    Uuid,
    MangledUuid,
    UnmangledUuid,
    ReadAhead,
    BlkDevName,
    Attr,
    TablesLoaded,
    Suspended,
    ReadOnly,
    DevNo,
    Major,
    Minor,
    Open,
    Segments,
    Events,
    DeviceCount,
    DevnosUsed,
    BlkdevsUsed,
    Subsystem,
    VgName,
    LvName,
    LvLayer,
}

/// Id, heading, width, numeric (dmsetup's `_report_fields`).
const FIELDS: &[(Field, &str, &str, usize, bool)] = &[
    (Field::Name, "name", "Name", 16, false),
    (Field::MangledName, "mangled_name", "MangledName", 16, false),
    (
        Field::UnmangledName,
        "unmangled_name",
        "UnmangledName",
        16,
        false,
    ),
    (Field::Uuid, "uuid", "UUID", 32, false),
    (Field::MangledUuid, "mangled_uuid", "MangledUUID", 32, false),
    (
        Field::UnmangledUuid,
        "unmangled_uuid",
        "UnmangledUUID",
        32,
        false,
    ),
    (Field::ReadAhead, "read_ahead", "RAhead", 6, true),
    (Field::BlkDevName, "blkdevname", "BlkDevName", 16, false),
    (Field::Attr, "attr", "Stat", 4, false),
    (Field::TablesLoaded, "tables_loaded", "Tables", 6, false),
    (Field::Suspended, "suspended", "Suspended", 9, false),
    (Field::ReadOnly, "readonly", "Read-only", 9, false),
    (Field::DevNo, "devno", "DevNo", 5, false),
    (Field::Major, "major", "Maj", 3, true),
    (Field::Minor, "minor", "Min", 3, true),
    (Field::Open, "open", "Open", 4, true),
    (Field::Segments, "segments", "Targ", 4, true),
    (Field::Events, "events", "Event", 6, true),
    (Field::DeviceCount, "device_count", "#Devs", 5, true),
    (Field::DevnosUsed, "devnos_used", "DevNosUsed", 16, false),
    (
        Field::BlkdevsUsed,
        "blkdevs_used",
        "BlkDevNamesUsed",
        16,
        false,
    ),
    (Field::Subsystem, "subsystem", "Subsys", 6, false),
    (Field::VgName, "vg_name", "VG", 4, false),
    (Field::LvName, "lv_name", "LV", 4, false),
    (Field::LvLayer, "lv_layer", "LVLayer", 7, false),
];

/// dmsetup's default `info -c` fields.
pub const DEFAULT_FIELDS: &str = "name,major,minor,attr,open,segments,events,uuid";

/// Why a report could not be set up.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownField(pub String);

impl fmt::Display for UnknownField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Unrecognised field: {}", self.0)
    }
}

/// How the report is printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Style {
    pub headings: bool,
    pub aligned: bool,
    pub separator: String,
    pub name_prefixes: bool,
    pub quoted: bool,
    pub rows: bool,
}

impl Style {
    /// The style dmsetup derives from its options (`_report_init`).
    pub fn new(
        noheadings: bool,
        separator: Option<&str>,
        nameprefixes: bool,
        unquoted: bool,
        rows: bool,
    ) -> Style {
        let mut s = Style {
            headings: true,
            aligned: true,
            separator: " ".into(),
            name_prefixes: false,
            quoted: !unquoted,
            rows,
        };
        if noheadings {
            s.separator = ":".into();
            s.aligned = false;
            s.headings = false;
        }
        if nameprefixes {
            s.aligned = false;
            s.name_prefixes = true;
        }
        if let Some(sep) = separator {
            s.separator = sep.into();
            s.aligned = false;
        }
        // dm_report: "With columns_as_rows we must buffer and not align."
        if rows {
            s.aligned = false;
        }
        s
    }
}

/// Parses `-o`: a comma-separated field list, or `+list` to add to the
/// default one. Field names are matched as dm_report matches them: the
/// id, with or without its report type's prefix (`name_`, `info_`,
/// `deps_`, `splitname_`), case-insensitively.
pub fn parse_fields(options: Option<&str>) -> Result<Vec<Field>, UnknownField> {
    let list = match options {
        None => DEFAULT_FIELDS.to_string(),
        Some(o) => match o.strip_prefix('+') {
            Some(more) => format!("{DEFAULT_FIELDS},{more}"),
            None => o.to_string(),
        },
    };
    let mut out = Vec::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let lower = word.to_ascii_lowercase();
        let id = ["name_", "info_", "deps_", "splitname_"]
            .iter()
            .find_map(|p| lower.strip_prefix(p))
            .filter(|rest| FIELDS.iter().any(|f| f.1 == *rest))
            .unwrap_or(&lower);
        match FIELDS.iter().find(|f| f.1 == id) {
            Some(f) => out.push(f.0),
            None => return Err(UnknownField(word.to_string())),
        }
    }
    Ok(out)
}

fn props(field: Field) -> (&'static str, &'static str, usize, bool) {
    let f = FIELDS
        .iter()
        .find(|f| f.0 == field)
        .expect("every field is in the table");
    (f.1, f.2, f.3, f.4)
}

/// libdevmapper's name mangling (mode "auto"): characters outside its
/// whitelist become `\xNN`.
pub fn mangle(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"#+-.:=@_".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The reverse of [`mangle`]: `\xNN` sequences decoded.
pub fn unmangle(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 4 <= b.len() {
            if let Some(v) = s
                .get(i + 2..i + 4)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// dm's split of an LVM device name (`dm_split_lvm_name`): `vg-lv-layer`
/// with `--` standing for a `-` inside a part.
pub fn split_lvm_name(name: &str) -> (String, String, String) {
    // libdevmapper's `_unquote`: a component ends at a single `-` that is
    // not the last character; `--` is a `-`.
    fn unquote(s: &[u8]) -> (String, &[u8]) {
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            if i + 1 < s.len() && s[i] == b'-' {
                if s[i + 1] == b'-' {
                    i += 1;
                } else {
                    break;
                }
            }
            out.push(s[i]);
            i += 1;
        }
        let rest = if i < s.len() { &s[i + 1..] } else { &s[i..] };
        (String::from_utf8_lossy(&out).into_owned(), rest)
    }
    let (vg, rest) = unquote(name.as_bytes());
    let (lv, rest) = unquote(rest);
    let (layer, _) = unquote(rest);
    (vg, lv, layer)
}

/// The subsystem a uuid names: what precedes its first `-` (dmsetup's
/// `_extract_uuid_prefix`), or "" without one.
pub fn uuid_subsystem(uuid: &str) -> String {
    match uuid.find('-') {
        Some(i) => uuid[..i].to_string(),
        None => String::new(),
    }
}

/// A device whose block device has no name in sysfs, for a field that
/// shows it (dmsetup: "Could not resolve block device name for M:m.").
#[derive(Debug, PartialEq, Eq)]
pub struct Unresolved(pub u32, pub u32);

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Could not resolve block device name for {}:{}.",
            self.0, self.1
        )
    }
}

/// The text of `field` for device `d`.
pub fn value(field: Field, d: &DeviceInfo) -> Result<String, Unresolved> {
    let split = || {
        if uuid_subsystem(&d.uuid) == "LVM" {
            split_lvm_name(&d.name)
        } else {
            Default::default()
        }
    };
    Ok(match field {
        Field::Name => d.name.clone(),
        Field::MangledName => mangle(&d.name),
        Field::UnmangledName => unmangle(&d.name),
        Field::Uuid => d.uuid.clone(),
        Field::MangledUuid => mangle(&d.uuid),
        Field::UnmangledUuid => unmangle(&d.uuid),
        Field::ReadAhead => d.read_ahead.unwrap_or(0).to_string(),
        Field::BlkDevName => d.blkdevname.clone().ok_or(Unresolved(d.major, d.minor))?,
        Field::Attr => {
            let mut s = String::new();
            s.push(if d.live_table { 'L' } else { '-' });
            s.push(if d.inactive_table { 'I' } else { '-' });
            s.push(if d.suspended { 's' } else { '-' });
            s.push(if d.read_only { 'r' } else { 'w' });
            s
        }
        Field::TablesLoaded => match (d.live_table, d.inactive_table) {
            (true, true) => "Both",
            (true, false) => "Live",
            (false, true) => "Inactive",
            (false, false) => "None",
        }
        .into(),
        Field::Suspended => if d.suspended { "Suspended" } else { "Active" }.into(),
        Field::ReadOnly => if d.read_only {
            "Read-only"
        } else {
            "Writeable"
        }
        .into(),
        Field::DevNo => format!("{}:{}", d.major, d.minor),
        Field::Major => d.major.to_string(),
        Field::Minor => d.minor.to_string(),
        Field::Open => d.open_count.to_string(),
        Field::Segments => d.target_count.to_string(),
        Field::Events => d.event_nr.to_string(),
        Field::DeviceCount => d.deps.len().to_string(),
        Field::DevnosUsed => d
            .deps
            .iter()
            .map(|(ma, mi, _)| format!("{ma}:{mi}"))
            .collect::<Vec<_>>()
            .join(","),
        Field::BlkdevsUsed => d
            .deps
            .iter()
            .map(|(ma, mi, n)| n.clone().ok_or(Unresolved(*ma, *mi)))
            .collect::<Result<Vec<_>, _>>()?
            .join(","),
        Field::Subsystem => uuid_subsystem(&d.uuid),
        Field::VgName => split().0,
        Field::LvName => split().1,
        Field::LvLayer => split().2,
    })
}

/// A report row: the values of `fields` for `d`, or why one of them
/// cannot be shown (dmsetup then leaves the device out and fails).
pub fn row(fields: &[Field], d: &DeviceInfo) -> Result<Vec<String>, Unresolved> {
    fields.iter().map(|&f| value(f, d)).collect()
}

/// Whether any field needs the devices' dependencies.
pub fn needs_deps(fields: &[Field]) -> bool {
    fields.iter().any(|f| {
        matches!(
            f,
            Field::DeviceCount | Field::DevnosUsed | Field::BlkdevsUsed
        )
    })
}

/// The report of `rows` (made by [`row`], in order) as dmsetup prints it,
/// one string per output line.
pub fn render(fields: &[Field], style: &Style, rows: &[Vec<String>]) -> Vec<String> {
    let widths: Vec<usize> = fields
        .iter()
        .enumerate()
        .map(|(i, &f)| rows.iter().map(|r| r[i].len()).fold(props(f).2, usize::max))
        .collect();
    let cell = |i: usize, f: Field, v: &str| -> String {
        let (id, _, _, numeric) = props(f);
        let mut s = String::new();
        if style.name_prefixes {
            s.push_str("DM_");
            s.push_str(&id.to_ascii_uppercase());
            s.push('=');
            if style.quoted {
                s.push('\'');
            }
        }
        if style.aligned {
            let w = widths[i];
            if numeric {
                s.push_str(&format!("{v:>w$}"));
            } else {
                s.push_str(&format!("{v:<w$}"));
            }
        } else {
            s.push_str(v);
        }
        if style.name_prefixes && style.quoted {
            s.push('\'');
        }
        s
    };
    let heading = |i: usize, f: Field| -> String {
        let h = props(f).1;
        if style.aligned {
            let w = widths[i];
            let h = &h[..h.len().min(w)];
            format!("{h:<w$}")
        } else {
            h.to_string()
        }
    };
    let mut out = Vec::new();
    if style.rows {
        for (i, &f) in fields.iter().enumerate() {
            let mut line = String::new();
            if style.headings {
                line.push_str(props(f).1);
                line.push_str(&style.separator);
            }
            let cells: Vec<String> = rows.iter().map(|r| cell(i, f, &r[i])).collect();
            line.push_str(&cells.join(&style.separator));
            out.push(line);
        }
        return out;
    }
    if style.headings {
        let hs: Vec<String> = fields
            .iter()
            .enumerate()
            .map(|(i, &f)| heading(i, f))
            .collect();
        out.push(hs.join(&style.separator));
    }
    for r in rows {
        let cells: Vec<String> = fields
            .iter()
            .enumerate()
            .map(|(i, &f)| cell(i, f, &r[i]))
            .collect();
        out.push(cells.join(&style.separator));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> DeviceInfo {
        DeviceInfo {
            name: "vg-lv".into(),
            uuid: "LVM-abc".into(),
            major: 253,
            minor: 0,
            open_count: 0,
            target_count: 1,
            event_nr: 0,
            live_table: true,
            read_ahead: Some(256),
            blkdevname: Some("dm-0".into()),
            deps: vec![(254, 0, Some("vda".into())), (254, 16, Some("vdb".into()))],
            ..Default::default()
        }
    }

    #[test]
    fn default_columns_as_dmsetup() {
        let f = parse_fields(None).unwrap();
        let s = Style::new(false, None, false, false, false);
        let out = render(&f, &s, &[row(&f, &dev()).unwrap()]);
        assert_eq!(
            out,
            [
                "Name             Maj Min Stat Open Targ Event  UUID                            ",
                "vg-lv            253   0 L--w    0    1      0 LVM-abc                         ",
            ]
        );
    }

    #[test]
    fn udev_rule_style() {
        // `info -c --nameprefixes --noheadings --rows -o name,uuid,suspended`
        let f = parse_fields(Some("name,uuid,suspended")).unwrap();
        let s = Style::new(true, None, true, false, true);
        assert_eq!(
            render(&f, &s, &[row(&f, &dev()).unwrap()]),
            [
                "DM_NAME='vg-lv'",
                "DM_UUID='LVM-abc'",
                "DM_SUSPENDED='Active'"
            ]
        );
    }

    #[test]
    fn separators_and_extra_fields() {
        let f = parse_fields(Some("name,devnos_used,blkdevs_used,vg_name,lv_name")).unwrap();
        let s = Style::new(true, Some("|"), false, false, false);
        assert_eq!(
            render(&f, &s, &[row(&f, &dev()).unwrap()]),
            ["vg-lv|254:0,254:16|vda,vdb|vg|lv"]
        );
        let s = Style::new(false, Some(","), false, false, false);
        let f = parse_fields(Some("+devno")).unwrap();
        assert_eq!(
            render(&f, &s, &[row(&f, &dev()).unwrap()]),
            [
                "Name,Maj,Min,Stat,Open,Targ,Event,UUID,DevNo",
                "vg-lv,253,0,L--w,0,1,0,LVM-abc,253:0"
            ]
        );
        assert_eq!(
            parse_fields(Some("name,frob")),
            Err(UnknownField("frob".into()))
        );
        assert_eq!(
            parse_fields(Some("info_suspended,NAME")).unwrap(),
            [Field::Suspended, Field::Name]
        );
    }

    #[test]
    fn rows_are_not_aligned_and_unknown_disks_fail() {
        let f = parse_fields(Some("name,minor")).unwrap();
        let s = Style::new(false, None, false, false, true);
        let mut other = dev();
        other.name = "b".into();
        other.minor = 1;
        let rows = [row(&f, &dev()).unwrap(), row(&f, &other).unwrap()];
        assert_eq!(render(&f, &s, &rows), ["Name vg-lv b", "Min 0 1"]);
        let f = parse_fields(Some("name,blkdevname")).unwrap();
        other.blkdevname = None;
        assert_eq!(row(&f, &other), Err(Unresolved(253, 1)));
    }

    #[test]
    fn names_as_libdevmapper() {
        assert_eq!(
            split_lvm_name("vg-lv"),
            ("vg".into(), "lv".into(), "".into())
        );
        assert_eq!(
            split_lvm_name("my--vg-snap-cow"),
            ("my-vg".into(), "snap".into(), "cow".into())
        );
        // What follows a third single hyphen is dropped; a final hyphen
        // is kept.
        assert_eq!(
            split_lvm_name("a-b-c-d"),
            ("a".into(), "b".into(), "c".into())
        );
        assert_eq!(split_lvm_name("a-"), ("a-".into(), "".into(), "".into()));
        assert_eq!(mangle("a b"), "a\\x20b");
        assert_eq!(unmangle("a\\x20b"), "a b");
        assert_eq!(uuid_subsystem("LVM-xyz"), "LVM");
        assert_eq!(uuid_subsystem("plain"), "");
    }
}
