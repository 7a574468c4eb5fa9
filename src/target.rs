// SPDX-License-Identifier: GPL-2.0

//! The target API: what the mapped-device layer and the targets share, and
//! nothing else. The device layer (`device.rs`, `table.rs`) is above it and
//! knows targets only as `dyn` [`Target`]; the targets (`basic.rs`,
//! `striped.rs`, `snapshot/targets.rs`) are beside it and reach the device
//! only through the map-time handle [`Io`] and the clone-end hook
//! [`EndHook`]. It holds:
//!
//! - the [`Target`] trait, and [`refuses`] (the optional operations);
//! - [`Io`], what a target may do to a bio it maps: remap it, clone it with
//!   an end hook, or end it (a target that holds a bio clones it or ends
//!   it later);
//! - [`EndHook`]/[`CloneHook`], run when a clone ends, with the target's
//!   bio as a [`CountedBio`]; [`CloneData`] is what the device's bio set
//!   keeps per clone;
//! - the build side: [`Ctx`] (where a target is being built),
//!   [`TargetType`] and [`TargetTypes`] (the constructors, assembled once
//!   in `rdm_main.rs`: the snapshot targets' constructors hold the
//!   snapshot registry), and helpers to open and print devices.
//!
//! The same API serves the second host, rdm-dm.ko (`dmhost.rs`), whose
//! device layer is the kernel's dm: it differs only in what [`Ctx`] says
//! (where the target is, how devices are opened) and in what the event
//! counter it hands the targets forwards to.

use crate::kx::block::{BdevFile, Bio, BioOp, BioSet, CloneEnd, IoHints};
use crate::kx::wait::{DrainToken, EventCounter};
use crate::rdm_core::table::{ArgError, DevSpec, OptionalOp, TargetOps};
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

    /// Whether [`Target::map`] never sleeps for a `REQ_NOWAIT` bio (dm's
    /// `DM_TARGET_NOWAIT`): it only remaps, or ends the bio. A table of
    /// such targets only offers `BLK_FEAT_NOWAIT` (io_uring then submits
    /// inline instead of from a worker thread); a target that may wait
    /// for a copy or a lock (the snapshot targets) does not.
    fn supports_nowait(&self) -> bool {
        false
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
    /// Where the target is in its table (for log lines).
    pub(crate) place: Place,
    /// Its length in sectors.
    pub(crate) len: u64,
    /// Open underlying devices read-only.
    pub(crate) read_only: bool,
    /// The device's event number.
    pub(crate) events: &'a Arc<EventCounter>,
    /// How underlying devices are opened: by rdm itself (`None`), or by
    /// the host the target is built in (rdm-dm: the kernel's dm).
    pub(crate) opener: Option<&'a dyn OpenDevice>,
}

/// Where a target is in its table.
#[derive(Clone, Copy)]
pub(crate) enum Place {
    /// Its index (rdm's own tables).
    Index(u32),
    /// Its first sector (dm's tables, which do not tell the index).
    #[allow(dead_code, reason = "built only by rdm-dm's host, src/dmhost.rs")]
    Sector(u64),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Place::Index(i) => write!(f, "target {i}"),
            Place::Sector(s) => write!(f, "target at sector {s}"),
        }
    }
}

/// Opens underlying devices for targets built by another host than rdm's
/// own (rdm-dm: through `dm_get_device`, so that dm lists, claims and
/// stacks them).
pub(crate) trait OpenDevice {
    /// Opens the device `path` (`major:minor` or a path).
    fn open(&self, path: &kernel::str::CStr) -> Result<BdevFile>;
}

impl Ctx<'_> {
    /// Logs why the target was refused and returns `err`.
    pub(crate) fn fail(&self, ty: &str, why: fmt::Arguments<'_>, err: Error) -> Error {
        pr_err!("{}: {} ({}): {}\n", BStr(self.name), self.place, ty, why);
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
    let file = match (spec, ctx.opener) {
        (_, Some(opener)) => {
            let path = CString::try_from_fmt(kernel::fmt!("{}", SpecName(spec)))?;
            opener.open(&path)
        }
        (DevSpec::Number(major, minor), None) => BdevFile::open_dev(
            crate::rdm_core::dm_ioctl::encode_dev(major, minor),
            !ctx.read_only,
        ),
        (DevSpec::Path(path), None) => {
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

/// A hook run when a clone made by a target ends.
///
/// Completion context (may be hard IRQ): may not sleep, and drops nothing
/// whose destructor sleeps.
pub(crate) trait CloneHook: Send + Sync {
    /// The clone of `done` ended; `word` is what the target stored with the
    /// hook ([`EndHook::new`]: a chunk, a stripe). Ends `done`, at once or
    /// later (it keeps its table, and so the target, alive until then):
    /// `self` must be dropped before `done` is ended, or it could be the
    /// last reference to what the target holds.
    fn clone_ended(self: Arc<Self>, word: u64, done: CountedBio);
}

/// What to do when a clone ends: nothing but end the target's bio, or run
/// a [`CloneHook`] with a word the target chose.
pub(crate) struct EndHook(Option<(Arc<dyn CloneHook>, u64)>);

impl EndHook {
    /// End the target's bio with its clone's status.
    pub(crate) const NONE: EndHook = EndHook(None);

    /// Run `hook` with `word`.
    pub(crate) fn new(hook: Arc<dyn CloneHook>, word: u64) -> Self {
        EndHook(Some((hook, word)))
    }

    /// Runs the hook for the target's bio `done`, whose clone ended.
    fn run(self, done: CountedBio) {
        match self.0 {
            None => done.end(false),
            Some((hook, word)) => hook.clone_ended(word, done),
        }
    }
}

/// Per-clone data: what the target wants done when the clone ends, and the
/// count on the table the bio was mapped through, which keeps the table
/// (and its targets) alive until the clone completes.
pub(crate) struct CloneData {
    hook: EndHook,
    table: DrainToken,
}

impl CloneData {
    /// Data for a clone that only ends its bio, counted on `table`.
    pub(crate) fn plain(table: DrainToken) -> Self {
        CloneData {
            hook: EndHook::NONE,
            table,
        }
    }
}

impl CloneEnd for CloneData {
    fn end(self, orig: Bio) {
        let CloneData { hook, table } = self;
        hook.run(CountedBio { bio: orig, table });
    }
}

/// A bio a target was handed, whose clone has ended, with the count it
/// holds on the table it was mapped through: a clone-end hook ends it at
/// once, or keeps it until what it waits for is done (a whole-chunk
/// snapshot write is acknowledged only once its exception is committed).
/// While it is kept, suspend and teardown of its device wait for it.
pub(crate) struct CountedBio {
    bio: Bio,
    table: DrainToken,
}

impl CountedBio {
    /// Whether the bio has failed (its clone's error was copied into it).
    pub(crate) fn failed(&self) -> bool {
        self.bio.failed()
    }

    /// Whether it ended "would block" (a `REQ_NOWAIT` bio that could not
    /// be served without waiting): not a failure of the device.
    pub(crate) fn would_block(&self) -> bool {
        self.bio.would_block()
    }

    /// Ends the bio (with an error if `error`, or if it failed already),
    /// then drops its table count. Any context.
    pub(crate) fn end(self, error: bool) {
        let CountedBio { bio, table } = self;
        bio.end(error);
        // Last: after this the table may go.
        drop(table);
    }
}

/// A bio being mapped: a target gets it with the bio and must use it once
/// (remap, clone, or end), which hands the table count on to the clone or
/// drops it.
pub(crate) struct Io<'a> {
    table: DrainToken,
    bioset: &'a BioSet<CloneData>,
}

impl<'a> Io<'a> {
    /// The handle for one bio counted on a table (`table`), cloned from
    /// `bioset`: made by a host only (rdm's device layer, or rdm-dm's
    /// `dmhost.rs`, where `table` counts on the hosted target).
    pub(crate) fn new(table: DrainToken, bioset: &'a BioSet<CloneData>) -> Self {
        Io { table, bioset }
    }

    /// Sends `bio` (already moved to its sector) to `dev`.
    pub(crate) fn remap(self, bio: Bio, dev: &BdevFile) {
        if let Some(clone) = self.clone_bio(bio, Some(dev), EndHook::NONE) {
            clone.submit();
        }
    }

    /// Clones `bio` (for `dev`, or still for this device when `None`, to be
    /// pointed somewhere before it is submitted) with `hook` to run when it
    /// ends. The clone carries the table count. If no clone can be had,
    /// the bio fails (and the hook runs as for a failed clone).
    pub(crate) fn clone_bio(self, bio: Bio, dev: Option<&BdevFile>, hook: EndHook) -> Option<Bio> {
        let data = CloneData {
            hook,
            table: self.table,
        };
        match self.bioset.clone_bio(bio, dev, data) {
            Ok(clone) => Some(clone),
            Err((mut bio, data)) => {
                // Ends as a clone that failed: the hook sees the error. Only
                // a REQ_NOWAIT bio's clone fails (the pool was empty): its
                // submitter retries where it may wait.
                if bio.is_nowait() {
                    bio.set_would_block();
                } else {
                    bio.set_failed();
                }
                data.end(bio);
                None
            }
        }
    }

    /// Ends `bio` without sending it anywhere.
    pub(crate) fn end(self, bio: Bio, error: bool) {
        bio.end(error);
    }

    /// Ends `bio` with EOPNOTSUPP: the target does not do its operation.
    pub(crate) fn end_unsupported(self, bio: Bio) {
        bio.end_unsupported();
    }
}

/// Builds targets of one type from their table-line parameters.
pub(crate) type Constructor = dyn Fn(&Ctx<'_>, &[u8]) -> Result<Arc<dyn Target>> + Send + Sync;

/// A target type: name, version, constructor.
pub(crate) struct TargetType {
    pub(crate) name: &'static str,
    pub(crate) version: [u32; 3],
    ctr: Arc<Constructor>,
}

impl TargetType {
    /// Builds a target from its table-line parameters.
    pub(crate) fn construct(&self, ctx: &Ctx<'_>, params: &[u8]) -> Result<Arc<dyn Target>> {
        (self.ctr)(ctx, params)
    }
}

/// Every target type rdm has, in the order `DM_LIST_VERSIONS` reports
/// them: built once, at module load (`rdm_main.rs`), and read-only after.
pub(crate) struct TargetTypes(KVec<TargetType>);

impl TargetTypes {
    /// No types yet.
    pub(crate) fn new() -> Self {
        TargetTypes(KVec::new())
    }

    /// Adds the type `name` (dm's `version` for the same behaviour), built
    /// by `ctr`.
    pub(crate) fn add(
        &mut self,
        name: &'static str,
        version: [u32; 3],
        ctr: Arc<Constructor>,
    ) -> Result {
        self.0.push(TargetType { name, version, ctr }, GFP_KERNEL)?;
        Ok(())
    }

    /// The target type called `name`.
    pub(crate) fn find(&self, name: &[u8]) -> Option<&TargetType> {
        self.0.iter().find(|t| t.name.as_bytes() == name)
    }

    /// Every type, in the order they were added.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &TargetType> {
        self.0.iter()
    }
}
