// SPDX-License-Identifier: GPL-2.0

//! The `striped` target (dm-stripe's table syntax, status and limits;
//! `Documentation/admin-guide.rst`): the target's sectors go round its
//! devices in chunks. LVM2 needs it even for linear volumes: it refuses to
//! create any LV unless the kernel lists a `striped` target.
//!
//! The layout arithmetic and the checks of the table line are kernel-free
//! (`rdm_core::striped`). A bio never crosses a chunk (the device splits
//! it at [`Target::max_io_len`]), so each one goes to one stripe;
//! discards, write zeroes and secure erases are split at the chunks too
//! (dm sends one per stripe, each covering that stripe's part).

use crate::kx::block::{BdevFile, Bio, IoHints};
use crate::kx::wait::EventCounter;
use crate::rdm_core::striped::{parse_striped, StripeGeometry};
use crate::rdm_core::table::{OpSupport, TargetOps};
use crate::target::{
    open_device, write_dev, CloneHook, CountedBio, Ctx, EndHook, Io, Target, TargetTypes,
};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::prelude::*;
use kernel::sync::Arc;

const TY: &str = "striped";

/// After this many failed I/Os on one stripe, no more events are raised
/// for it (dm-stripe's `DM_IO_ERROR_THRESHOLD`).
const ERROR_EVENT_LIMIT: u32 = 15;

/// One stripe: its device and where its area starts there.
struct Stripe {
    dev: Arc<BdevFile>,
    start: u64,
}

/// What a stripe's I/O completions report: failed I/Os per stripe (the
/// status shows `D` for a stripe that had any) and the device's event
/// number. Shared with the clones' end hooks.
pub(crate) struct StripeErrors {
    counts: KVec<AtomicU32>,
    events: Arc<EventCounter>,
}

impl StripeErrors {
    /// A clone sent to stripe `stripe` ended; `failed` if with an error.
    /// Any context: an atomic increment and, for the first failures, an
    /// event (dm-stripe raises it from a work item; rdm's event number
    /// may be bumped from interrupt context).
    pub(crate) fn ended(&self, stripe: u32, failed: bool) {
        if !failed {
            return;
        }
        if let Some(count) = self.counts.get(stripe as usize) {
            if count.fetch_add(1, Ordering::AcqRel) + 1 < ERROR_EVENT_LIMIT {
                self.events.bump();
            }
        }
    }
}

impl CloneHook for StripeErrors {
    /// A clone sent to stripe `word` ended: a failure is counted against
    /// that stripe; "would block" (a `REQ_NOWAIT` bio that would have had
    /// to wait, retried by its submitter) is not a failure of the device
    /// (dm-stripe counts it).
    fn clone_ended(self: Arc<Self>, word: u64, done: CountedBio) {
        self.ended(word as u32, done.failed() && !done.would_block());
        // Not the last reference: `done` still counts the table, whose
        // target holds the counts.
        drop(self);
        done.end(false);
    }
}

/// Adds the `striped` type to `types`.
pub(crate) fn register(types: &mut TargetTypes) -> Result {
    types.add(
        TY,
        [1, 6, 0],
        Arc::new(
            |ctx: &Ctx<'_>, p: &[u8]| -> Result<Arc<dyn Target>> {
                Ok(Arc::new(Striped::new(ctx, p)?, GFP_KERNEL)?)
            },
            GFP_KERNEL,
        )?,
    )
}

/// `striped <#stripes> <chunk size> <device> <offset>...`.
pub(crate) struct Striped {
    geom: StripeGeometry,
    stripes: KVec<Stripe>,
    errors: Arc<StripeErrors>,
}

impl Striped {
    pub(crate) fn new(ctx: &Ctx<'_>, params: &[u8]) -> Result<Self> {
        let args = parse_striped(params, ctx.len)
            .map_err(|e| ctx.fail(TY, format_args!("{e}"), EINVAL))?;
        let geom = args.geom;
        let n = geom.stripes() as usize;
        let mut stripes = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut counts = KVec::with_capacity(n, GFP_KERNEL)?;
        let width = geom.width();
        for (index, (spec, start)) in args.destinations().enumerate() {
            let dev = open_device(ctx, TY, spec)?;
            let size = dev.nr_sectors();
            let (ma, mi) = crate::rdm_core::dm_ioctl::decode_dev(dev.devt());
            // A device of size 0 (no live table yet) is not checked, as dm.
            if size != 0 && start.checked_add(width).map_or(true, |end| end > size) {
                return Err(ctx.fail(
                    TY,
                    format_args!(
                        "stripe {index}: device {ma}:{mi} is too small: sectors {start}+{width} past its end {size}"
                    ),
                    EINVAL,
                ));
            }
            // Every I/O is split at the chunks, so a chunk must be whole
            // blocks of each device (dm does not check this, and a chunk
            // smaller than a block then fails I/O instead of the load).
            let lbs = u64::from(dev.logical_block_size() >> 9).max(1);
            if start % lbs != 0 || u64::from(geom.chunk()) % lbs != 0 {
                return Err(ctx.fail(
                    TY,
                    format_args!(
                        "stripe {index}: offset {start} and chunk size {} must be multiples of device {ma}:{mi}'s {lbs}-sector logical block",
                        geom.chunk()
                    ),
                    EINVAL,
                ));
            }
            stripes.push(Stripe { dev, start }, GFP_KERNEL)?;
            counts.push(AtomicU32::new(0), GFP_KERNEL)?;
        }
        let errors = Arc::new(
            StripeErrors {
                counts,
                events: ctx.events.clone(),
            },
            GFP_KERNEL,
        )?;
        Ok(Striped {
            geom,
            stripes,
            errors,
        })
    }
}

impl Target for Striped {
    fn map(&self, mut bio: Bio, offset: u64, io: Io<'_>) {
        let (index, at) = self.geom.map(offset);
        let Some(stripe) = self.stripes.get(index as usize) else {
            // Cannot happen: the geometry maps inside its stripes.
            io.end(bio, true);
            return;
        };
        bio.set_sector(stripe.start + at);
        let hook = EndHook::new(self.errors.clone(), u64::from(index));
        if let Some(clone) = io.clone_bio(bio, Some(&stripe.dev), hook) {
            clone.submit();
        }
    }

    fn max_io_len(&self, offset: u64) -> Option<u64> {
        Some(self.geom.chunk_left(offset))
    }

    /// `<#stripes> <device>... 1 <A|D per stripe>` (dm-stripe's INFO:
    /// `D` for a stripe that had a failed I/O).
    fn status(&self, out: &mut dyn Write) -> fmt::Result {
        write!(out, "{} ", self.geom.stripes())?;
        for s in self.stripes.iter() {
            write_dev(out, &s.dev)?;
            out.write_char(' ')?;
        }
        out.write_str("1 ")?;
        for count in self.errors.counts.iter() {
            let failed = count.load(Ordering::Acquire) != 0;
            out.write_char(if failed { 'D' } else { 'A' })?;
        }
        Ok(())
    }

    fn table(&self, out: &mut dyn Write) -> fmt::Result {
        write!(out, "{} {}", self.geom.stripes(), self.geom.chunk())?;
        for s in self.stripes.iter() {
            out.write_char(' ')?;
            write_dev(out, &s.dev)?;
            write!(out, " {}", s.start)?;
        }
        Ok(())
    }

    fn devices(&self, f: &mut dyn FnMut(&Arc<BdevFile>, u64)) {
        for s in self.stripes.iter() {
            f(&s.dev, s.start);
        }
    }

    /// As dm-stripe's `io_hints`: the chunk is the boundary and the
    /// minimum I/O, a full stripe (a chunk on every device) the optimal
    /// one.
    /// (Neither size is given if either overflows, as dm.)
    fn io_hints(&self) -> Option<IoHints> {
        let chunk = self.geom.chunk();
        let (io_min, io_opt) = chunk
            .checked_mul(512)
            .and_then(|min| Some((min, min.checked_mul(self.geom.stripes())?)))
            .unwrap_or((0, 0));
        Some(IoHints {
            chunk_sectors: chunk,
            io_min,
            io_opt,
        })
    }

    /// Discards, write zeroes and secure erases go to the stripes (each
    /// piece, split at the chunks, to its own), offered only if every
    /// stripe's device offers them.
    fn ops(&self) -> TargetOps {
        TargetOps {
            discard: OpSupport::PassDown,
            write_zeroes: OpSupport::PassDown,
            secure_erase: OpSupport::PassDown,
        }
    }

    /// It only remaps (the error count of its end hook takes no lock that
    /// waits), as dm's striped (`DM_TARGET_NOWAIT`).
    fn supports_nowait(&self) -> bool {
        true
    }
}
