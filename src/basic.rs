// SPDX-License-Identifier: GPL-2.0

//! The basic targets: `linear`, `zero` and `error`.

use crate::kx::block::{BdevFile, Bio, BioOp};
use crate::rdm_core::table::{parse_linear, parse_none, OpSupport, TargetOps};
use crate::target::{arg_error, open_device, write_dev, BStr, Ctx, Io, Target, TargetTypes};
use core::fmt::{self, Write};
use kernel::prelude::*;
use kernel::sync::Arc;

/// Adds the basic target types to `types`.
pub(crate) fn register(types: &mut TargetTypes) -> Result {
    types.add(
        "linear",
        [1, 4, 0],
        Arc::new(
            |ctx: &Ctx<'_>, p: &[u8]| -> Result<Arc<dyn Target>> {
                Ok(Arc::new(Linear::new(ctx, p)?, GFP_KERNEL)?)
            },
            GFP_KERNEL,
        )?,
    )?;
    types.add(
        "zero",
        [1, 2, 0],
        Arc::new(
            |ctx: &Ctx<'_>, p: &[u8]| -> Result<Arc<dyn Target>> {
                parse_none(p).map_err(|e| arg_error(ctx, "zero", e))?;
                Ok(Arc::new(Zero, GFP_KERNEL)?)
            },
            GFP_KERNEL,
        )?,
    )?;
    types.add(
        "error",
        [1, 7, 0],
        Arc::new(
            |ctx: &Ctx<'_>, p: &[u8]| -> Result<Arc<dyn Target>> {
                parse_none(p).map_err(|e| arg_error(ctx, "error", e))?;
                Ok(Arc::new(ErrorTarget, GFP_KERNEL)?)
            },
            GFP_KERNEL,
        )?,
    )?;
    Ok(())
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

    /// It only remaps (dm's linear is `DM_TARGET_NOWAIT`).
    fn supports_nowait(&self) -> bool {
        true
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

    /// It only ends the bio.
    fn supports_nowait(&self) -> bool {
        true
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

    /// It only ends the bio.
    fn supports_nowait(&self) -> bool {
        true
    }
}
