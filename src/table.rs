// SPDX-License-Identifier: GPL-2.0

//! Tables: a device's ordered list of targets, built from a `DM_TABLE_LOAD`
//! buffer and immutable afterwards. A table counts the bios in flight on it
//! so that suspend can wait for them and it is never freed under I/O.

use crate::kx::block::{BdevFile, Limits};
use crate::kx::wait::{Drained, EventCounter};
use crate::rdm_core::dm_ioctl::Header;
use crate::rdm_core::payload::LoadSpecs;
use crate::rdm_core::table::{
    check_block_alignment, check_layout, table_ops, DeviceOps, OpSupport, TargetBlock,
};
use crate::target::{BStr, Ctx, Place, Target, TargetTypes};
use core::num::NonZeroU64;
use kernel::c_str;
use kernel::prelude::*;
use kernel::sync::Arc;

/// One line of a table.
pub(crate) struct Entry {
    pub(crate) start: u64,
    pub(crate) len: u64,
    /// The target type's name.
    pub(crate) ty: &'static str,
    pub(crate) target: Arc<dyn Target>,
}

/// A table as devices hold it: bios in flight on it are counted in the
/// [`Drained`] wrapper (suspend waits for them; it is never freed under
/// them).
pub(crate) type TableArc = Arc<Drained<Table>>;

/// What a table load needs besides the request.
pub(crate) struct LoadCtx<'a> {
    /// The mapped device's name (for log lines).
    pub(crate) name: &'a [u8],
    /// Open underlying devices read-only.
    pub(crate) read_only: bool,
    /// The target types (their constructors).
    pub(crate) types: &'a TargetTypes,
    /// The device's event number, for targets that raise events.
    pub(crate) events: &'a Arc<EventCounter>,
}

/// A loaded table.
pub(crate) struct Table {
    pub(crate) entries: KVec<Entry>,
    /// Total length in sectors.
    pub(crate) size: u64,
    /// The underlying devices, each once.
    pub(crate) devices: KVec<Arc<BdevFile>>,
    /// Whether the table was loaded for a read-only device.
    pub(crate) read_only: bool,
}

impl Table {
    /// Whether a flush with data needs no empty flushes besides: one
    /// target on one device (`linear`, `snapshot-origin`), whose clone of
    /// the data carries `REQ_PREFLUSH` to that device itself. Otherwise
    /// an earlier write may sit on a device the data does not go to.
    /// (Sending both would order a second flush behind the first on the
    /// same device: one more round trip on every commit of a journal or
    /// a snapshot's metadata.)
    pub(crate) fn data_carries_flush(&self) -> bool {
        self.entries.len() == 1 && self.devices.len() == 1
    }

    /// Builds a table from a `DM_TABLE_LOAD` request (`buf` is the whole
    /// request). Opens the underlying devices; holds no lock.
    pub(crate) fn build(load: &LoadCtx<'_>, header: &Header, buf: &[u8]) -> Result<TableArc> {
        let name = load.name;
        let read_only = load.read_only;
        let specs = || LoadSpecs::new(buf, header.data_start, header.target_count);
        let bad = |what: core::fmt::Arguments<'_>| {
            pr_err!("{}: table load: {}\n", BStr(name), what);
            EINVAL
        };
        specs().validate().map_err(|e| bad(format_args!("{e}")))?;
        // `validate` passed, so every spec decodes.
        let size = check_layout(specs().flatten().map(|s| (s.start, s.length)))
            .map_err(|e| bad(format_args!("{e}")))?;
        let mut entries = KVec::with_capacity(header.target_count as usize, GFP_KERNEL)?;
        let mut devices: KVec<Arc<BdevFile>> = KVec::new();
        for (index, spec) in specs().flatten().enumerate() {
            let index = index as u32;
            let ty = load.types.find(spec.target_type).ok_or_else(|| {
                bad(format_args!(
                    "target {index}: unknown target type \"{}\"",
                    BStr(spec.target_type)
                ))
            })?;
            let ctx = Ctx {
                name,
                place: Place::Index(index),
                len: spec.length,
                read_only,
                events: load.events,
                opener: None,
            };
            let target = ty.construct(&ctx, spec.params)?;
            let mut pushed = Ok(());
            target.devices(&mut |dev, _| {
                if pushed.is_ok() && !devices.iter().any(|d| d.devt() == dev.devt()) {
                    pushed = devices.push(dev.clone(), GFP_KERNEL);
                }
            });
            pushed?;
            entries.push(
                Entry {
                    start: spec.start,
                    len: spec.length,
                    ty: ty.name,
                    target,
                },
                GFP_KERNEL,
            )?;
        }
        Self::check_blocks(name, &entries, &devices)?;
        Ok(Arc::new(
            Drained::new(Table {
                entries,
                size,
                devices,
                read_only,
            }),
            GFP_KERNEL,
        )?)
    }

    /// Checks every target against the logical block sizes of its devices
    /// and of the table, as dm does when it computes the limits of a table
    /// (`device_area_is_invalid`, `validate_hardware_logical_block_alignment`):
    /// a target's start on each of its devices and its length must be
    /// whole blocks of its devices, and an I/O of whole blocks of the table
    /// (the largest block of all its devices) must never leave a target a
    /// part smaller than its own block.
    fn check_blocks(name: &[u8], entries: &[Entry], devices: &[Arc<BdevFile>]) -> Result {
        // In sectors; 1 for a target without devices.
        let block_of = |e: &Entry| {
            let mut block = NonZeroU64::MIN;
            e.target.devices(&mut |dev, _| {
                if let Some(b) = NonZeroU64::new(u64::from(dev.logical_block_size() >> 9)) {
                    block = block.max(b);
                }
            });
            block
        };
        for (index, e) in entries.iter().enumerate() {
            let block = block_of(e);
            let mut bad = None;
            e.target.devices(&mut |dev, offset| {
                if bad.is_none() && (offset % block != 0 || e.len % block != 0) {
                    bad = Some((dev.devt(), offset));
                }
            });
            if let Some((devt, offset)) = bad {
                let (ma, mi) = crate::rdm_core::dm_ioctl::decode_dev(devt);
                pr_err!(
                    "{}: table load: target {index} ({}): start {offset} on device {ma}:{mi} or length {} is not aligned to the logical block size of its devices ({} bytes)\n",
                    BStr(name),
                    e.ty,
                    e.len,
                    block.get() * 512
                );
                return Err(EINVAL);
            }
        }
        let table_block = devices
            .iter()
            .map(|d| u64::from(d.logical_block_size() >> 9).max(1))
            .max()
            .unwrap_or(1);
        let targets = entries.iter().map(|e| TargetBlock {
            len: e.len,
            block: block_of(e).get(),
        });
        check_block_alignment(table_block, targets).map_err(|err| {
            let ty = entries.get(err.index as usize).map_or("", |e| e.ty);
            pr_err!("{}: table load: {err} ({ty})\n", BStr(name));
            EINVAL
        })
    }

    /// The entry mapping `sector` (binary search; the entries tile the table).
    pub(crate) fn find(&self, sector: u64) -> Option<&Entry> {
        let i = self.entries.partition_point(|e| e.start <= sector);
        let e = self.entries.get(i.checked_sub(1)?)?;
        (sector < e.start + e.len).then_some(e)
    }

    /// Queue limits stacked from every underlying device and the targets'
    /// I/O hints (a striped target's chunk and stripe sizes), offering
    /// discard, write zeroes and secure erase only as [`Table::ops`] says,
    /// and `REQ_NOWAIT` bios only if every target and device takes them.
    pub(crate) fn limits(&self) -> Limits {
        let mut lim = Limits::stacking();
        // Offered before the devices are stacked, which take it away
        // unless every one of them offers it too (dm's
        // `dm_table_supports_nowait`).
        if self.entries.iter().all(|e| e.target.supports_nowait()) {
            lim.offer_nowait();
        }
        for e in self.entries.iter() {
            let target = &*e.target;
            target.devices(&mut |dev, offset| lim.stack(dev, offset, c_str!("rdm")));
            if let Some(hints) = target.io_hints() {
                lim.add_io_hints(hints);
            }
            if target.ops().discard == OpSupport::Own {
                lim.allow_discard();
            }
        }
        let ops = self.ops();
        if !ops.discard {
            lim.clear_discard();
        }
        if !ops.write_zeroes {
            lim.clear_write_zeroes();
        }
        if !ops.secure_erase {
            lim.clear_secure_erase();
        }
        lim
    }

    /// The optional operations the table offers: each only if every
    /// target supports it, and every device of a target that passes it on
    /// offers it (dm's `dm_table_supports_discards()` and siblings).
    pub(crate) fn ops(&self) -> DeviceOps {
        table_ops(self.entries.iter().map(|e| {
            let target = &*e.target;
            // What every device of the target offers.
            let mut all = DeviceOps::ALL;
            target.devices(&mut |dev, _| {
                all.discard &= dev.max_discard_sectors() > 0;
                all.write_zeroes &= dev.max_write_zeroes_sectors() > 0;
                all.secure_erase &= dev.max_secure_erase_sectors() > 0;
            });
            (target.ops(), [all])
        }))
    }
}
