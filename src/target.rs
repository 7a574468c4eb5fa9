// SPDX-License-Identifier: GPL-2.0

//! Targets: what a table line maps its range of sectors to.
//!
//! Every target type implements [`Target`]; [`TargetKind`] holds one of each
//! kind (static dispatch on the I/O path) and [`TARGET_TYPES`] is the list
//! `DM_LIST_VERSIONS` reports. The snapshot targets join the same list.

use crate::device::Io;
use crate::kx::block::{BdevFile, Bio, BioOp, IoHints};
use crate::kx::wait::EventCounter;
use crate::rdm_core::table::{
    parse_linear, parse_none, ArgError, DevSpec, OpSupport, OptionalOp, TargetOps,
};
use crate::snapshot::targets::{MergeTarget, OriginTarget, SnapshotTarget};
use crate::snapshot::Snapshots;
use crate::striped::Striped;
use core::fmt::{self, Write};
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::Arc;

/// A constructed target.
pub(crate) trait Target: Send + Sync {
    /// Maps `bio`, which lies inside the target (and inside
    /// [`Target::max_io_len`]); `offset` is its first sector relative to
    /// the target's start. `io` must be used exactly once: to remap the
    /// bio, clone it, or end it.
    fn map(&self, bio: Bio, offset: u64, io: Io<'_>);

    /// How many sectors from `offset` on one bio may cover (a snapshot's
    /// chunk boundary), if limited.
    fn max_io_len(&self, _offset: u64) -> Option<u64> {
        None
    }

    /// The table went live, or goes on after a suspend (resume; dm's
    /// `resume`, also undoing a `presuspend` whose suspend failed).
    fn resume(&self) {}

    /// The device is about to be suspended (dm's `presuspend`): stop
    /// whatever would write the devices while it is.
    fn presuspend(&self) {}

    /// A `DM_TARGET_MSG` for this target: `None` if the target does not
    /// take messages of this kind, else the outcome, with any answer
    /// written to `out`.
    fn message(&self, _msg: &[u8], _out: &mut dyn Write) -> Option<Result> {
        None
    }

    /// The `DM_TABLE_STATUS` info text (empty for the basic targets).
    fn status(&self, _out: &mut dyn Write) -> fmt::Result {
        Ok(())
    }

    /// The table line's parameters as dm reports them.
    fn table(&self, out: &mut dyn Write) -> fmt::Result;

    /// Calls `f` with each underlying device and the sector it is used
    /// from (dm's `iterate_devices`).
    fn devices(&self, _f: &mut dyn FnMut(&Arc<BdevFile>, u64)) {}

    /// I/O hints for the device's queue limits beyond its devices' (dm's
    /// `io_hints`).
    fn io_hints(&self) -> Option<IoHints> {
        None
    }

    /// What the target does with discards, write zeroes and secure erases
    /// (none by default: they fail with EOPNOTSUPP).
    fn ops(&self) -> TargetOps {
        TargetOps::NONE
    }
}

/// Whether `target` refuses a bio of kind `op` (EOPNOTSUPP): an optional
/// operation it does not support, or any operation rdm does not know
/// (zone operations: rdm refuses zoned devices). Checked before every map,
/// as dm's `__process_abnormal_io`: the table may have been swapped since
/// the block layer checked the limits that allowed the bio.
pub(crate) fn refuses(target: &dyn Target, op: BioOp) -> bool {
    let optional = match op {
        BioOp::Read | BioOp::Write | BioOp::Flush => return false,
        BioOp::Discard => OptionalOp::Discard,
        BioOp::WriteZeroes => OptionalOp::WriteZeroes,
        BioOp::SecureErase => OptionalOp::SecureErase,
        BioOp::Other => return true,
    };
    !target.ops().maps(optional)
}

/// Where a target is being built: for checks and messages.
pub(crate) struct Ctx<'a> {
    /// The mapped device's name (for log lines).
    pub(crate) name: &'a [u8],
    /// The target's index in the table.
    pub(crate) index: u32,
    /// Its length in sectors.
    pub(crate) len: u64,
    /// Open underlying devices read-only.
    pub(crate) read_only: bool,
    /// Origins and the copier, for the snapshot targets.
    pub(crate) snapshots: &'a Arc<Snapshots>,
    /// The device's event number.
    pub(crate) events: &'a Arc<EventCounter>,
}

impl Ctx<'_> {
    /// Logs why the target was refused and returns `err`.
    pub(crate) fn fail(&self, ty: &str, why: fmt::Arguments<'_>, err: Error) -> Error {
        pr_err!(
            "{}: target {} ({}): {}\n",
            BStr(self.name),
            self.index,
            ty,
            why
        );
        err
    }
}

/// Prints bytes as text (names are checked to be printable ASCII).
pub(crate) struct BStr<'a>(pub(crate) &'a [u8]);

impl fmt::Display for BStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                f.write_char(b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

pub(crate) fn arg_error(ctx: &Ctx<'_>, ty: &str, e: ArgError) -> Error {
    ctx.fail(ty, format_args!("{e}"), EINVAL)
}

/// Prints a device as a table line names it.
struct SpecName<'a>(DevSpec<'a>);

impl fmt::Display for SpecName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            DevSpec::Number(ma, mi) => write!(f, "{ma}:{mi}"),
            DevSpec::Path(p) => write!(f, "{}", BStr(p)),
        }
    }
}

/// Opens an underlying device named by a table line. A zoned device is
/// refused: rdm maps no zone operations.
pub(crate) fn open_device(ctx: &Ctx<'_>, ty: &str, spec: DevSpec<'_>) -> Result<Arc<BdevFile>> {
    let file = match spec {
        DevSpec::Number(major, minor) => BdevFile::open_dev(
            crate::rdm_core::dm_ioctl::encode_dev(major, minor),
            !ctx.read_only,
        ),
        DevSpec::Path(path) => {
            let path = CString::try_from_fmt(kernel::fmt!("{}", BStr(path)))?;
            BdevFile::open_path(&path, !ctx.read_only)
        }
    };
    let file = file.map_err(|e| {
        ctx.fail(
            ty,
            format_args!(
                "cannot open device {} (errno {})",
                SpecName(spec),
                -e.to_errno()
            ),
            e,
        )
    })?;
    if file.is_zoned() {
        return Err(ctx.fail(
            ty,
            format_args!(
                "device {} is zoned: zoned devices are not supported",
                SpecName(spec)
            ),
            EINVAL,
        ));
    }
    Ok(Arc::new(file, GFP_KERNEL)?)
}

/// Formats a device as dm does in table lines: `major:minor`.
pub(crate) fn write_dev(out: &mut dyn Write, dev: &BdevFile) -> fmt::Result {
    let (major, minor) = crate::rdm_core::dm_ioctl::decode_dev(dev.devt());
    write!(out, "{major}:{minor}")
}

/// `linear <dev> <offset>`: the range maps to the device from `offset` on.
pub(crate) struct Linear {
    dev: Arc<BdevFile>,
    start: u64,
}

impl Linear {
    fn new(ctx: &Ctx<'_>, params: &[u8]) -> Result<Self> {
        let (spec, start) = parse_linear(params).map_err(|e| arg_error(ctx, "linear", e))?;
        let dev = open_device(ctx, "linear", spec)?;
        let size = dev.nr_sectors();
        // As dm (`device_area_is_invalid`): a device of size 0 (a mapped
        // device whose table is loaded but not resumed yet, as LVM2
        // activates a stack) is not checked.
        if size != 0 && start.checked_add(ctx.len).map_or(true, |end| end > size) {
            return Err(ctx.fail(
                "linear",
                format_args!(
                    "device {} is too small: sectors {start}+{} past its end {size}",
                    BStr(
                        params
                            .split(|b| b.is_ascii_whitespace())
                            .next()
                            .unwrap_or(b"")
                    ),
                    ctx.len
                ),
                EINVAL,
            ));
        }
        let lbs = u64::from(dev.logical_block_size() >> 9).max(1);
        if start % lbs != 0 || ctx.len % lbs != 0 {
            return Err(ctx.fail(
                "linear",
                format_args!("start {start} and length {} must be multiples of the device's {lbs}-sector logical block", ctx.len),
                EINVAL,
            ));
        }
        Ok(Linear { dev, start })
    }
}

impl Target for Linear {
    fn map(&self, mut bio: Bio, offset: u64, io: Io<'_>) {
        bio.set_sector(self.start + offset);
        io.remap(bio, &self.dev);
    }

    fn table(&self, out: &mut dyn Write) -> fmt::Result {
        write_dev(out, &self.dev)?;
        write!(out, " {}", self.start)
    }

    fn devices(&self, f: &mut dyn FnMut(&Arc<BdevFile>, u64)) {
        f(&self.dev, self.start);
    }

    /// Discards, write zeroes and secure erases go to the device (the
    /// table offers each only if the device does), as dm's linear.
    fn ops(&self) -> TargetOps {
        TargetOps {
            discard: OpSupport::PassDown,
            write_zeroes: OpSupport::PassDown,
            secure_erase: OpSupport::PassDown,
        }
    }
}

/// What dm's `zero` and `error` targets do with the optional operations:
/// discards are taken (dm: `discards_supported`), write zeroes and secure
/// erases are not.
const DISCARD_ONLY: TargetOps = TargetOps {
    discard: OpSupport::Own,
    write_zeroes: OpSupport::No,
    secure_erase: OpSupport::No,
};

/// `zero`: reads return zeroes, writes and discards are dropped.
pub(crate) struct Zero;

impl Target for Zero {
    fn map(&self, mut bio: Bio, _offset: u64, io: Io<'_>) {
        match bio.op() {
            BioOp::Read => {
                bio.zero_fill();
                io.end(bio, false);
            }
            BioOp::Write | BioOp::Discard => io.end(bio, false),
            _ => io.end_unsupported(bio),
        }
    }

    fn table(&self, _out: &mut dyn Write) -> fmt::Result {
        Ok(())
    }

    fn ops(&self) -> TargetOps {
        DISCARD_ONLY
    }
}

/// `error`: every I/O fails (discards too, with EIO, as dm's).
pub(crate) struct ErrorTarget;

impl Target for ErrorTarget {
    fn map(&self, bio: Bio, _offset: u64, io: Io<'_>) {
        match bio.op() {
            BioOp::Read | BioOp::Write | BioOp::Flush | BioOp::Discard => io.end(bio, true),
            _ => io.end_unsupported(bio),
        }
    }

    fn table(&self, _out: &mut dyn Write) -> fmt::Result {
        Ok(())
    }

    fn ops(&self) -> TargetOps {
        DISCARD_ONLY
    }
}

/// One target of any type (static dispatch on the I/O path).
pub(crate) enum TargetKind {
    Linear(Linear),
    Zero(Zero),
    Error(ErrorTarget),
    Striped(Striped),
    Origin(OriginTarget),
    Snapshot(SnapshotTarget),
    Merge(MergeTarget),
}

impl TargetKind {
    pub(crate) fn get(&self) -> &dyn Target {
        match self {
            TargetKind::Linear(t) => t,
            TargetKind::Zero(t) => t,
            TargetKind::Error(t) => t,
            TargetKind::Striped(t) => t,
            TargetKind::Origin(t) => t,
            TargetKind::Snapshot(t) => t,
            TargetKind::Merge(t) => t,
        }
    }
}

/// A target type: name, version, constructor.
pub(crate) struct TargetType {
    pub(crate) name: &'static str,
    pub(crate) version: [u32; 3],
    ctr: fn(&Ctx<'_>, &[u8]) -> Result<TargetKind>,
}

impl TargetType {
    /// Builds a target from its table-line parameters.
    pub(crate) fn construct(&self, ctx: &Ctx<'_>, params: &[u8]) -> Result<TargetKind> {
        (self.ctr)(ctx, params)
    }
}

/// Every target type rdm has (dm's versions for the same behaviour).
pub(crate) static TARGET_TYPES: [TargetType; 7] = [
    TargetType {
        name: "linear",
        version: [1, 4, 0],
        ctr: |ctx, p| Ok(TargetKind::Linear(Linear::new(ctx, p)?)),
    },
    TargetType {
        name: "zero",
        version: [1, 2, 0],
        ctr: |ctx, p| {
            parse_none(p).map_err(|e| arg_error(ctx, "zero", e))?;
            Ok(TargetKind::Zero(Zero))
        },
    },
    TargetType {
        name: "error",
        version: [1, 7, 0],
        ctr: |ctx, p| {
            parse_none(p).map_err(|e| arg_error(ctx, "error", e))?;
            Ok(TargetKind::Error(ErrorTarget))
        },
    },
    TargetType {
        name: "striped",
        version: [1, 6, 0],
        ctr: |ctx, p| Ok(TargetKind::Striped(Striped::new(ctx, p)?)),
    },
    TargetType {
        name: "snapshot-origin",
        version: [1, 9, 0],
        ctr: |ctx, p| Ok(TargetKind::Origin(OriginTarget::new(ctx, p)?)),
    },
    TargetType {
        name: "snapshot",
        version: [1, 16, 0],
        ctr: |ctx, p| Ok(TargetKind::Snapshot(SnapshotTarget::new(ctx, p)?)),
    },
    TargetType {
        name: "snapshot-merge",
        version: [1, 5, 0],
        ctr: |ctx, p| Ok(TargetKind::Merge(MergeTarget::new(ctx, p)?)),
    },
];

/// The target type called `name`.
pub(crate) fn find_type(name: &[u8]) -> Option<&'static TargetType> {
    TARGET_TYPES.iter().find(|t| t.name.as_bytes() == name)
}
