// SPDX-License-Identifier: GPL-2.0

//! Exception stores: where a snapshot's COW chunks come from and how its
//! exceptions are kept, in the spirit of `dm-exception-store.h`.
//!
//! The store allocates, accounts and (persistent) records; the exception
//! table in memory is the snapshot's (see `mod.rs`).
//!
//! - [`Transient`] (`N`): chunks are handed out from the start of the COW
//!   device and nothing is kept on disk.
//! - [`Persistent`] (`P`, `PO`): dm-snapshot's on-disk format
//!   (`rdm_core::persistent`). Opening one reads the header and every
//!   metadata area (in batches of areas in flight at once) before the
//!   snapshot is registered, so the reading holds no lock. The copier
//!   stages each completed copy ([`Persistent::stage`]) and drives one
//!   commit at a time per store ([`Persistent::drive_commit`]): the staged
//!   entries that extend the committed prefix go out in one metadata write
//!   (FLUSH+FUA), asynchronously — copies go on meanwhile, and whatever
//!   they stage goes out in the next commit. Entries are committed in
//!   allocation order, so the list on disk is always a prefix of the
//!   allocations. A merge takes entries off the end of the list
//!   ([`Persistent::merge_read`], [`Persistent::merge_cut`]: dm's
//!   `prepare_merge`/`commit_merge`, many at once).

use crate::kx::block::{page_io_sync, submit_page_io, BdevFile, PageBuf, PageIo};
use crate::rdm_core::exception_table::InsertError;
use crate::rdm_core::lifecycle::{AtomicState, CommitStage, Invalidation};
use crate::rdm_core::persistent::{
    self, decode_header, encode_header, merge_cut, Appender, CommitPlan, FormatError, Layout,
    Loader, Position, DEFAULT_CHUNK_SECTORS, HEADER_BYTES,
};
use crate::rdm_core::snapshot::{
    transient_allocate, ChunkGeometry, NoRoom, SnapshotError, StoreKind,
};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use kernel::prelude::*;
use kernel::rbtree::RBTree;
use kernel::sync::{Arc, Mutex, SpinLock};
use kernel::{new_mutex, new_spinlock};

/// A new exception's COW chunk, and (persistent) its entry's position (0
/// for the transient store).
pub(crate) use crate::rdm_core::persistent::Place;

/// A snapshot's exception store.
pub(crate) enum Store {
    Transient(Transient),
    Persistent(Pin<KBox<Persistent>>),
}

impl Store {
    /// Takes a free COW chunk for a new exception, or says why there is
    /// none: the COW device is full, or it shrank below the chunks in use.
    /// The COW device's size is read now (it may have grown). Never
    /// sleeps (called under spinlocks).
    pub(crate) fn prepare_exception(&self) -> Result<Place, NoRoom> {
        match self {
            Store::Transient(t) => t
                .prepare_exception()
                .map(|new_chunk| Place { pos: 0, new_chunk }),
            Store::Persistent(p) => p.prepare_exception(),
        }
    }

    /// The store's letter(s) in the table line.
    pub(crate) fn kind(&self) -> StoreKind {
        match self {
            Store::Transient(_) => StoreKind::Transient,
            Store::Persistent(p) if p.overflow == Overflow::Fails => StoreKind::PersistentOverflow,
            Store::Persistent(_) => StoreKind::Persistent,
        }
    }

    /// The persistent store, if this is one.
    pub(crate) fn persistent(&self) -> Option<&Persistent> {
        match self {
            Store::Transient(_) => None,
            Store::Persistent(p) => Some(p),
        }
    }

    /// Status text of a valid snapshot: `<allocated>/<total> <metadata>`
    /// in sectors, as dm-snapshot prints it (the total is the COW
    /// device's size now).
    pub(crate) fn status(&self, out: &mut dyn Write) -> fmt::Result {
        let (allocated, total, metadata) = match self {
            Store::Transient(t) => t.usage(),
            Store::Persistent(p) => p.usage(),
        };
        write!(out, "{allocated}/{total} {metadata}")
    }
}

/// The transient store (dm-snap-transient.c): the next free chunk only.
pub(crate) struct Transient {
    geom: ChunkGeometry,
    /// First free sector of the COW device.
    next_free: AtomicU64,
    /// The COW device, sized at every allocation.
    cow: Arc<BdevFile>,
}

impl Transient {
    pub(crate) fn new(geom: ChunkGeometry, cow: Arc<BdevFile>) -> Self {
        Transient {
            geom,
            next_free: AtomicU64::new(0),
            cow,
        }
    }

    /// The smallest COW device the store can use: one chunk.
    pub(crate) fn min_cow_sectors(geom: ChunkGeometry) -> u64 {
        geom.sectors()
    }

    fn prepare_exception(&self) -> Result<u64, NoRoom> {
        let size = self.geom.sectors();
        let cow = self.cow.nr_sectors();
        let mut why = NoRoom::Full;
        self.next_free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |next| {
                transient_allocate(next, size, cow)
                    .map_err(|e| why = e)
                    .ok()
            })
            .map(|sector| self.geom.chunk_of(sector))
            .map_err(|_| why)
    }

    fn usage(&self) -> (u64, u64, u64) {
        (
            self.next_free.load(Ordering::Acquire),
            self.cow.nr_sectors(),
            0,
        )
    }
}

/// Why a persistent store could not be opened.
pub(crate) enum OpenError {
    /// The metadata on the device is bad (message for the log).
    Format(FormatError),
    /// The chunk size recorded on the device is not usable.
    DiskChunk(u32, SnapshotError),
    /// The table's chunk size is not the one on the device.
    ChunkMismatch { table: u32, disk: u32 },
    /// A chunk size for a new snapshot that cannot be used.
    TableChunk(SnapshotError),
    /// Reading or writing the device failed, or memory ran out.
    Errno(Error),
}

impl From<Error> for OpenError {
    fn from(e: Error) -> Self {
        OpenError::Errno(e)
    }
}

impl From<kernel::alloc::AllocError> for OpenError {
    fn from(_: kernel::alloc::AllocError) -> Self {
        OpenError::Errno(ENOMEM)
    }
}

impl From<FormatError> for OpenError {
    fn from(e: FormatError) -> Self {
        OpenError::Format(e)
    }
}

/// A persistent store read from its device.
pub(crate) struct Opened {
    pub(crate) store: Pin<KBox<Persistent>>,
    pub(crate) geom: ChunkGeometry,
    /// The header says the snapshot was invalidated.
    pub(crate) valid: bool,
    /// Exceptions read (each handed to the caller's `add`).
    pub(crate) exceptions: u64,
}

/// What the copier's commits work on (the copier thread only; opening
/// and dropping the store too). Never held across I/O.
struct Commit {
    /// Position of the first entry not committed.
    committed: u64,
    /// Completed copies not committed yet, by position: `(old, new)`.
    staged: RBTree<u64, (u64, u64)>,
    /// The image of the area `committed` falls in (its committed entries
    /// and zeros after them); `None` while a commit has it in flight.
    area: Option<PageBuf>,
    /// The commit whose writes are in flight.
    flight: Option<Flight>,
}

/// A commit whose metadata writes are in flight.
struct Flight {
    /// The committed prefix once it is done.
    to: u64,
    /// The area the committed prefix ends in now (written last).
    first_area: u64,
    /// The area `to` falls in (filled from then on).
    last_area: u64,
    /// The images of the areas after the current one, written first; the
    /// last one is the image the next commit fills.
    later: KVec<Arc<PageBuf>>,
    /// The current area's image, written last with FLUSH+FUA.
    current: Arc<PageBuf>,
}

/// What a snapshot write that finds the COW device full does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// `P`: the snapshot goes invalid (as any copy that finds no room).
    Invalidates,
    /// `PO`: the write fails, the snapshot stays valid (overflowed).
    Fails,
}

/// What [`Persistent::drive_commit`] may do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drive {
    /// Start a commit of the staged entries, and follow one in flight.
    Start,
    /// The snapshot is invalid: send no new write, only follow a commit in
    /// flight to its end.
    FollowOnly,
}

/// Told when a stage of a commit's writes has ended, as dm's
/// `commit_exception(store, e, valid, callback, context)` tells its caller
/// (the copier: it kicks its thread, which drives the commit on).
/// Completion context (may be hard IRQ): must not sleep or allocate.
pub(crate) trait CommitCallback: Send + Sync + 'static {
    /// The last write of the current stage ended.
    fn commit_stage_ended(&self);
}

/// The state a commit's write completions update (interrupt context:
/// atomics and the commit callback only).
struct CommitIo {
    /// Where the commit is ([`CommitStage`] documents the transitions).
    stage: AtomicState<CommitStage>,
    /// Writes of the stage not completed, plus one held by the submitter.
    left: AtomicUsize,
    failed: AtomicBool,
}

impl CommitIo {
    /// One write of the stage ended; the last one moves the stage on
    /// (`Later` to `LaterDone`, `Current` to `CurrentDone`) and calls
    /// `callback`.
    fn put<C: CommitCallback>(&self, failed: bool, callback: &C) {
        if failed {
            self.failed.store(true, Ordering::Release);
        }
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let stage = self.stage.get();
            if let Some(done) = stage.done() {
                self.stage.advance(stage, done);
            }
            callback.commit_stage_ended();
        }
    }
}

/// Most bytes of metadata areas read at once when a snapshot is opened.
const READ_BATCH_BYTES: usize = 1 << 20;
/// Most areas read at once.
const READ_BATCH_AREAS: usize = 64;

/// The persistent exception store (dm-snap-persistent.c's format).
///
/// # Invariants
///
/// - An entry at a position below `committed` is on disk: `committed`
///   moves (under `commit`, mirrored in the atomic) only when a commit's
///   writes ended without error, the later areas before the current one.
///   A merge's cut lowers it with the list.
/// - At most one commit is in flight: `io.stage` is `Idle` between
///   commits and moves only by [`AtomicState::advance`] along the
///   transitions [`CommitStage`] documents; only the copier thread starts
///   a commit, under `commit`, which is never held across I/O.
/// - Every COW chunk handed out is distinct and outside the metadata
///   areas: `alloc` (an [`Appender`]) hands them out under its spinlock,
///   taken inside the snapshot's `pending` lock.
/// - `invalidation` moves only `Valid` → `Unsynced` → `Synced`
///   ([`Invalidation`]), by `advance`; `header_lock` serialises the
///   synchronous header writes.
#[pin_data]
pub(crate) struct Persistent {
    cow: Arc<BdevFile>,
    layout: Layout,
    /// What a snapshot write that finds no room does (`PO`: fails instead
    /// of invalidating the snapshot).
    pub(crate) overflow: Overflow,
    /// Chunk and entry allocation (under the snapshot's `pending` lock:
    /// never sleeps).
    #[pin]
    alloc: SpinLock<Appender>,
    /// The copier's commit state (only the copier thread takes it while
    /// the store is in use; never held across I/O).
    #[pin]
    commit: Mutex<Commit>,
    /// What the commit's write completions update.
    io: Arc<CommitIo>,
    /// Position of the first entry not committed (mirror of `commit`, for
    /// the copier's waiters without the mutex).
    committed: AtomicU64,
    /// The area being filled (for status; mirror of `commit`).
    meta_area: AtomicU64,
    /// Something was staged since the last commit.
    dirty: AtomicBool,
    /// Whether the header says what the snapshot's validity is
    /// ([`Invalidation`] documents the transitions).
    invalidation: AtomicState<Invalidation>,
    /// Serialises synchronous header writes (held across that one write).
    #[pin]
    header_lock: Mutex<()>,
}

impl Persistent {
    /// Opens the store on `cow`: reads the header, and either sets up a
    /// new snapshot (zeroes area 0, then writes the header) or reads every
    /// exception into `add(old, new)` (an error: `Duplicate` for a duplicate
    /// origin chunk, any other when out of memory).
    /// `table_chunk` 0 takes the chunk size on the device (or dm's default
    /// for a new snapshot). Sleeps; holds no lock.
    pub(crate) fn open(
        cow: &Arc<BdevFile>,
        origin_lbs: u32,
        table_chunk: u32,
        overflow: Overflow,
        mut add: impl FnMut(u64, u64) -> Result<(), InsertError>,
    ) -> Result<Opened, OpenError> {
        let cow_lbs = cow.logical_block_size();
        // A chunk size the table gives is checked before anything is read
        // (as dm-snapshot's constructor does): one smaller than a logical
        // block of either device is refused, not read with.
        if table_chunk != 0 {
            ChunkGeometry::new(u64::from(table_chunk), origin_lbs, cow_lbs)
                .map_err(OpenError::TableChunk)?;
        }
        // The header is read in one logical block of the COW device: the
        // smallest read it takes (512 bytes would fail on a 4 KiB-sector
        // device). Every later I/O of the store is of whole chunks, which
        // are multiples of that block (checked below).
        let mut first = PageBuf::new_zeroed((cow_lbs as usize).max(512))?;
        page_io_sync(cow, PageIo::Read, &mut [(0, &mut first)])?;
        let mut raw = [0u8; HEADER_BYTES];
        first.read_at(0, &mut raw)?;
        let header = decode_header(&raw)?;
        let chunk = match header {
            Some(h) if table_chunk != 0 && table_chunk != h.chunk_sectors => {
                return Err(OpenError::ChunkMismatch {
                    table: table_chunk,
                    disk: h.chunk_sectors,
                })
            }
            Some(h) => h.chunk_sectors,
            None if table_chunk != 0 => table_chunk,
            None => (DEFAULT_CHUNK_SECTORS as u32).max(cow_lbs >> 9),
        };
        let geom =
            ChunkGeometry::new(u64::from(chunk), origin_lbs, cow_lbs).map_err(
                |e| match header {
                    Some(_) => OpenError::DiskChunk(chunk, e),
                    None => OpenError::TableChunk(e),
                },
            )?;
        let layout = Layout::new(geom.sectors(), cow.nr_sectors())?;
        let mut area = PageBuf::new_zeroed(layout.chunk_bytes())?;
        let (valid, position) = match header {
            None => {
                Self::format_new(cow, &layout, &mut area)?;
                (true, None)
            }
            Some(h) if !h.valid => (false, None),
            Some(_) => {
                let at = Self::read_exceptions(cow, &layout, &mut area, &mut add)?;
                (true, Some(at))
            }
        };
        let exceptions = position.map_or(0, |p| p.exceptions);
        let appender = Appender::new(layout, position);
        let committed = appender.next_pos();
        let meta_area = position.map_or(0, |p| p.area);
        let io = Arc::new(
            CommitIo {
                stage: AtomicState::new(CommitStage::Idle),
                left: AtomicUsize::new(0),
                failed: AtomicBool::new(false),
            },
            GFP_KERNEL,
        )?;
        let store = KBox::pin_init(
            pin_init!(Persistent {
                cow: cow.clone(),
                layout,
                overflow,
                alloc <- new_spinlock!(appender, "rdm:store_alloc"),
                commit <- new_mutex!(
                    Commit {
                        committed,
                        staged: RBTree::new(),
                        area: Some(area),
                        flight: None,
                    },
                    "rdm:store_commit"
                ),
                io,
                committed: AtomicU64::new(committed),
                meta_area: AtomicU64::new(meta_area),
                dirty: AtomicBool::new(false),
                invalidation: AtomicState::new(if valid {
                    Invalidation::Valid
                } else {
                    Invalidation::Synced
                }),
                header_lock <- new_mutex!((), "rdm:store_header"),
            }),
            GFP_KERNEL,
        )?;
        Ok(Opened {
            store,
            geom,
            valid,
            exceptions,
        })
    }

    /// Makes a new snapshot on the device: area 0 zeroed first, then the
    /// header (FLUSH+FUA), so a crash between the two leaves a device that
    /// still reads as new rather than a header over a garbage area.
    fn format_new(cow: &BdevFile, layout: &Layout, area: &mut PageBuf) -> Result {
        area.zero()?;
        page_io_sync(cow, PageIo::Write, &mut [(layout.sector_of(1), &mut *area)])?;
        Self::write_header(cow, layout, true)
    }

    fn write_header(cow: &BdevFile, layout: &Layout, valid: bool) -> Result {
        let mut chunk0 = Self::header_image(layout, valid)?;
        page_io_sync(cow, PageIo::WriteFlushFua, &mut [(0, &mut chunk0)])
    }

    /// Chunk 0: the header, zeros after it.
    fn header_image(layout: &Layout, valid: bool) -> Result<PageBuf> {
        let mut chunk0 = PageBuf::new_zeroed(layout.chunk_bytes())?;
        chunk0.write_at(0, &encode_header(valid, layout.chunk_sectors() as u32))?;
        Ok(chunk0)
    }

    /// Reads the metadata areas, several in flight at once (a batch of up
    /// to [`READ_BATCH_BYTES`]), until the list ends. Leaves the image of
    /// the area the list ends in, zero after its last entry, in `last`.
    fn read_exceptions(
        cow: &BdevFile,
        layout: &Layout,
        last: &mut PageBuf,
        add: &mut impl FnMut(u64, u64) -> Result<(), InsertError>,
    ) -> Result<Position, OpenError> {
        let per_batch = (READ_BATCH_BYTES / layout.chunk_bytes()).clamp(1, READ_BATCH_AREAS);
        let mut bufs = KVec::with_capacity(per_batch, GFP_KERNEL)?;
        for _ in 0..per_batch {
            bufs.push(PageBuf::new_zeroed(layout.chunk_bytes())?, GFP_KERNEL)?;
        }
        let mut loader = Loader::new(*layout);
        let mut oom = false;
        let mut raw = [0u8; persistent::ENTRY_BYTES];
        while let Some(start) = loader.next_area() {
            // Read ahead: areas past the end of the list cost a read, not
            // a wrong answer (the loader stops at the end).
            let mut reqs = KVec::with_capacity(per_batch, GFP_KERNEL)?;
            for (i, buf) in bufs.iter_mut().enumerate() {
                let area = start + i as u64;
                if !layout.area_fits(area) {
                    break;
                }
                reqs.push((layout.sector_of(layout.area_chunk(area)), buf), GFP_KERNEL)?;
            }
            let n = reqs.len();
            page_io_sync(cow, PageIo::Read, &mut reqs)?;
            drop(reqs);
            for (i, buf) in bufs.iter_mut().enumerate().take(n) {
                if loader.next_area() != Some(start + i as u64) {
                    break;
                }
                let entry =
                    |index: usize| match buf.read_at(index * persistent::ENTRY_BYTES, &mut raw) {
                        Ok(()) => persistent::decode_entry(&raw, 0),
                        // Cannot happen (the index is inside the area): read
                        // as the end of the list.
                        Err(_) => (0, 0),
                    };
                let added =
                    |old, new| add(old, new).map_err(|e| oom |= e != InsertError::Duplicate);
                loader.feed(entry, added).map_err(|e| {
                    if oom {
                        OpenError::Errno(ENOMEM)
                    } else {
                        OpenError::Format(e)
                    }
                })?;
                if loader.next_area().is_none() {
                    // The list ends in this area: commits continue from
                    // its image, which holds its entries and zeros after
                    // them (not what follows the end on disk: see
                    // `Position::live_bytes`).
                    let live = loader.position().live_bytes();
                    last.zero()?;
                    let mut bytes = [0u8; 512];
                    for off in (0..live).step_by(bytes.len()) {
                        let piece = &mut bytes[..(live - off).min(512)];
                        buf.read_at(off, piece)?;
                        last.write_at(off, piece)?;
                    }
                }
            }
        }
        Ok(loader.position())
    }

    fn prepare_exception(&self) -> Result<Place, NoRoom> {
        let cow_chunks = self.layout.chunks_in(self.cow.nr_sectors());
        self.alloc.lock().allocate(cow_chunks)
    }

    fn usage(&self) -> (u64, u64, u64) {
        let chunk = self.layout.chunk_sectors();
        let next_free = self.alloc.lock().next_free();
        let meta = self.meta_area.load(Ordering::Acquire);
        (next_free * chunk, self.cow.nr_sectors(), (meta + 2) * chunk)
    }

    /// Whether a commit's writes are in flight.
    pub(crate) fn commit_in_flight(&self) -> bool {
        self.io.stage.get() != CommitStage::Idle
    }

    /// Whether the entry at `pos` is on disk.
    pub(crate) fn is_committed(&self, pos: u64) -> bool {
        pos < self.committed.load(Ordering::Acquire)
    }

    /// Stages the completed copy of `old` to `new` (entry `pos`) for the
    /// next commit. Copier thread.
    pub(crate) fn stage(&self, pos: u64, old: u64, new: u64) -> Result {
        self.commit
            .lock()
            .staged
            .try_create_and_insert(pos, (old, new), GFP_KERNEL)?;
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Moves the store's commit on (copier thread, never sleeps on I/O):
    /// when none is in flight, starts one for the staged entries that
    /// extend the committed prefix; when the areas after the current one
    /// are written, writes the current one; when that is done, the
    /// entries are committed (and the next commit starts). With
    /// [`Drive::FollowOnly`] (the snapshot is invalid) no new write is
    /// sent, a commit in flight is only followed to its end. Answers whether a commit is in
    /// flight; an error if a commit failed (the snapshot must be
    /// invalidated: its metadata cannot be kept any more). `callback` is
    /// called (completion context) when each stage of writes has ended.
    pub(crate) fn drive_commit<C: CommitCallback>(
        &self,
        drive: Drive,
        callback: &Arc<C>,
    ) -> Result<bool> {
        let start = drive == Drive::Start;
        // Called for every parked job's store each round: answer the
        // common cases without the mutex.
        match self.io.stage.get() {
            CommitStage::Later | CommitStage::Current => return Ok(true),
            CommitStage::Idle if !start || !self.dirty.load(Ordering::Acquire) => return Ok(false),
            _ => {}
        }
        let mut guard = self.commit.lock();
        let c = &mut *guard;
        loop {
            match self.io.stage.get() {
                CommitStage::Later | CommitStage::Current => return Ok(true),
                CommitStage::LaterDone => {
                    // The current area goes out only for a snapshot still
                    // valid: an invalid one writes no more metadata.
                    let failed = self.io.failed.load(Ordering::Acquire);
                    if let Some(flight) = c.flight.as_ref().filter(|_| start && !failed) {
                        self.write_current(CommitStage::LaterDone, flight, callback);
                        return Ok(true);
                    }
                    self.abandon(CommitStage::LaterDone, c);
                    return if failed { Err(EIO) } else { Ok(false) };
                }
                CommitStage::CurrentDone => {
                    if self.io.failed.load(Ordering::Acquire) {
                        self.abandon(CommitStage::CurrentDone, c);
                        return Err(EIO);
                    }
                    self.complete(c)?;
                }
                CommitStage::Idle => {
                    if !start || !self.start_commit(c, callback)? {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// Starts a commit of the staged entries that extend the committed
    /// prefix; false if there are none.
    fn start_commit<C: CommitCallback>(&self, c: &mut Commit, callback: &Arc<C>) -> Result<bool> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let from = c.committed;
        let mut to = from;
        for (&pos, _) in c.staged.iter() {
            if pos != to {
                break;
            }
            to += 1;
        }
        if to == from {
            return Ok(false);
        }
        let l = self.layout;
        let plan = CommitPlan::new(&l, from, to);
        let area = c.area.as_mut().ok_or(EIO)?;
        // Entries [from, to) into the images of their areas: the current
        // one in place (entries written there and not committed are
        // written again, the same, by the next attempt), the later ones
        // (and the zeroed area after a full one) in new buffers.
        let mut later = KVec::with_capacity((plan.last - plan.first) as usize, GFP_KERNEL)?;
        for _ in plan.first..plan.last {
            later.push(PageBuf::new_zeroed(l.chunk_bytes())?, GFP_KERNEL)?;
        }
        let mut entry = [0u8; persistent::ENTRY_BYTES];
        for (&pos, &(old, new)) in c.staged.iter() {
            if pos >= to {
                break;
            }
            let (area_no, index) = l.entry_at(pos);
            let buf = if area_no == plan.first {
                &mut *area
            } else {
                &mut later[(area_no - plan.first - 1) as usize]
            };
            persistent::encode_entry(&mut entry, 0, old, new);
            buf.write_at(index as usize * persistent::ENTRY_BYTES, &entry)?;
        }
        let mut lent = KVec::with_capacity(later.len(), GFP_KERNEL)?;
        for buf in later {
            lent.push(buf.lend().map_err(|_| ENOMEM)?, GFP_KERNEL)?;
        }
        let current = match c.area.take().map(PageBuf::lend) {
            Some(Ok(arc)) => arc,
            Some(Err(own)) => {
                c.area = Some(own);
                return Err(ENOMEM);
            }
            None => return Err(EIO),
        };
        let flight = c.flight.insert(Flight {
            to,
            first_area: plan.first,
            last_area: plan.last,
            later: lent,
            current,
        });
        self.io.failed.store(false, Ordering::Release);
        if flight.later.is_empty() {
            self.write_current(CommitStage::Idle, flight, callback);
            return Ok(true);
        }
        // The later areas first: the current one (with FLUSH+FUA) follows
        // once they are on the device, so a crash never leaves a full
        // area followed by an area not written.
        self.begin_stage(CommitStage::Idle, CommitStage::Later, flight.later.len());
        for (i, buf) in flight.later.iter().enumerate() {
            let sector = l.sector_of(l.area_chunk(plan.first + 1 + i as u64));
            self.submit(PageIo::Write, sector, buf, callback);
        }
        self.io.put(false, &**callback);
        Ok(true)
    }

    /// Writes the current area's image with FLUSH+FUA: the flush makes the
    /// copies and the later areas durable before the entries that point
    /// at them.
    fn write_current<C: CommitCallback>(
        &self,
        from: CommitStage,
        flight: &Flight,
        callback: &Arc<C>,
    ) {
        let l = self.layout;
        let sector = l.sector_of(l.area_chunk(flight.first_area));
        self.begin_stage(from, CommitStage::Current, 1);
        self.submit(PageIo::WriteFlushFua, sector, &flight.current, callback);
        self.io.put(false, &**callback);
    }

    /// Goes from `from` into `stage` with `writes` writes to come (and the
    /// submitter's count).
    fn begin_stage(&self, from: CommitStage, stage: CommitStage, writes: usize) {
        self.io.left.store(writes + 1, Ordering::Release);
        self.io.stage.advance(from, stage);
    }

    /// Sends one write of the stage; its completion drops its count.
    fn submit<C: CommitCallback>(
        &self,
        io: PageIo,
        sector: u64,
        buf: &Arc<PageBuf>,
        callback: &Arc<C>,
    ) {
        let state = self.io.clone();
        let to_call = callback.clone();
        let done = move |failed: bool| state.put(failed, &*to_call);
        if submit_page_io(&self.cow, io, sector, buf.clone(), done).is_err() {
            self.io.put(true, &**callback);
        }
    }

    /// The commit in flight is on the device: its entries are committed.
    fn complete(&self, c: &mut Commit) -> Result {
        self.io
            .stage
            .advance(CommitStage::CurrentDone, CommitStage::Idle);
        let Some(flight) = c.flight.take() else {
            return Err(EIO);
        };
        let Flight {
            to,
            last_area,
            later,
            current,
            ..
        } = flight;
        // The image the next commit fills: the last area written.
        let newest = later.into_iter().last().unwrap_or(current);
        c.area = PageBuf::take_back(newest);
        for pos in c.committed..to {
            let _ = c.staged.remove(&pos);
        }
        c.committed = to;
        self.committed.store(to, Ordering::Release);
        self.meta_area.store(last_area, Ordering::Release);
        // Cannot happen (the writes completed and dropped their
        // references); without the image no later commit can be made.
        if c.area.is_none() {
            return Err(EIO);
        }
        Ok(())
    }

    /// A commit failed: forget it (the snapshot is invalidated; nothing
    /// more is committed).
    fn abandon(&self, from: CommitStage, c: &mut Commit) {
        c.flight = None;
        self.io.stage.advance(from, CommitStage::Idle);
    }

    /// Entries in the list on disk (a merge's position).
    pub(crate) fn list_len(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// A merge's next batch: the entries `[lo, len)` of the list (`len`
    /// its length) into `out` as `(old, new)`, and the image that cuts the
    /// list to `lo` entries (the area `lo` falls in: its entries before
    /// `lo`, zeros after). The area the list ends in is in memory; the
    /// ones before it are read from the device. The merge thread, while
    /// the store commits nothing (the snapshot is handed over and its
    /// pending exceptions ended); sleeps on the reads holding no lock.
    pub(crate) fn merge_read(
        &self,
        lo: u64,
        len: u64,
        out: &mut KVVec<(u64, u64)>,
    ) -> Result<PageBuf> {
        let l = self.layout;
        let epa = l.epa();
        let (end_area, in_end) = l.entry_at(len);
        let (lo_area, keep) = merge_cut(&l, lo);
        // The area the list ends in: its live entries, from the image.
        let mut current = PageBuf::new_zeroed(l.chunk_bytes())?;
        {
            let mut c = self.commit.lock();
            let area = c.area.as_mut().ok_or(EIO)?;
            let mut bytes = [0u8; 512];
            let live = in_end as usize * persistent::ENTRY_BYTES;
            for off in (0..live).step_by(bytes.len()) {
                let piece = &mut bytes[..(live - off).min(512)];
                area.read_at(off, piece)?;
                current.write_at(off, piece)?;
            }
        }
        // The areas before it that hold entries of the batch.
        let mut earlier = KVec::with_capacity((end_area - lo_area) as usize, GFP_KERNEL)?;
        for _ in lo_area..end_area {
            earlier.push(PageBuf::new(l.chunk_bytes())?, GFP_KERNEL)?;
        }
        if !earlier.is_empty() {
            let mut reqs = KVec::with_capacity(earlier.len(), GFP_KERNEL)?;
            for (i, buf) in earlier.iter_mut().enumerate() {
                let sector = l.sector_of(l.area_chunk(lo_area + i as u64));
                reqs.push((sector, buf), GFP_KERNEL)?;
            }
            page_io_sync(&self.cow, PageIo::Read, &mut reqs)?;
        }
        out.reserve((len - lo) as usize, GFP_KERNEL)?;
        let mut raw = [0u8; persistent::ENTRY_BYTES];
        for pos in lo..len {
            let (area, index) = l.entry_at(pos);
            let buf = if area == end_area {
                &mut current
            } else {
                &mut earlier[(area - lo_area) as usize]
            };
            buf.read_at(index as usize * persistent::ENTRY_BYTES, &mut raw)?;
            let (old, new) = persistent::decode_entry(&raw, 0);
            if new == 0 {
                pr_err!("snapshot-merge: entry {pos} of the list is empty on disk\n");
                return Err(EIO);
            }
            // Room reserved: allocates nothing.
            out.push((old, new), GFP_KERNEL)?;
        }
        // The cut: the area `lo` falls in, its entries from `keep` on
        // zeroed.
        let mut image = if lo_area == end_area {
            current
        } else {
            // The first of the areas read.
            let mut it = earlier.into_iter();
            it.next().ok_or(EIO)?
        };
        let zero = [0u8; persistent::ENTRY_BYTES];
        for index in keep..epa {
            image.write_at(index as usize * persistent::ENTRY_BYTES, &zero)?;
        }
        Ok(image)
    }

    /// Cuts the list to `lo` entries (dm's `commit_merge`): `image` (from
    /// [`Persistent::merge_read`]) goes to its area with FLUSH+FUA, and
    /// becomes the area image later appends start from; the status shows
    /// dm's figures for the shorter list. The caller has copied the
    /// entries' chunks back and flushed the origin. The merge thread;
    /// sleeps on the write holding no lock.
    pub(crate) fn merge_cut(&self, lo: u64, mut image: PageBuf) -> Result {
        let l = self.layout;
        let (area, _) = merge_cut(&l, lo);
        let sector = l.sector_of(l.area_chunk(area));
        page_io_sync(
            &self.cow,
            PageIo::WriteFlushFua,
            &mut [(sector, &mut image)],
        )?;
        {
            let mut c = self.commit.lock();
            c.committed = lo;
            c.area = Some(image);
        }
        self.committed.store(lo, Ordering::Release);
        self.meta_area.store(area, Ordering::Release);
        self.alloc.lock().merged_to(lo);
        Ok(())
    }

    /// The snapshot went invalid: the header must say so before an origin
    /// write that no longer copies for it goes on. Any context.
    pub(crate) fn mark_invalid(&self) {
        self.invalidation
            .advance(Invalidation::Valid, Invalidation::Unsynced);
    }

    /// Whether the header does not yet say the snapshot is invalid.
    pub(crate) fn invalid_unsynced(&self) -> bool {
        self.invalidation.get() == Invalidation::Unsynced
    }

    /// Sends a write of the header with valid = 0 (FLUSH+FUA); `done(failed)`
    /// runs when it completed (completion context). Process context; does
    /// not wait.
    pub(crate) fn write_invalid_header(&self, done: impl FnOnce(bool) + Send + 'static) -> Result {
        let buf = Self::header_image(&self.layout, false)?;
        let buf = buf.lend().map_err(|_| ENOMEM)?;
        submit_page_io(&self.cow, PageIo::WriteFlushFua, 0, buf, done)
    }

    /// The invalid header write ended: the header says the snapshot is
    /// invalid (or, if the write failed, never will: it is logged, and
    /// origin writes go on rather than wait forever). Any context.
    pub(crate) fn invalid_header_written(&self, failed: bool) {
        if failed {
            pr_err!("snapshot: cannot mark the COW device invalid (write failed)\n");
        }
        // A teardown's synchronous write may have ended first.
        self.invalidation
            .advance(Invalidation::Unsynced, Invalidation::Synced);
    }

    /// Writes the header with valid = 0 if it is not written yet (process
    /// context; sleeps on the write; the caller holds no lock).
    pub(crate) fn sync_invalid(&self) {
        let _serial = self.header_lock.lock();
        if !self.invalid_unsynced() {
            return;
        }
        if Self::write_header(&self.cow, &self.layout, false).is_err() {
            pr_err!("snapshot: cannot mark the COW device invalid (write failed)\n");
        }
        // The copier's header job may have ended first.
        self.invalidation
            .advance(Invalidation::Unsynced, Invalidation::Synced);
    }
}
