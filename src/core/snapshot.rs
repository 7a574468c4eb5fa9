//! Snapshot table lines and chunk arithmetic, as dm-snapshot defines them
//! (`Documentation/admin-guide/device-mapper/snapshot.rst`,
//! `drivers/md/dm-exception-store.c`). Kernel-free: the targets that use
//! this are the snapshot issue's; the parsing and the checks are here so
//! that they are host-tested.

use super::table::{parse_dev, parse_u64, split_args, ArgError, DevSpec};
use core::fmt;

/// The exception store a snapshot line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// `N`: transient, lost when the snapshot goes.
    Transient,
    /// `P`: persistent; a full store invalidates the snapshot.
    Persistent,
    /// `PO`: persistent; a full store reports `Overflow`.
    PersistentOverflow,
}

/// `snapshot <origin> <cow> <P|PO|N> <chunk_sectors> [<#features> <feature>...]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotArgs<'a> {
    /// The origin device.
    pub origin: DevSpec<'a>,
    /// The COW device.
    pub cow: DevSpec<'a>,
    /// The store type.
    pub store: StoreKind,
    /// Chunk size in sectors; 0 means "the one on disk" (persistent only).
    pub chunk_sectors: u32,
    /// `discard_zeroes_cow` was given.
    pub discard_zeroes_cow: bool,
    /// `discard_passdown_origin` was given.
    pub discard_passdown_origin: bool,
}

/// Why a snapshot line or chunk size was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// A plain argument problem.
    Arg(ArgError),
    /// The store type is not `P`, `PO` or `N`.
    UnknownStore,
    /// Chunk size 0 with a transient store (only a persistent store has a
    /// chunk size on disk to use).
    ZeroChunkTransient,
    /// The chunk size is not a power of two.
    ChunkNotPowerOfTwo(u64),
    /// The chunk size is not a multiple of a device's logical block size.
    ChunkNotBlockMultiple {
        /// The chunk size in sectors.
        chunk: u64,
        /// The logical block size in sectors.
        block: u64,
    },
    /// The chunk size is too large (dm-snapshot: `INT_MAX >> SECTOR_SHIFT`).
    ChunkTooLarge(u64),
    /// The feature-argument count does not match what follows, or a
    /// feature is unknown.
    BadFeatures,
}

impl From<ArgError> for SnapshotError {
    fn from(e: ArgError) -> Self {
        SnapshotError::Arg(e)
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SnapshotError::Arg(e) => write!(f, "{e}"),
            SnapshotError::UnknownStore => {
                write!(f, "unknown exception store type (expected P, PO or N)")
            }
            SnapshotError::ZeroChunkTransient => {
                write!(f, "chunk size 0 needs a persistent store")
            }
            SnapshotError::ChunkNotPowerOfTwo(c) => {
                write!(f, "chunk size {c} is not a power of 2")
            }
            SnapshotError::ChunkNotBlockMultiple { chunk, block } => write!(
                f,
                "chunk size {chunk} is not a multiple of the device block size ({block} sectors)"
            ),
            SnapshotError::ChunkTooLarge(c) => write!(f, "chunk size {c} is too high"),
            SnapshotError::BadFeatures => write!(
                f,
                "bad feature arguments (known: discard_zeroes_cow, discard_passdown_origin)"
            ),
        }
    }
}

/// Largest chunk size in sectors dm-snapshot accepts.
pub const MAX_CHUNK_SECTORS: u64 = (i32::MAX as u64) >> 9;

/// Parses a `snapshot` table line's parameters.
pub fn parse_snapshot(params: &[u8]) -> Result<SnapshotArgs<'_>, SnapshotError> {
    let (a, n) = split_args::<8>(params);
    if n < 4 {
        return Err(ArgError::Count {
            expected: "4 or more (<origin> <cow> <P|PO|N> <chunk_sectors>)",
            got: n,
        }
        .into());
    }
    let store = match a[2] {
        b"N" | b"n" => StoreKind::Transient,
        b"P" | b"p" => StoreKind::Persistent,
        b"PO" | b"po" | b"Po" | b"pO" => StoreKind::PersistentOverflow,
        _ => return Err(SnapshotError::UnknownStore),
    };
    let chunk = parse_u64(a[3]).ok_or(ArgError::NotANumber(3))?;
    if chunk == 0 && store == StoreKind::Transient {
        return Err(SnapshotError::ZeroChunkTransient);
    }
    if chunk != 0 && !chunk.is_power_of_two() {
        return Err(SnapshotError::ChunkNotPowerOfTwo(chunk));
    }
    if chunk > MAX_CHUNK_SECTORS {
        return Err(SnapshotError::ChunkTooLarge(chunk));
    }
    let mut args = SnapshotArgs {
        origin: parse_dev(a[0], 0)?,
        cow: parse_dev(a[1], 1)?,
        store,
        chunk_sectors: chunk as u32,
        discard_zeroes_cow: false,
        discard_passdown_origin: false,
    };
    if n > 4 {
        let count = parse_u64(a[4]).ok_or(SnapshotError::BadFeatures)?;
        if count as usize != n - 5 || n > a.len() {
            return Err(SnapshotError::BadFeatures);
        }
        for feature in &a[5..n] {
            match *feature {
                b"discard_zeroes_cow" => args.discard_zeroes_cow = true,
                b"discard_passdown_origin" => args.discard_passdown_origin = true,
                _ => return Err(SnapshotError::BadFeatures),
            }
        }
        // dm-snapshot: passdown only makes sense with zeroing.
        if args.discard_passdown_origin && !args.discard_zeroes_cow {
            return Err(SnapshotError::BadFeatures);
        }
    }
    Ok(args)
}

/// `snapshot-origin <origin>`.
pub fn parse_origin(params: &[u8]) -> Result<DevSpec<'_>, ArgError> {
    let (a, n) = split_args::<1>(params);
    if n != 1 {
        return Err(ArgError::Count {
            expected: "1 (<origin>)",
            got: n,
        });
    }
    parse_dev(a[0], 0)
}

/// A validated chunk size and the arithmetic on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkGeometry {
    shift: u32,
}

impl ChunkGeometry {
    /// Checks `chunk_sectors` against the logical block sizes (in bytes)
    /// of the origin and COW devices, as `dm_exception_store_set_chunk_size()`.
    pub fn new(chunk_sectors: u64, origin_lbs: u32, cow_lbs: u32) -> Result<Self, SnapshotError> {
        if chunk_sectors == 0 || !chunk_sectors.is_power_of_two() {
            return Err(SnapshotError::ChunkNotPowerOfTwo(chunk_sectors));
        }
        for lbs in [origin_lbs, cow_lbs] {
            let block = u64::from(lbs >> 9).max(1);
            // Both are powers of two.
            if chunk_sectors & (block - 1) != 0 {
                return Err(SnapshotError::ChunkNotBlockMultiple {
                    chunk: chunk_sectors,
                    block,
                });
            }
        }
        if chunk_sectors > MAX_CHUNK_SECTORS {
            return Err(SnapshotError::ChunkTooLarge(chunk_sectors));
        }
        Ok(ChunkGeometry {
            shift: chunk_sectors.trailing_zeros(),
        })
    }

    /// Chunk size in sectors.
    pub fn sectors(&self) -> u64 {
        1 << self.shift
    }

    /// The chunk holding `sector`.
    pub fn chunk_of(&self, sector: u64) -> u64 {
        sector >> self.shift
    }

    /// The first sector of `chunk`.
    pub fn sector_of(&self, chunk: u64) -> u64 {
        chunk << self.shift
    }

    /// `sector`'s offset inside its chunk.
    pub fn offset_in_chunk(&self, sector: u64) -> u64 {
        sector & (self.sectors() - 1)
    }

    /// Whether `[sector, sector + len)` covers whole chunks exactly (such
    /// a write needs no copy of the old data).
    pub fn covers_whole_chunk(&self, sector: u64, len: u64) -> bool {
        self.offset_in_chunk(sector) == 0 && len >= self.sectors() && self.offset_in_chunk(len) == 0
    }

    /// Number of whole chunks in a device of `sectors`.
    pub fn chunks_in(&self, sectors: u64) -> u64 {
        sectors >> self.shift
    }

    /// Whether a snapshot of `len` sectors has `chunk` (dm-snapshot copies
    /// no chunk at or past its snapshot's length: an origin grown with
    /// lvextend has chunks the snapshot never had).
    pub fn has_chunk(&self, chunk: u64, len: u64) -> bool {
        chunk < len.div_ceil(self.sectors())
    }

    /// How many sectors of `chunk` an origin of `origin_sectors` holds:
    /// the whole chunk, only the part before the device's end for its
    /// last, partial chunk (disks and LVs are rarely chunk multiples), or
    /// none past the end. A copy reads that much, as dm's `start_copy`.
    pub fn extent_on(&self, chunk: u64, origin_sectors: u64) -> u64 {
        origin_sectors
            .saturating_sub(self.sector_of(chunk))
            .min(self.sectors())
    }
}

/// Why an exception store has no COW chunk for a new exception. Both
/// stores size their COW device anew at every allocation (as dm's
/// `get_dev_size()` in `prepare_exception`), so a COW device that grew
/// (lvextend, dmeventd's autoextend) is used at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoRoom {
    /// Every chunk of the COW device is in use: the snapshot is full.
    Full,
    /// The COW device is now smaller than the space the snapshot already
    /// uses (it shrank under the snapshot): chunks in use lie past its
    /// end. Not a reason to drop the snapshot: it may grow back.
    Shrunk {
        /// Sectors of the COW device in use.
        in_use: u64,
    },
}

/// The transient store's allocation (dm-snap-transient.c): COW chunks are
/// handed out in order from sector 0; `next_free` is the first free
/// sector. Gives the next `next_free` if a chunk of `chunk_sectors` fits in
/// a COW device of `cow_sectors` (its size now).
pub fn transient_allocate(
    next_free: u64,
    chunk_sectors: u64,
    cow_sectors: u64,
) -> Result<u64, NoRoom> {
    if cow_sectors < next_free {
        return Err(NoRoom::Shrunk { in_use: next_free });
    }
    match next_free.checked_add(chunk_sectors) {
        Some(end) if end <= cow_sectors => Ok(end),
        _ => Err(NoRoom::Full),
    }
}

/// `sectors` rounded up to a multiple of a device's logical block of
/// `block_bytes` (a power of two): the part of a copy's last piece that
/// is written to a COW device with larger blocks than the origin.
pub fn round_up_to_block(sectors: u64, block_bytes: u32) -> u64 {
    let block = u64::from(block_bytes >> 9).max(1);
    sectors.div_ceil(block) * block
}

/// What a bio of a `snapshot` target asks of its chunk (other operations
/// fail before any decision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A read of the snapshot.
    Read,
    /// A write to the snapshot.
    Write,
}

/// Whether a snapshot takes a bio of `access` at all: not once it is
/// invalid or handed over to a merge (dm: the handover leaves the source
/// invalid), and no write once a `PO` snapshot overflowed.
pub fn snapshot_admits(access: Access, valid: bool, handed_over: bool, overflowed: bool) -> bool {
    valid && !handed_over && !(access == Access::Write && overflowed)
}

/// What the lookups of a snapshot bio's chunk found: the completed
/// exception's COW chunk, else the pending copy `J`, else nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkState<J> {
    /// Copied: the chunk's data is at this COW chunk.
    Copied(u64),
    /// A copy is pending (this job).
    Pending(J),
    /// Neither copied nor pending: the origin has the snapshot's data.
    NotCopied,
}

/// What a snapshot bio does about its chunk, given [`ChunkState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkStep<J> {
    /// Remap to this COW chunk.
    ToCow(u64),
    /// Wait for the pending copy `J`, then map again.
    HoldOn(J),
    /// A read of a chunk not copied: read the origin.
    ReadOrigin,
    /// A write to a chunk not copied: the chunk needs a new copy first
    /// (the write is the copy itself if it covers the whole chunk).
    NewCopy,
}

/// The step of the snapshot map path for a bio of `access` whose chunk
/// lookups found `state`: a copied chunk is at its COW chunk, a pending
/// one waits for its copy, and a chunk not copied is read from the origin
/// or, for a write, copied first.
pub fn chunk_step<J>(access: Access, state: ChunkState<J>) -> ChunkStep<J> {
    match (state, access) {
        (ChunkState::Copied(new), _) => ChunkStep::ToCow(new),
        (ChunkState::Pending(job), _) => ChunkStep::HoldOn(job),
        (ChunkState::NotCopied, Access::Read) => ChunkStep::ReadOrigin,
        (ChunkState::NotCopied, Access::Write) => ChunkStep::NewCopy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_extents_on_an_odd_sized_origin() {
        let g = ChunkGeometry::new(16, 512, 512).unwrap();
        // 100 sectors: chunks 0..=5 full, chunk 6 holds 4 sectors.
        assert_eq!(g.extent_on(0, 100), 16);
        assert_eq!(g.extent_on(5, 100), 16);
        assert_eq!(g.extent_on(6, 100), 4);
        assert_eq!(g.extent_on(7, 100), 0);
        assert_eq!(g.extent_on(u64::MAX >> 4, 100), 0);
        // A snapshot of 100 sectors has chunks 0..=6, not 7.
        assert!(g.has_chunk(6, 100));
        assert!(!g.has_chunk(7, 100));
        assert!(!g.has_chunk(0, 0));
        assert!(g.has_chunk(5, 96));
        assert!(!g.has_chunk(6, 96));
        assert_eq!(round_up_to_block(4, 4096), 8);
        assert_eq!(round_up_to_block(8, 4096), 8);
        assert_eq!(round_up_to_block(3, 512), 3);
    }

    #[test]
    fn transient_allocation_follows_the_live_size() {
        // 16-sector chunks on a 40-sector COW device: two fit.
        assert_eq!(transient_allocate(0, 16, 40), Ok(16));
        assert_eq!(transient_allocate(16, 16, 40), Ok(32));
        assert_eq!(transient_allocate(32, 16, 40), Err(NoRoom::Full));
        // Grown to 48: the third fits now.
        assert_eq!(transient_allocate(32, 16, 48), Ok(48));
        // Shrunk to exactly what is in use: full, nothing lost.
        assert_eq!(transient_allocate(48, 16, 48), Err(NoRoom::Full));
        // Shrunk below it: chunks in use are past the end.
        assert_eq!(
            transient_allocate(48, 16, 40),
            Err(NoRoom::Shrunk { in_use: 48 })
        );
        assert_eq!(
            transient_allocate(u64::MAX - 8, 16, u64::MAX),
            Err(NoRoom::Full)
        );
    }

    #[test]
    fn snapshot_lines() {
        let a = parse_snapshot(b"/dev/vda /dev/vdb N 16").unwrap();
        assert_eq!(a.origin, DevSpec::Path(b"/dev/vda"));
        assert_eq!(a.cow, DevSpec::Path(b"/dev/vdb"));
        assert_eq!(a.store, StoreKind::Transient);
        assert_eq!(a.chunk_sectors, 16);
        let p = parse_snapshot(b"254:0 254:16 PO 0").unwrap();
        assert_eq!(p.store, StoreKind::PersistentOverflow);
        assert_eq!(p.chunk_sectors, 0);
        let f = parse_snapshot(b"/dev/a /dev/b P 8 2 discard_zeroes_cow discard_passdown_origin")
            .unwrap();
        assert!(f.discard_zeroes_cow && f.discard_passdown_origin);
    }

    #[test]
    fn bad_snapshot_lines() {
        assert!(matches!(
            parse_snapshot(b"/dev/a /dev/b N"),
            Err(SnapshotError::Arg(ArgError::Count { got: 3, .. }))
        ));
        assert_eq!(
            parse_snapshot(b"/dev/a /dev/b X 8"),
            Err(SnapshotError::UnknownStore)
        );
        assert_eq!(
            parse_snapshot(b"/dev/a /dev/b N 0"),
            Err(SnapshotError::ZeroChunkTransient)
        );
        assert_eq!(
            parse_snapshot(b"/dev/a /dev/b N 12"),
            Err(SnapshotError::ChunkNotPowerOfTwo(12))
        );
        assert_eq!(
            parse_snapshot(b"/dev/a /dev/b N 8388608"),
            Err(SnapshotError::ChunkTooLarge(8388608))
        );
        assert_eq!(
            parse_snapshot(b"/dev/a /dev/b N x"),
            Err(SnapshotError::Arg(ArgError::NotANumber(3)))
        );
        assert_eq!(
            parse_snapshot(b"a /dev/b N 8"),
            Err(SnapshotError::Arg(ArgError::BadDevice(0)))
        );
        assert_eq!(
            parse_snapshot(b"/dev/a /dev/b N 8 2 discard_zeroes_cow"),
            Err(SnapshotError::BadFeatures)
        );
        assert_eq!(
            parse_snapshot(b"/dev/a /dev/b N 8 1 frob"),
            Err(SnapshotError::BadFeatures)
        );
        assert_eq!(
            parse_snapshot(b"/dev/a /dev/b N 8 1 discard_passdown_origin"),
            Err(SnapshotError::BadFeatures)
        );
    }

    #[test]
    fn origin_lines() {
        assert_eq!(parse_origin(b"/dev/vda"), Ok(DevSpec::Path(b"/dev/vda")));
        assert!(parse_origin(b"").is_err());
        assert!(parse_origin(b"/dev/a /dev/b").is_err());
    }

    #[test]
    fn chunk_geometry() {
        let g = ChunkGeometry::new(16, 512, 4096).unwrap();
        assert_eq!(g.sectors(), 16);
        assert_eq!(g.chunk_of(31), 1);
        assert_eq!(g.sector_of(3), 48);
        assert_eq!(g.offset_in_chunk(35), 3);
        assert!(g.covers_whole_chunk(32, 16));
        assert!(g.covers_whole_chunk(32, 48));
        assert!(!g.covers_whole_chunk(33, 16));
        assert!(!g.covers_whole_chunk(32, 8));
        assert_eq!(g.chunks_in(100), 6);
        assert_eq!(
            ChunkGeometry::new(4, 512, 4096),
            Err(SnapshotError::ChunkNotBlockMultiple { chunk: 4, block: 8 })
        );
        assert!(ChunkGeometry::new(0, 512, 512).is_err());
        assert!(ChunkGeometry::new(24, 512, 512).is_err());
        // The largest power of two under INT_MAX >> 9 is 2^21 sectors.
        assert!(ChunkGeometry::new(1 << 22, 512, 512).is_err());
        assert!(ChunkGeometry::new(1 << 21, 512, 512).is_ok());
    }

    #[test]
    fn snapshot_admission() {
        use Access::*;
        // A valid snapshot takes reads and writes.
        assert!(snapshot_admits(Read, true, false, false));
        assert!(snapshot_admits(Write, true, false, false));
        // Invalid or handed over: nothing.
        for a in [Read, Write] {
            assert!(!snapshot_admits(a, false, false, false));
            assert!(!snapshot_admits(a, true, true, false));
            assert!(!snapshot_admits(a, false, true, true));
        }
        // Overflowed (PO): reads go on, writes fail.
        assert!(snapshot_admits(Read, true, false, true));
        assert!(!snapshot_admits(Write, true, false, true));
    }

    #[test]
    fn chunk_steps() {
        use Access::*;
        for a in [Read, Write] {
            assert_eq!(
                chunk_step::<u8>(a, ChunkState::Copied(7)),
                ChunkStep::ToCow(7)
            );
            assert_eq!(
                chunk_step(a, ChunkState::Pending(3u8)),
                ChunkStep::HoldOn(3)
            );
        }
        assert_eq!(
            chunk_step::<u8>(Read, ChunkState::NotCopied),
            ChunkStep::ReadOrigin
        );
        assert_eq!(
            chunk_step::<u8>(Write, ChunkState::NotCopied),
            ChunkStep::NewCopy
        );
    }
}
