//! Table lines: the layout of a table's targets and the arguments of the
//! basic targets, checked without a kernel.

use core::fmt;

/// Why a table's layout was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Target `index` has length zero.
    ZeroLength(u32),
    /// Target `index` starts at `start` but the previous one ended at `expected`.
    Gap {
        /// The target.
        index: u32,
        /// Its start.
        start: u64,
        /// Where it should start.
        expected: u64,
    },
    /// Target `index` starts before the previous one ended.
    Overlap {
        /// The target.
        index: u32,
        /// Its start.
        start: u64,
        /// Where it should start.
        expected: u64,
    },
    /// The targets' total length does not fit in 64 bits.
    TooLong,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayoutError::ZeroLength(i) => write!(f, "target {i} has zero length"),
            LayoutError::Gap {
                index,
                start,
                expected,
            } => write!(
                f,
                "gap in table: target {index} starts at sector {start}, expected {expected}"
            ),
            LayoutError::Overlap {
                index,
                start,
                expected,
            } => write!(
                f,
                "overlap in table: target {index} starts at sector {start}, expected {expected}"
            ),
            LayoutError::TooLong => write!(f, "table longer than 2^64 sectors"),
        }
    }
}

/// Checks that targets `(start, length)` tile `[0, total)` in order with no
/// gap, overlap or empty target (dm's `adjoin()` rule); returns the total.
pub fn check_layout(targets: impl Iterator<Item = (u64, u64)>) -> Result<u64, LayoutError> {
    let mut next = 0u64;
    for (i, (start, length)) in targets.enumerate() {
        let index = i as u32;
        if length == 0 {
            return Err(LayoutError::ZeroLength(index));
        }
        if start > next {
            return Err(LayoutError::Gap {
                index,
                start,
                expected: next,
            });
        }
        if start < next {
            return Err(LayoutError::Overlap {
                index,
                start,
                expected: next,
            });
        }
        next = start.checked_add(length).ok_or(LayoutError::TooLong)?;
    }
    Ok(next)
}

/// Why a table's targets do not fit its logical block size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlignError {
    /// The target.
    pub index: u32,
    /// Its first sector.
    pub start: u64,
    /// Its length in sectors.
    pub len: u64,
    /// The logical block size in bytes it is not aligned to.
    pub block_bytes: u64,
}

impl fmt::Display for AlignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "target {} (start sector {}, length {}) is not aligned to the table's logical block size of {} bytes",
            self.index, self.start, self.len, self.block_bytes
        )
    }
}

/// One target as [`check_block_alignment`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetBlock {
    /// Its length in sectors.
    pub len: u64,
    /// The largest logical block size of its devices, in sectors (1 for a
    /// target without devices: it takes any sector).
    pub block: u64,
}

/// Checks the targets' boundaries against the table's logical block size
/// `block` (in sectors, a power of two: the largest of its devices'), as
/// dm's `validate_hardware_logical_block_alignment()` does: an I/O of
/// whole blocks of the table that starts in one target and goes on into
/// the next must leave the next target a part it can take (a multiple of
/// that target's own block size, when the part ends inside it), and the
/// table must end on a block boundary. So targets without devices (`zero`,
/// `error`) may split a block of the table between them, but a target on
/// a 4 KiB-sector device must start on a 4 KiB boundary of the table, and
/// the table's length must be a multiple of 4 KiB.
pub fn check_block_alignment(
    block: u64,
    targets: impl Iterator<Item = TargetBlock>,
) -> Result<(), AlignError> {
    let mask = block.max(1) - 1;
    // Sectors of a block of the table left for the next target by an I/O
    // of whole blocks that reaches the end of this one.
    let mut remaining = 0u64;
    let mut start = 0u64;
    let mut last = None;
    for (i, t) in targets.enumerate() {
        let target_mask = t.block.max(1) - 1;
        let err = AlignError {
            index: i as u32,
            start,
            len: t.len,
            block_bytes: block.max(1) * 512,
        };
        if remaining < t.len && remaining & target_mask != 0 {
            return Err(err);
        }
        start = start.saturating_add(t.len);
        let next_start = start & mask;
        remaining = if next_start == 0 {
            0
        } else {
            mask + 1 - next_start
        };
        last = Some(err);
    }
    match last {
        Some(err) if remaining != 0 => Err(err),
        _ => Ok(()),
    }
}

/// How a target type treats one of the operations beyond reads, writes and
/// flushes (discard, write zeroes, secure erase): dm's `num_discard_bios`,
/// `num_write_zeroes_bios`, `num_secure_erase_bios` and
/// `discards_supported`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpSupport {
    /// Refused with EOPNOTSUPP (dm: no bios of that kind).
    No,
    /// Passed on to the target's devices: the table offers it only if
    /// every one of them does.
    PassDown,
    /// Done by the target itself, whatever its devices offer (dm:
    /// `discards_supported`).
    Own,
}

/// An operation beyond reads, writes and flushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionalOp {
    /// REQ_OP_DISCARD.
    Discard,
    /// REQ_OP_WRITE_ZEROES.
    WriteZeroes,
    /// REQ_OP_SECURE_ERASE.
    SecureErase,
}

/// What a target type does with each optional operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetOps {
    /// Discard.
    pub discard: OpSupport,
    /// Write zeroes.
    pub write_zeroes: OpSupport,
    /// Secure erase.
    pub secure_erase: OpSupport,
}

impl TargetOps {
    /// A target that supports none of them.
    pub const NONE: TargetOps = TargetOps {
        discard: OpSupport::No,
        write_zeroes: OpSupport::No,
        secure_erase: OpSupport::No,
    };

    /// How the target treats `op`.
    pub fn get(&self, op: OptionalOp) -> OpSupport {
        match op {
            OptionalOp::Discard => self.discard,
            OptionalOp::WriteZeroes => self.write_zeroes,
            OptionalOp::SecureErase => self.secure_erase,
        }
    }

    /// Whether a bio of `op` that reaches the target is mapped (else it
    /// fails with EOPNOTSUPP: a table may be swapped between the block
    /// layer's check of what the device offers and the map).
    pub fn maps(&self, op: OptionalOp) -> bool {
        self.get(op) != OpSupport::No
    }
}

/// Which optional operations a device (or a table) offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceOps {
    /// Discard (`max_discard_sectors` > 0).
    pub discard: bool,
    /// Write zeroes (`max_write_zeroes_sectors` > 0).
    pub write_zeroes: bool,
    /// Secure erase (`max_secure_erase_sectors` > 0).
    pub secure_erase: bool,
}

impl DeviceOps {
    /// Everything.
    pub const ALL: DeviceOps = DeviceOps {
        discard: true,
        write_zeroes: true,
        secure_erase: true,
    };

    /// Whether `op` is offered.
    pub fn get(&self, op: OptionalOp) -> bool {
        match op {
            OptionalOp::Discard => self.discard,
            OptionalOp::WriteZeroes => self.write_zeroes,
            OptionalOp::SecureErase => self.secure_erase,
        }
    }
}

/// The optional operations a table offers (dm's
/// `dm_table_supports_discards()` and its siblings): each one only if
/// every target supports it — by itself, or by passing it on to devices
/// that all offer it. `targets` gives each target's [`TargetOps`] and what
/// its devices offer.
pub fn table_ops<D: IntoIterator<Item = DeviceOps>>(
    targets: impl IntoIterator<Item = (TargetOps, D)>,
) -> DeviceOps {
    let mut table = DeviceOps::ALL;
    for (ops, devices) in targets {
        let all = devices.into_iter().fold(DeviceOps::ALL, |a, d| DeviceOps {
            discard: a.discard && d.discard,
            write_zeroes: a.write_zeroes && d.write_zeroes,
            secure_erase: a.secure_erase && d.secure_erase,
        });
        let ok = |op| match ops.get(op) {
            OpSupport::No => false,
            OpSupport::PassDown => all.get(op),
            OpSupport::Own => true,
        };
        table.discard &= ok(OptionalOp::Discard);
        table.write_zeroes &= ok(OptionalOp::WriteZeroes);
        table.secure_erase &= ok(OptionalOp::SecureErase);
    }
    table
}

/// How a table line names an underlying device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevSpec<'a> {
    /// `major:minor`.
    Number(u32, u32),
    /// A path such as `/dev/vda`.
    Path(&'a [u8]),
}

/// Why a target's arguments were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// Wrong number of arguments.
    Count {
        /// How many the target takes (a description).
        expected: &'static str,
        /// How many were given.
        got: usize,
    },
    /// An argument that must be a number is not one.
    NotANumber(usize),
    /// A device argument that is neither a path nor `major:minor`.
    BadDevice(usize),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ArgError::Count { expected, got } => {
                write!(f, "expected {expected} arguments, got {got}")
            }
            ArgError::NotANumber(i) => write!(f, "argument {} is not a number", i + 1),
            ArgError::BadDevice(i) => {
                write!(f, "argument {} is not a device path or major:minor", i + 1)
            }
        }
    }
}

/// The whitespace-separated arguments of a table line (at most `N`); the
/// count is the real count even past `N`.
pub fn split_args<const N: usize>(params: &[u8]) -> ([&[u8]; N], usize) {
    let mut out: [&[u8]; N] = [&[]; N];
    let mut n = 0;
    for word in params
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
    {
        if n < N {
            out[n] = word;
        }
        n += 1;
    }
    (out, n)
}

/// Parses a decimal `u64` (no sign, no spaces).
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Parses a device argument: `major:minor`, or else a path (which must
/// start with `/`).
pub fn parse_dev(s: &[u8], index: usize) -> Result<DevSpec<'_>, ArgError> {
    if let Some(colon) = s.iter().position(|&b| b == b':') {
        let major = parse_u64(&s[..colon]).and_then(|v| u32::try_from(v).ok());
        let minor = parse_u64(&s[colon + 1..]).and_then(|v| u32::try_from(v).ok());
        return match (major, minor) {
            (Some(ma), Some(mi)) if ma < 1 << 12 && mi < 1 << 20 => Ok(DevSpec::Number(ma, mi)),
            _ => Err(ArgError::BadDevice(index)),
        };
    }
    if s.first() == Some(&b'/') && !s.contains(&0) {
        Ok(DevSpec::Path(s))
    } else {
        Err(ArgError::BadDevice(index))
    }
}

/// `linear <dev> <offset>`.
pub fn parse_linear(params: &[u8]) -> Result<(DevSpec<'_>, u64), ArgError> {
    let (args, n) = split_args::<2>(params);
    if n != 2 {
        return Err(ArgError::Count {
            expected: "2 (<device> <offset>)",
            got: n,
        });
    }
    let dev = parse_dev(args[0], 0)?;
    let offset = parse_u64(args[1]).ok_or(ArgError::NotANumber(1))?;
    Ok((dev, offset))
}

/// `zero` and `error` take no arguments.
pub fn parse_none(params: &[u8]) -> Result<(), ArgError> {
    match split_args::<0>(params).1 {
        0 => Ok(()),
        got => Err(ArgError::Count {
            expected: "no",
            got,
        }),
    }
}

/// One line of a table in text form: `<start> <length> <type> [params]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLine<'a> {
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub length: u64,
    /// Target type.
    pub target_type: &'a [u8],
    /// Parameters, with surrounding blanks removed.
    pub params: &'a [u8],
}

/// Why a text table line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineError {
    /// Fewer than three fields.
    TooShort,
    /// The start is not a number.
    BadStart,
    /// The length is not a number.
    BadLength,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LineError::TooShort => "expected <start> <length> <target type> [arguments]",
            LineError::BadStart => "start is not a number",
            LineError::BadLength => "length is not a number",
        })
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn next_word(s: &[u8]) -> (&[u8], &[u8]) {
    let s = trim(s);
    let end = s
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// Parses a text table line (as `dmsetup create --table` takes). Blank
/// lines and `#` comments give `Ok(None)`.
pub fn parse_table_line(line: &[u8]) -> Result<Option<TableLine<'_>>, LineError> {
    let line = trim(line);
    if line.is_empty() || line[0] == b'#' {
        return Ok(None);
    }
    let (start, rest) = next_word(line);
    let (length, rest) = next_word(rest);
    let (target_type, rest) = next_word(rest);
    if target_type.is_empty() {
        return Err(LineError::TooShort);
    }
    Ok(Some(TableLine {
        start: parse_u64(start).ok_or(LineError::BadStart)?,
        length: parse_u64(length).ok_or(LineError::BadLength)?,
        target_type,
        params: trim(rest),
    }))
}

/// Whether a device name is acceptable: not empty, no `/` (it names a node
/// under /dev/rdm or /dev/mapper), not `.` or `..`, printable ASCII.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && name.iter().all(|&b| b.is_ascii_graphic() && b != b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    #[test]
    fn layouts() {
        assert_eq!(check_layout([(0, 10), (10, 5)].into_iter()), Ok(15));
        assert_eq!(check_layout([].into_iter()), Ok(0));
        assert_eq!(
            check_layout([(0, 10), (11, 5)].into_iter()),
            Err(LayoutError::Gap {
                index: 1,
                start: 11,
                expected: 10
            })
        );
        assert!(matches!(
            check_layout([(0, 10), (9, 5)].into_iter()),
            Err(LayoutError::Overlap { index: 1, .. })
        ));
        assert!(matches!(
            check_layout([(5, 10)].into_iter()),
            Err(LayoutError::Gap { index: 0, .. })
        ));
        assert_eq!(
            check_layout([(0, 0)].into_iter()),
            Err(LayoutError::ZeroLength(0))
        );
        assert_eq!(
            check_layout([(0, u64::MAX), (u64::MAX, 1)].into_iter()),
            Err(LayoutError::TooLong)
        );
    }

    fn blocks(t: &[(u64, u64)]) -> impl Iterator<Item = TargetBlock> + '_ {
        t.iter().map(|&(len, block)| TargetBlock { len, block })
    }

    #[test]
    fn block_alignment_as_dm() {
        // A table of 512-byte devices takes anything.
        assert_eq!(check_block_alignment(1, blocks(&[(3, 1), (5, 1)])), Ok(()));
        // A 4 KiB device alone, or after whole blocks.
        assert_eq!(check_block_alignment(8, blocks(&[(16, 8)])), Ok(()));
        assert_eq!(check_block_alignment(8, blocks(&[(8, 1), (16, 8)])), Ok(()));
        // Zero targets may share a block of the table between them.
        assert_eq!(
            check_block_alignment(8, blocks(&[(8, 8), (4, 1), (4, 1)])),
            Ok(())
        );
        assert_eq!(
            check_block_alignment(8, blocks(&[(4, 1), (4, 1), (8, 8)])),
            Ok(())
        );
        // A 4 KiB target that starts inside a block of the table.
        assert_eq!(
            check_block_alignment(8, blocks(&[(4, 1), (8, 8)])),
            Err(AlignError {
                index: 1,
                start: 4,
                len: 8,
                block_bytes: 4096
            })
        );
        // A table that ends inside a block: the last target is named.
        assert_eq!(
            check_block_alignment(8, blocks(&[(8, 8), (4, 1)])),
            Err(AlignError {
                index: 1,
                start: 8,
                len: 4,
                block_bytes: 4096
            })
        );
        assert_eq!(
            check_block_alignment(8, blocks(&[(12, 1)])),
            Err(AlignError {
                index: 0,
                start: 0,
                len: 12,
                block_bytes: 4096
            })
        );
        // A block split 4 + 4 where the second part is a 4 KiB target's
        // start: refused even though the table's length is whole.
        assert!(check_block_alignment(8, blocks(&[(4, 1), (12, 8)])).is_err());
        // 2 KiB devices in a 4 KiB table: a 2 KiB part is fine for them.
        assert_eq!(
            check_block_alignment(8, blocks(&[(4, 4), (4, 4), (8, 8)])),
            Ok(())
        );
        // Empty (cannot happen: a table has targets) and huge lengths.
        assert_eq!(check_block_alignment(8, blocks(&[])), Ok(()));
        assert_eq!(check_block_alignment(8, blocks(&[(!7, 8)])), Ok(()));
    }

    const LINEAR: TargetOps = TargetOps {
        discard: OpSupport::PassDown,
        write_zeroes: OpSupport::PassDown,
        secure_erase: OpSupport::PassDown,
    };
    const ZERO: TargetOps = TargetOps {
        discard: OpSupport::Own,
        write_zeroes: OpSupport::No,
        secure_erase: OpSupport::No,
    };
    const DISK: DeviceOps = DeviceOps {
        discard: true,
        write_zeroes: true,
        secure_erase: false,
    };

    #[test]
    fn table_ops_as_dm() {
        let none: [DeviceOps; 0] = [];
        // Linear passes on what its device offers.
        assert_eq!(table_ops([(LINEAR, [DISK])]), DISK);
        assert_eq!(table_ops([(LINEAR, [DeviceOps::ALL])]), DeviceOps::ALL);
        // Every target must support it: an origin (none) takes it all away.
        assert_eq!(
            table_ops([(LINEAR, vec![DISK]), (TargetOps::NONE, vec![DISK])]),
            DeviceOps::default()
        );
        // A target's own discard needs no device; write zeroes and secure
        // erase stay off with a zero target in the table.
        assert_eq!(
            table_ops([(ZERO, none)]),
            DeviceOps {
                discard: true,
                ..DeviceOps::default()
            }
        );
        assert_eq!(
            table_ops([(LINEAR, vec![DISK]), (ZERO, vec![])]),
            DeviceOps {
                discard: true,
                ..DeviceOps::default()
            }
        );
        // Pass-down needs every device of the target, and every target.
        let plain = DeviceOps::default();
        assert_eq!(
            table_ops([(LINEAR, vec![DISK]), (LINEAR, vec![plain])]),
            plain
        );
        assert!(!ZERO.maps(OptionalOp::WriteZeroes) && ZERO.maps(OptionalOp::Discard));
        assert!(!TargetOps::NONE.maps(OptionalOp::SecureErase));
        assert!(LINEAR.maps(OptionalOp::SecureErase));
    }

    #[test]
    fn linear_args() {
        assert_eq!(
            parse_linear(b"/dev/vda 2048"),
            Ok((DevSpec::Path(b"/dev/vda"), 2048))
        );
        assert_eq!(
            parse_linear(b"  254:16\t0 "),
            Ok((DevSpec::Number(254, 16), 0))
        );
        assert!(matches!(
            parse_linear(b"/dev/vda"),
            Err(ArgError::Count { got: 1, .. })
        ));
        assert!(matches!(
            parse_linear(b"/dev/vda 1 2"),
            Err(ArgError::Count { got: 3, .. })
        ));
        assert_eq!(parse_linear(b"/dev/vda x1"), Err(ArgError::NotANumber(1)));
        assert_eq!(parse_linear(b"/dev/vda -1"), Err(ArgError::NotANumber(1)));
        assert_eq!(
            parse_linear(b"/dev/vda 99999999999999999999"),
            Err(ArgError::NotANumber(1))
        );
        assert_eq!(parse_linear(b"vda 0"), Err(ArgError::BadDevice(0)));
        assert_eq!(parse_linear(b"8:x 0"), Err(ArgError::BadDevice(0)));
        assert_eq!(parse_linear(b"99999:0 0"), Err(ArgError::BadDevice(0)));
    }

    #[test]
    fn no_args() {
        assert_eq!(parse_none(b""), Ok(()));
        assert_eq!(parse_none(b"  "), Ok(()));
        assert!(parse_none(b"x").is_err());
    }

    #[test]
    fn text_lines() {
        let l = parse_table_line(b"  0 2048 linear /dev/vda  0 \n")
            .unwrap()
            .unwrap();
        assert_eq!((l.start, l.length), (0, 2048));
        assert_eq!(l.target_type, b"linear");
        assert_eq!(l.params, b"/dev/vda  0");
        let z = parse_table_line(b"2048 8 zero").unwrap().unwrap();
        assert_eq!(z.params, b"");
        assert_eq!(parse_table_line(b"# comment"), Ok(None));
        assert_eq!(parse_table_line(b"   "), Ok(None));
        assert_eq!(parse_table_line(b"0 8"), Err(LineError::TooShort));
        assert_eq!(parse_table_line(b"x 8 zero"), Err(LineError::BadStart));
        assert_eq!(parse_table_line(b"0 -8 zero"), Err(LineError::BadLength));
    }

    #[test]
    fn names() {
        assert!(valid_name(b"vol0"));
        assert!(valid_name(b"vg-lv_snap.1"));
        assert!(!valid_name(b""));
        assert!(!valid_name(b"a/b"));
        assert!(!valid_name(b".."));
        assert!(!valid_name(b"a b"));
    }
}
