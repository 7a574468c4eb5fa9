// SPDX-License-Identifier: GPL-2.0

//! The dm host (rdm-dm.ko): rdm's snapshot targets as target types of the
//! kernel's own device-mapper.
//!
//! The targets are the same as in rdm.ko (`snapshot::targets`, built by
//! the same constructors from the same table lines); only what is around
//! them differs:
//! - dm hands each bio (already its own clone) to [`Hosted::map`], which
//!   maps it through the target with an [`Io`] over this module's bio set,
//!   exactly as rdm's device layer does: the bio dm handed over is the
//!   "original" the target clones, holds or ends, and dm counts it in
//!   flight until it ends (suspend waits for it);
//! - each target is [`Drained`]: its clones and held bios count on it, and
//!   its destructor waits for them (dm's remove does not wait for bios in
//!   flight before it destroys the table, rdm's engine needs its target
//!   until the last of them ends);
//! - devices are opened through `dm_get_device` (dm lists, claims and
//!   stacks them) instead of by rdm;
//! - events go to dm (`dm_table_event` on the mapped device) instead of
//!   to rdm's device's event number.

use crate::kx::block::{BdevFile, Bio, BioSet};
use crate::kx::wait::{DrainToken, Drained, EventCounter};
use crate::kx_dm::{DmConstructor, DmTarget, TargetCtx, TypeRegistration};
use crate::target::{refuses, BStr, CloneData, Ctx, Io, OpenDevice, Place, Target, TargetTypes};
use core::fmt::{self, Write};
use kernel::prelude::*;
use kernel::str::CStr;
use kernel::sync::Arc;

/// What a target type of rdm is called in dm: by default a name of its
/// own (dm-snapshot may be loaded beside it; dm allows at most 15
/// characters, hence `rdm-snap-origin`), with `dm_names=1` dm-snapshot's
/// (unmodified LVM2 then uses rdm's engine).
struct TypeNames {
    rdm: &'static str,
    own: &'static CStr,
    dm: &'static CStr,
}

const NAMES: [TypeNames; 3] = [
    TypeNames {
        rdm: "snapshot-origin",
        own: kernel::c_str!("rdm-snap-origin"),
        dm: kernel::c_str!("snapshot-origin"),
    },
    TypeNames {
        rdm: "snapshot",
        own: kernel::c_str!("rdm-snapshot"),
        dm: kernel::c_str!("snapshot"),
    },
    TypeNames {
        rdm: "snapshot-merge",
        own: kernel::c_str!("rdm-snap-merge"),
        dm: kernel::c_str!("snapshot-merge"),
    },
];

/// Registers every type of `types` (the snapshot targets) with dm, under
/// dm-snapshot's names if `dm_names`. A type dm already has (dm-snapshot
/// loaded) fails the whole registration, with a log line; the types
/// registered before it are unregistered when the vector drops.
pub(crate) fn register(types: TargetTypes, dm_names: bool) -> Result<KVec<TypeRegistration>> {
    let types = Arc::new(types, GFP_KERNEL)?;
    let bioset = Arc::pin_init(BioSet::new(16), GFP_KERNEL)?;
    let mut regs = KVec::new();
    for (index, ty) in types.iter().enumerate() {
        let names = NAMES.iter().find(|n| n.rdm == ty.name).ok_or(EINVAL)?;
        let name = if dm_names { names.dm } else { names.own };
        let ctor = Arc::new(
            Ctor {
                types: types.clone(),
                index,
                bioset: bioset.clone(),
            },
            GFP_KERNEL,
        )?;
        let reg = TypeRegistration::new(index as u32, name, ty.version, ctor).inspect_err(|&e| {
            if e == EBUSY {
                pr_err!(
                    "cannot register target type {}: device-mapper has one of that name (is dm-snapshot loaded?)\n",
                    name.to_str().unwrap_or("?")
                );
            } else {
                pr_err!(
                    "cannot register target type {} (errno {})\n",
                    name.to_str().unwrap_or("?"),
                    -e.to_errno()
                );
            }
        })?;
        regs.push(reg, GFP_KERNEL)?;
    }
    Ok(regs)
}

/// Builds the targets of one rdm type for dm.
struct Ctor {
    types: Arc<TargetTypes>,
    index: usize,
    bioset: Arc<BioSet<CloneData>>,
}

/// Opens devices through dm for the target being built.
struct DmOpener<'a, 'b>(&'a TargetCtx<'b>);

impl OpenDevice for DmOpener<'_, '_> {
    fn open(&self, path: &CStr) -> Result<BdevFile> {
        self.0.get_device(path)
    }
}

impl DmConstructor for Ctor {
    fn construct(&self, ti: &TargetCtx<'_>, params: &[u8]) -> Result<Arc<dyn DmTarget>> {
        let ty = self.types.iter().nth(self.index).ok_or(EINVAL)?;
        let events = Arc::new(
            EventCounter::with_parent(Arc::new(ti.events(), GFP_KERNEL)?),
            GFP_KERNEL,
        )?;
        let opener = DmOpener(ti);
        let ctx = Ctx {
            name: ti.device_name().as_bytes(),
            place: Place::Sector(ti.begin()),
            len: ti.len(),
            read_only: ti.read_only(),
            events: &events,
            opener: Some(&opener),
        };
        let target = ty.construct(&ctx, params)?;
        // A snapshot's chunk (fixed for the target's life): dm splits bios
        // at chunk boundaries, as rdm's device layer does.
        if let Some(sectors) = target.max_io_len(0) {
            ti.set_max_io_len(sectors)?;
        }
        let hosted = Hosted {
            target,
            bioset: self.bioset.clone(),
        };
        Ok(Arc::new(
            HostedTarget(Arc::new(Drained::new(hosted), GFP_KERNEL)?),
            GFP_KERNEL,
        )?)
    }
}

/// A target built for dm, and the bio set its clones come from.
struct Hosted {
    target: Arc<dyn Target>,
    bioset: Arc<BioSet<CloneData>>,
}

/// A [`Hosted`] target whose bios in flight in rdm are counted: dropping
/// it (dm's destructor) waits for them.
struct HostedTarget(Arc<Drained<Hosted>>);

impl Drop for HostedTarget {
    fn drop(&mut self) {
        // dm's destructor: the target goes only once the last of its bios
        // in rdm (a clone, a write held for a copy) has ended. They end
        // without this thread (copies finish on their own).
        self.0.count().wait_zero();
    }
}

impl DmTarget for HostedTarget {
    fn map(&self, bio: Bio, offset: u64) {
        let hosted = &self.0;
        let io = Io::new(DrainToken::new(hosted.as_arc_borrow()), &hosted.bioset);
        // dm refuses what a target takes no bios for (discards...); zone
        // operations and the like are refused here, as rdm's own host does.
        if refuses(&*hosted.target, bio.op()) {
            io.end_unsupported(bio);
            return;
        }
        hosted.target.map(bio, offset, io);
    }

    fn status(&self, out: &mut dyn Write) -> fmt::Result {
        self.0.target.status(out)
    }

    fn table(&self, out: &mut dyn Write) -> fmt::Result {
        self.0.target.table(out)
    }

    fn message(&self, msg: &[u8], out: &mut dyn Write) -> Option<Result> {
        let r = self.0.target.message(msg, out);
        if r.is_none() {
            let first = msg.split(|b| *b == b' ').next().unwrap_or(&[]);
            pr_err!("target does not accept message \"{}\"\n", BStr(first));
        }
        r
    }

    fn presuspend(&self) {
        self.0.target.presuspend();
    }

    fn resume(&self) {
        self.0.target.resume();
    }
}
