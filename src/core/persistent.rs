//! The persistent exception store's on-disk format: dm-snapshot's
//! (`drivers/md/dm-snap-persistent.c`), so that a COW device written by
//! rdm is read by the kernel's dm-snapshot and the other way round.
//!
//! Layout of the COW device, in chunks of the snapshot's chunk size:
//!
//! ```text
//! chunk 0            header: le32 magic "SnAp" (0x70416e53), le32 valid,
//!                    le32 version (1), le32 chunk size in sectors
//! chunk 1            metadata area 0: `epa` entries {le64 old, le64 new}
//! chunks 2..=epa+1   data chunks described by area 0
//! chunk epa+2        metadata area 1, then its data chunks, and so on
//! ```
//!
//! `epa` (exceptions per area) is the chunk size in bytes / 16. An entry
//! whose `new` is 0 ends the list (chunk 0 is the header, never data); a
//! full area continues in the next one, which is zeroed on disk before the
//! full area is written, so a reader always finds an end. A header whose
//! magic is 0 is a new snapshot.
//!
//! This module is the arithmetic and the checks; the kernel side
//! (`src/snapshot/store.rs`) does the I/O. dm-snapshot commits exceptions
//! in the order their copies complete; rdm commits them in the order their
//! chunks were allocated ([`Appender`]), so the entries on disk always
//! describe a prefix of the allocated chunks: a crash leaks no COW space
//! below the last committed chunk and never hands one out twice.

use super::snapshot::NoRoom;
use core::fmt;
use core::num::NonZeroU64;

/// "SnAp", the header's magic.
pub const SNAP_MAGIC: u32 = 0x7041_6e53;
/// The only on-disk version there is.
pub const DISK_VERSION: u32 = 1;
/// Bytes of one metadata entry.
pub const ENTRY_BYTES: usize = 16;
/// The header's bytes at the start of chunk 0 (the rest of it is zero).
pub const HEADER_BYTES: usize = 16;
/// Chunk size of a new snapshot whose table gives 0 (dm's default).
pub const DEFAULT_CHUNK_SECTORS: u64 = 32;
/// Largest origin chunk number an entry may hold: 2^48 chunks of at least
/// 512 bytes is far past any device, and keeps run arithmetic in range.
pub const MAX_OLD_CHUNK: u64 = (1 << 48) - 1;

/// What is wrong with a COW device's metadata.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum FormatError {
    /// The magic is neither 0 (new) nor "SnAp".
    BadMagic(u32),
    /// A version other than 1.
    BadVersion(u32),
    /// The COW device cannot hold the header and the first area.
    TooSmall {
        /// Whole chunks on the device.
        cow_chunks: u64,
    },
    /// An entry's COW chunk is past the end of the device.
    PastEnd {
        /// The entry's area.
        area: u64,
        /// The entry's index in its area.
        index: u64,
        /// Its COW chunk.
        new: u64,
    },
    /// An entry's COW chunk is the header or a metadata area.
    OnMetadata {
        /// The entry's area.
        area: u64,
        /// The entry's index in its area.
        index: u64,
        /// Its COW chunk.
        new: u64,
    },
    /// An entry's origin chunk is out of range.
    OldOutOfRange {
        /// The entry's area.
        area: u64,
        /// The entry's index in its area.
        index: u64,
        /// Its origin chunk.
        old: u64,
    },
    /// Two entries for one origin chunk.
    Duplicate {
        /// The origin chunk.
        old: u64,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FormatError::BadMagic(m) => write!(
                f,
                "invalid or corrupt snapshot header (magic {m:#010x}, expected {SNAP_MAGIC:#010x})"
            ),
            FormatError::BadVersion(v) => {
                write!(f, "unsupported snapshot metadata version {v} (rdm reads version {DISK_VERSION})")
            }
            FormatError::TooSmall { cow_chunks } => write!(
                f,
                "COW device too small: {cow_chunks} chunks, the header and the first metadata area need 2"
            ),
            FormatError::PastEnd { area, index, new } => write!(
                f,
                "corrupt metadata: area {area} entry {index} points to chunk {new}, past the end of the COW device"
            ),
            FormatError::OnMetadata { area, index, new } => write!(
                f,
                "corrupt metadata: area {area} entry {index} points to chunk {new}, which holds metadata"
            ),
            FormatError::OldOutOfRange { area, index, old } => write!(
                f,
                "corrupt metadata: area {area} entry {index} has origin chunk {old}, out of range"
            ),
            FormatError::Duplicate { old } => {
                write!(f, "corrupt metadata: origin chunk {old} has two exceptions")
            }
        }
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    for (i, byte) in v.iter_mut().enumerate() {
        *byte = b[at + i];
    }
    u64::from_le_bytes(v)
}

fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
    for (i, byte) in bytes.iter().enumerate() {
        b[at + i] = *byte;
    }
}

/// A decoded header.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Header {
    /// The snapshot was not invalidated.
    pub valid: bool,
    /// Chunk size in sectors, as recorded (checked by the caller like a
    /// table's chunk size).
    pub chunk_sectors: u32,
}

/// Decodes the first [`HEADER_BYTES`] of chunk 0: `None` for a new
/// snapshot (magic 0).
pub fn decode_header(b: &[u8; HEADER_BYTES]) -> Result<Option<Header>, FormatError> {
    let magic = le32(b, 0);
    if magic == 0 {
        return Ok(None);
    }
    if magic != SNAP_MAGIC {
        return Err(FormatError::BadMagic(magic));
    }
    let version = le32(b, 8);
    if version != DISK_VERSION {
        return Err(FormatError::BadVersion(version));
    }
    Ok(Some(Header {
        valid: le32(b, 4) != 0,
        chunk_sectors: le32(b, 12),
    }))
}

/// The header bytes for a snapshot of `chunk_sectors`.
pub fn encode_header(valid: bool, chunk_sectors: u32) -> [u8; HEADER_BYTES] {
    let mut b = [0u8; HEADER_BYTES];
    put(&mut b, 0, &SNAP_MAGIC.to_le_bytes());
    put(&mut b, 4, &u32::from(valid).to_le_bytes());
    put(&mut b, 8, &DISK_VERSION.to_le_bytes());
    put(&mut b, 12, &chunk_sectors.to_le_bytes());
    b
}

/// Entry `index` of an area: `(old, new)`.
pub fn decode_entry(area: &[u8], index: usize) -> (u64, u64) {
    let at = index * ENTRY_BYTES;
    (le64(area, at), le64(area, at + 8))
}

/// Writes entry `index` of an area.
pub fn encode_entry(area: &mut [u8], index: usize, old: u64, new: u64) {
    let at = index * ENTRY_BYTES;
    put(area, at, &old.to_le_bytes());
    put(area, at + 8, &new.to_le_bytes());
}

/// Where the header, areas and data chunks are on a COW device.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Layout {
    chunk_sectors: u64,
    /// Entries per area (a chunk holds at least 512 bytes: 32 entries).
    epa: NonZeroU64,
    /// Chunks from one area to the next (`epa` + 1).
    stride: NonZeroU64,
    cow_chunks: u64,
}

impl Layout {
    /// The layout of a COW device of `cow_sectors` with chunks of
    /// `chunk_sectors` (a checked chunk size).
    pub fn new(chunk_sectors: u64, cow_sectors: u64) -> Result<Layout, FormatError> {
        let cow_chunks = cow_sectors.checked_div(chunk_sectors).unwrap_or(0);
        if cow_chunks < 2 {
            return Err(FormatError::TooSmall { cow_chunks });
        }
        let entries = chunk_sectors.saturating_mul(512) / ENTRY_BYTES as u64;
        let (Some(epa), Some(stride)) = (
            NonZeroU64::new(entries),
            NonZeroU64::new(entries.wrapping_add(1)),
        ) else {
            return Err(FormatError::TooSmall { cow_chunks });
        };
        Ok(Layout {
            chunk_sectors,
            epa,
            stride,
            cow_chunks,
        })
    }

    /// Exceptions per metadata area.
    pub fn epa(&self) -> u64 {
        self.epa.get()
    }

    /// Chunk size in sectors.
    pub fn chunk_sectors(&self) -> u64 {
        self.chunk_sectors
    }

    /// Whole chunks on the COW device.
    pub fn cow_chunks(&self) -> u64 {
        self.cow_chunks
    }

    /// Bytes of a chunk (of an area).
    pub fn chunk_bytes(&self) -> usize {
        (self.chunk_sectors * 512) as usize
    }

    /// The chunk that holds metadata area `area`.
    pub fn area_chunk(&self, area: u64) -> u64 {
        1 + area * self.stride.get()
    }

    /// Whether area `area` lies inside the device (its size when the
    /// layout was made: what the load reads).
    pub fn area_fits(&self, area: u64) -> bool {
        self.area_fits_in(area, self.cow_chunks)
    }

    /// Whether area `area` lies inside a COW device of `cow_chunks`.
    pub fn area_fits_in(&self, area: u64, cow_chunks: u64) -> bool {
        area.checked_mul(self.stride.get())
            .and_then(|c| c.checked_add(1))
            .is_some_and(|c| c < cow_chunks)
    }

    /// Whole chunks in a COW device of `cow_sectors`.
    pub fn chunks_in(&self, cow_sectors: u64) -> u64 {
        cow_sectors.checked_div(self.chunk_sectors).unwrap_or(0)
    }

    /// The first sector of `chunk`.
    pub fn sector_of(&self, chunk: u64) -> u64 {
        chunk * self.chunk_sectors
    }

    /// Whether `chunk` is the header or a metadata area.
    pub fn is_metadata(&self, chunk: u64) -> bool {
        chunk == 0 || (chunk - 1) / self.stride * self.stride.get() == chunk - 1
    }

    /// `chunk` if it is a data chunk, else the data chunk after it (the
    /// allocator's skip over the header and areas).
    pub fn skip_metadata(&self, chunk: u64) -> u64 {
        if self.is_metadata(chunk) {
            chunk + 1
        } else {
            chunk
        }
    }

    /// The area and index of the entry at `pos` (entries counted from the
    /// first of area 0).
    pub fn entry_at(&self, pos: u64) -> (u64, u64) {
        (pos / self.epa, pos % self.epa)
    }
}

/// Reads a COW device's metadata area after area: feed each area in turn
/// to [`Loader::feed`] until it says the list ended.
#[derive(Debug)]
pub struct Loader {
    layout: Layout,
    area: u64,
    next_free: u64,
    exceptions: u64,
    /// Entries in the last area read (the end of the list is there).
    in_area: u64,
    done: bool,
}

/// Where the list ended: what the store continues from.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Position {
    /// The area entries are appended to.
    pub area: u64,
    /// How many entries it holds.
    pub in_area: u64,
    /// The next COW chunk to allocate (past every one in use).
    pub next_free: u64,
    /// Exceptions read.
    pub exceptions: u64,
}

impl Loader {
    /// A loader that starts at area 0.
    pub fn new(layout: Layout) -> Loader {
        Loader {
            layout,
            area: 0,
            next_free: layout.skip_metadata(2),
            exceptions: 0,
            in_area: 0,
            done: false,
        }
    }

    /// The area to read next, or `None` once the list ended.
    pub fn next_area(&self) -> Option<u64> {
        (!self.done).then_some(self.area)
    }

    /// Takes the entries of the next area (`entry(i)`: its entry `i`,
    /// decoded), handing each exception to `add(old, new)`, which reports
    /// a duplicate origin chunk as `Err(())`.
    pub fn feed(
        &mut self,
        mut entry: impl FnMut(usize) -> (u64, u64),
        mut add: impl FnMut(u64, u64) -> Result<(), ()>,
    ) -> Result<(), FormatError> {
        let l = self.layout;
        let area = self.area;
        for index in 0..l.epa() {
            let (old, new) = entry(index as usize);
            if new == 0 {
                self.in_area = index;
                self.done = true;
                return Ok(());
            }
            if new >= l.cow_chunks {
                return Err(FormatError::PastEnd { area, index, new });
            }
            if l.is_metadata(new) {
                return Err(FormatError::OnMetadata { area, index, new });
            }
            if old > MAX_OLD_CHUNK {
                return Err(FormatError::OldOutOfRange { area, index, old });
            }
            add(old, new).map_err(|()| FormatError::Duplicate { old })?;
            self.exceptions += 1;
            if new >= self.next_free {
                self.next_free = l.skip_metadata(new + 1);
            }
        }
        // A full area: the list goes on in the next one, if the device
        // has room for it (rdm never fills the last area that fits; a
        // device written otherwise ends here).
        self.in_area = l.epa();
        if l.area_fits(area + 1) {
            self.area += 1;
        } else {
            self.done = true;
        }
        Ok(())
    }

    /// Where appending continues; call once [`Loader::next_area`] is `None`.
    pub fn position(&self) -> Position {
        Position {
            area: self.area,
            in_area: self.in_area,
            next_free: self.next_free,
            exceptions: self.exceptions,
        }
    }
}

impl Position {
    /// Bytes at the start of the area appended to that hold its entries.
    ///
    /// The image of that area which later commits fill and write out whole
    /// must keep these bytes and be zero after them ([`clear_after_end`]).
    /// What follows the end of the list on disk is not part of it: the
    /// entries of an area write torn by a crash, or of an older list. Kept
    /// in the image, they would be written back behind the new entries, and
    /// once those reach them the next load would read them as exceptions
    /// (pointing at chunks handed out again since). dm-snapshot keeps the
    /// area as read, with whatever follows the end.
    pub fn live_bytes(&self) -> usize {
        self.in_area as usize * ENTRY_BYTES
    }
}

/// Zeroes what follows the end of the list in `area`, the image of the
/// area `at` ends in (see [`Position::live_bytes`]).
pub fn clear_after_end(area: &mut [u8], at: &Position) {
    let live = at.live_bytes().min(area.len());
    for byte in &mut area[live..] {
        *byte = 0;
    }
}

/// A new exception's place: its entry's position and its COW chunk.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Place {
    /// Position of its entry (counted from the first entry of area 0).
    pub pos: u64,
    /// Its COW chunk.
    pub new_chunk: u64,
}

/// Hands out COW chunks and entry positions, one of each per exception,
/// in the same order (so that committing entries in position order is
/// committing them in allocation order).
#[derive(Debug, Clone, Copy)]
pub struct Appender {
    layout: Layout,
    next_pos: u64,
    next_free: u64,
}

impl Appender {
    /// Continues after `at` (a loaded device) or from the start (new).
    pub fn new(layout: Layout, at: Option<Position>) -> Appender {
        match at {
            Some(p) => Appender {
                layout,
                next_pos: p.area * layout.epa() + p.in_area,
                next_free: p.next_free,
            },
            None => Appender {
                layout,
                next_pos: 0,
                next_free: layout.skip_metadata(2),
            },
        }
    }

    /// A place for a new exception on a COW device of `cow_chunks` (its
    /// size now: a device that grew is used at once, as dm's
    /// `persistent_prepare_exception` sizes it every time). The chunk must
    /// fit, and an entry that fills its area needs the next area to fit
    /// too (it is zeroed before the full area is written). A device that
    /// shrank below the chunks already handed out is [`NoRoom::Shrunk`].
    pub fn allocate(&mut self, cow_chunks: u64) -> Result<Place, NoRoom> {
        let l = self.layout;
        let new_chunk = self.next_free;
        if cow_chunks < new_chunk {
            return Err(NoRoom::Shrunk {
                in_use: new_chunk.saturating_mul(l.chunk_sectors),
            });
        }
        if new_chunk >= cow_chunks {
            return Err(NoRoom::Full);
        }
        let (area, index) = l.entry_at(self.next_pos);
        if !l.area_fits_in(area, cow_chunks)
            || (index + 1 == l.epa() && !l.area_fits_in(area + 1, cow_chunks))
        {
            return Err(NoRoom::Full);
        }
        let place = Place {
            pos: self.next_pos,
            new_chunk,
        };
        self.next_pos += 1;
        self.next_free = l.skip_metadata(new_chunk + 1);
        Ok(place)
    }

    /// A merge cut the list to `len` entries ([`merge_cut`]): the next
    /// entry goes at `len`, and the next free chunk is the one after that
    /// entry's place in allocation order (dm's figure after a
    /// `commit_merge`, [`merge_usage`]).
    pub fn merged_to(&mut self, len: u64) {
        self.next_pos = len;
        self.next_free = merge_usage(&self.layout, len).0;
    }

    /// The next COW chunk to hand out (status: allocated = this × chunk).
    pub fn next_free(&self) -> u64 {
        self.next_free
    }

    /// Position of the next entry to hand out.
    pub fn next_pos(&self) -> u64 {
        self.next_pos
    }
}

/// The writes that commit entries `[from, to)`: areas `first..=last`,
/// where each area after the first is written (with its entries, or zeroed
/// when the previous one just filled) and completes before the first is
/// written with FLUSH+FUA — so a crash leaves either the old list or the
/// new one, never a full area followed by garbage.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct CommitPlan {
    /// The area written last, with FLUSH+FUA.
    pub first: u64,
    /// The last area written before it.
    pub last: u64,
}

impl CommitPlan {
    /// The plan to commit entries `[from, to)`.
    pub fn new(layout: &Layout, from: u64, to: u64) -> CommitPlan {
        let (first, _) = layout.entry_at(from);
        // `to` is the position after the last entry: when it starts an
        // area, that area must be zeroed (its first entry is the end).
        let (last, _) = layout.entry_at(to);
        CommitPlan { first, last }
    }
}

/// Merging a snapshot back into its origin, in dm-snapshot's on-disk
/// protocol (`persistent_prepare_merge`/`persistent_commit_merge`): the
/// exceptions leave the list from its end, newest first. Once the chunks
/// of the entries `[lo, len)` are copied back and the origin is flushed,
/// the list is cut to `lo` entries by one write (FLUSH+FUA) of the area
/// that position `lo` falls in ([`merge_cut`]): its first `lo % epa`
/// entries and zeros after them. Entries in later areas stay on disk
/// behind the end of the list, which no reader passes (a loader stops in
/// the first area that is not full), and an area is zeroed before the
/// list grows into it again. dm cuts one run of consecutive chunks of one
/// area at a time and writes that area; a cut that reaches back over
/// several areas leaves the device in a state dm's cuts also reach (the
/// list ending in an earlier area), so either implementation goes on
/// from where the other stopped. A crash before the write leaves the
/// entries to be merged again: the copy is repeated from the COW chunks,
/// which nothing changed (the merging snapshot takes no new exceptions,
/// and writes to its unmerged chunks go to those COW chunks first).
///
/// The area to write to cut the list to `lo` entries, and how many
/// entries it keeps.
pub fn merge_cut(layout: &Layout, lo: u64) -> (u64, u64) {
    layout.entry_at(lo)
}

/// The store's figures while merging, as dm-snapshot keeps them after a
/// `commit_merge` left `len` entries: the next free chunk (the status's
/// allocated sectors are this × chunk size: the header, the areas up to
/// the current one and one data chunk per entry of it, as if every entry
/// had been committed in order) and the current area (the metadata
/// sectors are (area + 2) × chunk size). With no entry left: 2 chunks
/// allocated, 2 of metadata.
pub fn merge_usage(layout: &Layout, len: u64) -> (u64, u64) {
    let (area, index) = layout.entry_at(len);
    (layout.area_chunk(area) + index + 1, area)
}

/// The copies of a merge batch: `entries` (`(old, new)`, sorted by origin
/// chunk) grouped into runs of consecutive origin chunks stored in
/// consecutive COW chunks, at most `max_chunks` each, as `(old, new,
/// chunks)`.
pub fn merge_copies(entries: &[(u64, u64)], max_chunks: u64) -> MergeCopies<'_> {
    MergeCopies {
        entries,
        at: 0,
        max_chunks: max_chunks.max(1),
    }
}

/// The iterator of [`merge_copies`].
pub struct MergeCopies<'a> {
    entries: &'a [(u64, u64)],
    at: usize,
    max_chunks: u64,
}

impl Iterator for MergeCopies<'_> {
    type Item = (u64, u64, u64);

    fn next(&mut self) -> Option<(u64, u64, u64)> {
        let &(old, new) = self.entries.get(self.at)?;
        let mut n = 1;
        while n < self.max_chunks {
            match self.entries.get(self.at + n as usize) {
                Some(&(o, w)) if Some(o) == old.checked_add(n) && Some(w) == new.checked_add(n) => {
                    n += 1
                }
                _ => break,
            }
        }
        self.at += n as usize;
        Some((old, new, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::vec;
    use std::vec::Vec;

    fn layout(chunk: u64, cow_chunks: u64) -> Layout {
        Layout::new(chunk, chunk * cow_chunks).unwrap()
    }

    #[test]
    fn header_round_trip_and_errors() {
        let h = encode_header(true, 16);
        assert_eq!(&h[..4], b"SnAp");
        assert_eq!(
            decode_header(&h),
            Ok(Some(Header {
                valid: true,
                chunk_sectors: 16
            }))
        );
        let h = encode_header(false, 8);
        assert!(!decode_header(&h).unwrap().unwrap().valid);
        assert_eq!(decode_header(&[0; 16]), Ok(None));
        let mut bad = encode_header(true, 8);
        bad[0] = b'X';
        assert!(matches!(decode_header(&bad), Err(FormatError::BadMagic(_))));
        let mut v2 = encode_header(true, 8);
        v2[8] = 2;
        assert_eq!(decode_header(&v2), Err(FormatError::BadVersion(2)));
    }

    #[test]
    fn layout_arithmetic_matches_dm() {
        // 4 KiB chunks: 256 entries per area; area 1 at chunk 258.
        let l = layout(8, 10_000);
        assert_eq!(l.epa(), 256);
        assert_eq!(l.area_chunk(0), 1);
        assert_eq!(l.area_chunk(1), 258);
        assert!(l.is_metadata(0) && l.is_metadata(1) && l.is_metadata(258));
        assert!(!l.is_metadata(2) && !l.is_metadata(257) && !l.is_metadata(259));
        assert_eq!(l.skip_metadata(258), 259);
        assert_eq!(l.skip_metadata(2), 2);
        assert_eq!(
            Layout::new(8, 15),
            Err(FormatError::TooSmall { cow_chunks: 1 })
        );
        // 1 KiB chunks (2 sectors): 64 entries per area.
        assert_eq!(layout(2, 100).epa(), 64);
    }

    #[test]
    fn allocation_skips_areas_and_stops_at_the_end() {
        let l = layout(1, 200); // 32 entries per area, areas at 1, 34, 67, ...
        let mut a = Appender::new(l, None);
        let mut chunks = Vec::new();
        while let Ok(s) = a.allocate(l.cow_chunks()) {
            assert_eq!(s.pos, chunks.len() as u64);
            assert!(!l.is_metadata(s.new_chunk));
            chunks.push(s.new_chunk);
        }
        assert_eq!(chunks[0], 2);
        assert_eq!(chunks[31], 33);
        assert_eq!(chunks[32], 35);
        // Every data chunk below 200 whose entry's area (and, for the last
        // entry of an area, the next area) fits.
        let last = *chunks.last().unwrap();
        assert!(last < 200);
        // Areas at 1, 34, 67, 100, 133, 166, 199: area 6 (chunk 199) fits
        // but has no data chunk after it; the entry that fills area 5
        // needs area 6 (fits), so chunks up to 198 are used.
        assert_eq!(last, 198);
        assert_eq!(chunks.len(), 6 * 32);
    }

    #[test]
    fn filling_the_last_area_needs_room_for_the_next() {
        // 3 chunks per area-and-data group with epa 2 is not possible (epa
        // is >= 32), so use epa 32 and a device ending right after the
        // data of area 0: chunks 0..34 (area 1 would be chunk 34).
        let l = layout(1, 34);
        let mut a = Appender::new(l, None);
        let n = core::iter::from_fn(|| a.allocate(l.cow_chunks()).ok()).count();
        // The 32nd entry would fill area 0 with no room for area 1.
        assert_eq!(n, 31);
    }

    #[test]
    fn allocation_follows_the_cow_device_size() {
        // A device ending right after the data of area 0, as above: full
        // after 31 exceptions.
        let l = layout(1, 34);
        let mut a = Appender::new(l, None);
        let first: Vec<_> = core::iter::from_fn(|| a.allocate(34).ok()).collect();
        assert_eq!(first.len(), 31);
        assert_eq!(a.allocate(34), Err(NoRoom::Full));
        // Grown to 100 chunks: area 1 (chunk 34) fits, the 32nd entry may
        // fill area 0, and the next chunk skips area 1.
        let s = a.allocate(100).unwrap();
        assert_eq!((s.pos, s.new_chunk), (31, 33));
        let s = a.allocate(100).unwrap();
        assert_eq!((s.pos, s.new_chunk), (32, 35));
        // Shrunk to exactly the chunks in use: full. Below: shrunk, with
        // the sectors in use (chunks 0..=35, one sector each).
        assert_eq!(a.allocate(36), Err(NoRoom::Full));
        assert_eq!(a.allocate(35), Err(NoRoom::Shrunk { in_use: 36 }));
        assert_eq!(a.allocate(0), Err(NoRoom::Shrunk { in_use: 36 }));
        // Grown again: it goes on where it was.
        assert_eq!(a.allocate(37).map(|s| s.new_chunk), Ok(36));
        // A device written while small loads at its new size.
        let ex: Vec<_> = first
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64, s.new_chunk))
            .collect();
        let grown = layout(1, 100);
        let (got, pos) = load(grown, &image_with(grown, &ex)).unwrap();
        assert_eq!(got.len(), 31);
        assert_eq!(
            Appender::new(grown, Some(pos))
                .allocate(100)
                .unwrap()
                .new_chunk,
            33
        );
        assert_eq!(l.chunks_in(35), 35);
        assert_eq!(layout(8, 10).chunks_in(79), 9);
    }

    /// Writes a device image the way rdm commits (entries in allocation
    /// order) and reads it back with the loader.
    fn image_with(l: Layout, exceptions: &[(u64, u64)]) -> Vec<Vec<u8>> {
        let areas = (exceptions.len() as u64 / l.epa() + 2) as usize;
        let mut img = vec![vec![0u8; l.chunk_bytes()]; areas];
        for (pos, &(old, new)) in exceptions.iter().enumerate() {
            let (area, index) = l.entry_at(pos as u64);
            encode_entry(&mut img[area as usize], index as usize, old, new);
        }
        img
    }

    fn load(l: Layout, img: &[Vec<u8>]) -> Result<(BTreeMap<u64, u64>, Position), FormatError> {
        let mut got = BTreeMap::new();
        let mut loader = Loader::new(l);
        while let Some(area) = loader.next_area() {
            let bytes = img
                .get(area as usize)
                .cloned()
                .unwrap_or_else(|| vec![0; l.chunk_bytes()]);
            loader.feed(
                |i| decode_entry(&bytes, i),
                |o, n| match got.insert(o, n) {
                    None => Ok(()),
                    Some(_) => Err(()),
                },
            )?;
        }
        Ok((got, loader.position()))
    }

    #[test]
    fn load_after_appends_continues_where_it_ended() {
        let l = layout(1, 1000);
        let mut a = Appender::new(l, None);
        let mut ex = Vec::new();
        for i in 0..100u64 {
            let s = a.allocate(l.cow_chunks()).unwrap();
            ex.push((i * 7 % 1013, s.new_chunk));
        }
        let img = image_with(l, &ex);
        let (got, pos) = load(l, &img).unwrap();
        assert_eq!(got.len(), 100);
        for (o, n) in &ex {
            assert_eq!(got[o], *n);
        }
        assert_eq!(pos.exceptions, 100);
        assert_eq!((pos.area, pos.in_area), (3, 4)); // 100 = 3 * 32 + 4
        assert_eq!(pos.next_free, a.next_free());
        // Appending after the load picks up the same positions and chunks.
        let mut b = Appender::new(l, Some(pos));
        assert_eq!(b.next_pos(), a.next_pos());
        assert_eq!(b.allocate(l.cow_chunks()), a.allocate(l.cow_chunks()));
    }

    #[test]
    fn full_area_then_zeroed_area_ends_the_list() {
        let l = layout(1, 1000);
        let mut a = Appender::new(l, None);
        let ex: Vec<_> = (0..32u64)
            .map(|i| (i, a.allocate(l.cow_chunks()).unwrap().new_chunk))
            .collect();
        let img = image_with(l, &ex);
        let (got, pos) = load(l, &img).unwrap();
        assert_eq!(got.len(), 32);
        assert_eq!((pos.area, pos.in_area), (1, 0));
        assert_eq!(
            Appender::new(l, Some(pos)).allocate(l.cow_chunks()),
            a.allocate(l.cow_chunks())
        );
    }

    #[test]
    fn dm_style_out_of_order_commits_load() {
        // dm commits in completion order: chunks out of order, with gaps
        // (copies that never committed). The next free chunk is past the
        // largest in use.
        let l = layout(1, 1000);
        let ex = [(5u64, 4u64), (9, 2), (1, 7)];
        let img = image_with(l, &ex);
        let (got, pos) = load(l, &img).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(pos.next_free, 8);
        assert_eq!(pos.in_area, 3);
    }

    #[test]
    fn corrupt_entries_are_refused() {
        let l = layout(1, 100);
        let past = image_with(l, &[(0, 2), (1, 100)]);
        assert_eq!(
            load(l, &past).unwrap_err(),
            FormatError::PastEnd {
                area: 0,
                index: 1,
                new: 100
            }
        );
        let meta = image_with(l, &[(0, 34)]);
        assert!(matches!(
            load(l, &meta),
            Err(FormatError::OnMetadata { .. })
        ));
        let header = image_with(l, &[(3, 1)]);
        assert!(matches!(
            load(l, &header),
            Err(FormatError::OnMetadata { .. })
        ));
        let dup = image_with(l, &[(3, 2), (3, 3)]);
        assert_eq!(
            load(l, &dup).unwrap_err(),
            FormatError::Duplicate { old: 3 }
        );
        let old = image_with(l, &[(u64::MAX, 2)]);
        assert!(matches!(
            load(l, &old),
            Err(FormatError::OldOutOfRange { .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        // Pseudo-random areas: the loader either refuses or stops, never
        // panics or runs past the device.
        let l = layout(1, 300);
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..200 {
            let img: Vec<Vec<u8>> = (0..10)
                .map(|_| {
                    (0..l.chunk_bytes())
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            // Mostly small numbers so some entries pass.
                            if x % 3 < 1 {
                                (x >> 8) as u8
                            } else {
                                0
                            }
                        })
                        .collect()
                })
                .collect();
            let _ = load(l, &img);
        }
    }

    /// Loads `img` and returns the image of the area the list ends in as
    /// the store keeps it for its commits (zero after the end), with the
    /// position.
    fn kept_area(l: Layout, img: &[Vec<u8>]) -> (Vec<u8>, Position) {
        let (_, pos) = load(l, img).unwrap();
        let mut area = img[pos.area as usize].clone();
        clear_after_end(&mut area, &pos);
        (area, pos)
    }

    #[test]
    fn stale_entries_after_the_end_are_not_written_back() {
        // Area 0 holds 10 entries, the end, then 20 stale entries (indices
        // 11..31): what a torn write of a longer list (or an older list)
        // leaves behind.
        let l = layout(1, 1000); // epa 32
        let mut a = Appender::new(l, None);
        let live: Vec<_> = (0..10u64)
            .map(|i| (i, a.allocate(l.cow_chunks()).unwrap().new_chunk))
            .collect();
        let mut img = image_with(l, &live);
        let stale: Vec<(u64, u64)> = (11..31u64).map(|i| (500 + i, i + 3)).collect();
        for (i, &(old, new)) in stale.iter().enumerate() {
            encode_entry(&mut img[0], 11 + i, old, new);
        }
        let (got, pos) = load(l, &img).unwrap();
        assert_eq!(got.len(), 10, "the load stops at the end");
        assert_eq!((pos.area, pos.in_area), (0, 10));
        assert_eq!(pos.live_bytes(), 10 * ENTRY_BYTES);
        // Commits continue from the kept image: 15 more entries (positions
        // 10..25) reach past the stale ones' positions, but not the end of
        // the area.
        let (mut area, pos) = kept_area(l, &img);
        assert!(area[pos.live_bytes()..].iter().all(|&b| b == 0));
        assert_eq!(&area[..pos.live_bytes()], &img[0][..pos.live_bytes()]);
        let mut b = Appender::new(l, Some(pos));
        let mut raw = img[0].clone();
        let mut want: BTreeMap<u64, u64> = live.iter().copied().collect();
        for k in 0..15u64 {
            let s = b.allocate(l.cow_chunks()).unwrap();
            let (area_no, index) = l.entry_at(s.pos);
            assert_eq!(area_no, 0);
            encode_entry(&mut area, index as usize, 100 + k, s.new_chunk);
            encode_entry(&mut raw, index as usize, 100 + k, s.new_chunk);
            want.insert(100 + k, s.new_chunk);
        }
        let mut after = img.clone();
        after[0] = area;
        let (got, pos) = load(l, &after).unwrap();
        assert_eq!(got, want, "exactly the committed exceptions");
        assert_eq!(pos.in_area, 25);
        // The same commits over the area as read would bring back the
        // stale entries behind the new ones (indices 25..31).
        let mut bad = img.clone();
        bad[0] = raw;
        let (got, _) = load(l, &bad).unwrap();
        assert_eq!(got.len(), 25 + 6);
        assert!(stale[14..].iter().all(|(o, _)| got.contains_key(o)));
    }

    #[test]
    fn a_full_last_area_is_kept_whole() {
        // The list ends because the device has no room for another area:
        // the last area is full and kept as it is.
        let l = layout(1, 34); // area 0 at chunk 1, no room for area 1
        let ex: Vec<_> = (0..32u64).map(|i| (i, 2 + i)).collect();
        let img = image_with(l, &ex);
        let (area, pos) = kept_area(l, &img);
        assert_eq!((pos.area, pos.in_area), (0, 32));
        assert_eq!(pos.live_bytes(), l.chunk_bytes());
        assert_eq!(area, img[0]);
        // An empty list keeps nothing.
        let (area, pos) = kept_area(l, &image_with(l, &[]));
        assert_eq!(pos.live_bytes(), 0);
        assert!(area.iter().all(|&b| b == 0));
    }

    /// dm-snap-persistent's merge, step by step, on an image: its state
    /// after a load (the area the list ends in and the entries in it), a
    /// `prepare_merge` (the run of consecutive chunks at the end of the
    /// current area, moving back an area when it is empty) and a
    /// `commit_merge` (those entries cleared, the area written).
    struct DmMerge {
        area: u64,
        committed: u64,
    }

    impl DmMerge {
        fn load(l: Layout, img: &[Vec<u8>]) -> DmMerge {
            let (_, pos) = load(l, img).unwrap();
            DmMerge {
                area: pos.area,
                committed: pos.in_area,
            }
        }

        /// One merge step; the entries it dropped, or None when done.
        fn step(&mut self, l: Layout, img: &mut [Vec<u8>]) -> Option<Vec<(u64, u64)>> {
            if self.committed == 0 {
                if self.area == 0 {
                    return None;
                }
                self.area -= 1;
                self.committed = l.epa();
            }
            let a = &mut img[self.area as usize];
            let (lo, ln) = decode_entry(a, self.committed as usize - 1);
            let mut n = 1;
            while n < self.committed {
                let (o, w) = decode_entry(a, (self.committed - 1 - n) as usize);
                if o != lo - n || w != ln - n {
                    break;
                }
                n += 1;
            }
            let mut gone = Vec::new();
            for i in 0..n {
                let idx = (self.committed - 1 - i) as usize;
                gone.push(decode_entry(a, idx));
                encode_entry(a, idx, 0, 0);
            }
            self.committed -= n;
            Some(gone)
        }
    }

    /// rdm's cut of the list to `lo` entries: the area `lo` falls in,
    /// rewritten from the entries before `lo` (zeros after).
    fn rdm_cut(l: Layout, img: &mut [Vec<u8>], lo: u64) {
        let (area, keep) = merge_cut(&l, lo);
        let mut fresh = vec![0u8; l.chunk_bytes()];
        for i in 0..keep as usize {
            let (o, n) = decode_entry(&img[area as usize], i);
            encode_entry(&mut fresh, i, o, n);
        }
        img[area as usize] = fresh;
    }

    #[test]
    fn merges_by_rdm_and_dm_take_turns() {
        // A list over several areas, in an order dm could have written
        // (runs of consecutive chunks, and scattered ones); batches of
        // rdm's cuts (across areas, of any size) and dm's steps, taking
        // turns: after every write, a load finds exactly the entries not
        // merged yet, and each side goes on from what the other left.
        let l = layout(1, 2000); // 32 entries per area
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..40 {
            let mut a = Appender::new(l, None);
            let mut ex = Vec::new();
            let total = 1 + next() % 400;
            let mut old = 0;
            while (ex.len() as u64) < total {
                old = if next() % 3 == 0 {
                    old + 1
                } else {
                    next() % 100_000
                };
                if ex.iter().any(|&(o, _)| o == old) {
                    continue;
                }
                let Ok(s) = a.allocate(l.cow_chunks()) else {
                    break;
                };
                ex.push((old, s.new_chunk));
            }
            let mut img = image_with(l, &ex);
            let mut len = ex.len() as u64;
            let mut merged = 0;
            while len > 0 {
                if (next() + round) % 2 == 0 {
                    let lo = len.saturating_sub(1 + next() % 100);
                    rdm_cut(l, &mut img, lo);
                    merged += len - lo;
                    len = lo;
                } else {
                    let mut dm = DmMerge::load(l, &img);
                    for _ in 0..1 + next() % 5 {
                        let Some(gone) = dm.step(l, &mut img) else {
                            break;
                        };
                        for (i, e) in gone.iter().enumerate() {
                            assert_eq!(*e, ex[(len - 1) as usize - i], "dm merges newest first");
                        }
                        len -= gone.len() as u64;
                        merged += gone.len() as u64;
                    }
                }
                let (got, pos) = load(l, &img).unwrap();
                let want: BTreeMap<u64, u64> = ex[..len as usize].iter().copied().collect();
                assert_eq!(got, want, "round {round}: the list after merging {merged}");
                assert_eq!(pos.area * l.epa() + pos.in_area, len);
            }
            assert!(DmMerge::load(l, &img).step(l, &mut img).is_none());
        }
    }

    #[test]
    fn merge_usage_is_dms() {
        let l = layout(8, 100_000); // 256 entries per area, areas at 1, 258, ...
                                    // All merged: "16/total 16" for 8-sector chunks.
        assert_eq!(merge_usage(&l, 0), (2, 0));
        // dm after commit_merge: next_free = area_location(area) +
        // current_committed + 1, metadata (area + 2) chunks.
        assert_eq!(merge_usage(&l, 10), (1 + 10 + 1, 0));
        assert_eq!(merge_usage(&l, 256), (258 + 1, 1));
        assert_eq!(merge_usage(&l, 300), (258 + 44 + 1, 1));
        assert_eq!(merge_cut(&l, 300), (1, 44));
        assert_eq!(merge_cut(&l, 256), (1, 0));
        // An appender after a merge: the next entry's chunk in order.
        let mut a = Appender::new(l, None);
        for _ in 0..300 {
            a.allocate(l.cow_chunks()).unwrap();
        }
        let mut b = Appender::new(l, None);
        for _ in 0..44 {
            b.allocate(l.cow_chunks()).unwrap();
        }
        a.merged_to(44);
        assert_eq!((a.next_pos(), a.next_free()), (b.next_pos(), b.next_free()));
        assert_eq!(a.allocate(l.cow_chunks()), b.allocate(l.cow_chunks()));
    }

    #[test]
    fn merge_copies_group_runs() {
        let e = [
            (1, 10),
            (2, 11),
            (3, 12),
            (4, 20),
            (5, 21),
            (9, 22),
            (10, 23),
        ];
        let c: Vec<_> = merge_copies(&e, 100).collect();
        assert_eq!(c, [(1, 10, 3), (4, 20, 2), (9, 22, 2)]);
        let c: Vec<_> = merge_copies(&e, 2).collect();
        assert_eq!(c, [(1, 10, 2), (3, 12, 1), (4, 20, 2), (9, 22, 2)]);
        assert_eq!(merge_copies(&[], 4).count(), 0);
        let top = [(u64::MAX - 1, 5), (u64::MAX, 6)];
        assert_eq!(
            merge_copies(&top, 0).collect::<Vec<_>>(),
            [(u64::MAX - 1, 5, 1), (u64::MAX, 6, 1)]
        );
    }

    #[test]
    fn commit_plan_orders_later_areas_first() {
        let l = layout(1, 1000); // epa 32
        assert_eq!(CommitPlan::new(&l, 0, 5), CommitPlan { first: 0, last: 0 });
        // Filling area 0 exactly: area 1 must be zeroed first.
        assert_eq!(
            CommitPlan::new(&l, 30, 32),
            CommitPlan { first: 0, last: 1 }
        );
        assert_eq!(
            CommitPlan::new(&l, 30, 70),
            CommitPlan { first: 0, last: 2 }
        );
        assert_eq!(
            CommitPlan::new(&l, 32, 33),
            CommitPlan { first: 1, last: 1 }
        );
    }
}
