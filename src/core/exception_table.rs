//! A snapshot's completed exceptions: origin chunk -> COW chunk.
//!
//! Exceptions are kept as *runs*: consecutive origin chunks copied to
//! consecutive COW chunks share one 16-byte entry (dm-snapshot packs runs
//! too, up to 256 chunks in a 32-byte `struct dm_exception` plus its hash
//! bucket). Runs live sorted in fixed-size leaves of [`LEAF_RUNS`] entries
//! (one 2 KiB allocation each); a leaf that fills up splits in two, so an
//! insert moves at most one leaf's worth of entries. A leaf is at least
//! half full except the newest, so the cost is 16 to 32 bytes per run.
//!
//! The leaves are indexed by *pages* of [`LeafPtr`]s (a leaf pointer and the
//! lowest origin chunk the leaf may hold, 16 bytes; [`PTRS_PER_PAGE`] of them
//! make one 4 KiB allocation), and the pages by a *directory* of
//! [`DirEntry`]s (a page, its lowest origin chunk and how many leaf pointers it
//! uses). A page that fills up splits in two like a leaf. Nothing is ever
//! allocated larger than a page but the directory, which holds one entry
//! per 128 to 256 leaves (one per 8,000 to 32,000 runs) and is the
//! caller's growable vector: the kernel's `KVVec`, which falls back to
//! `vmalloc`, so the table never needs physically contiguous memory of
//! more than one page however large it grows. An insert moves at most one
//! leaf of runs and one page of leaf pointers, and, when a page splits, the
//! directory entries after it. A lookup is three binary searches, over the
//! directory's keys, one page's keys and one leaf's runs: two pointer
//! dereferences.
//!
//! A merge removes exceptions ([`ExceptionTable::remove`]): the first or
//! last chunk of a run shortens it, a chunk inside splits it (which may
//! need a leaf, like an insert); a leaf that empties is freed, a page that
//! empties leaves the directory. Leaves are not joined back, so after
//! removals a leaf may be less than half full. A merge cannot let a
//! removal fail once the copy is on disk: it asks first how many runs its
//! batch splits ([`ExceptionTable::removal_splits`]) and sets that much
//! memory aside ([`ExceptionTable::reserve_for_removal`]).
//!
//! The memory is the caller's ([`TableMem`]): `Box` and `Vec` on the host
//! (tests inject allocation failures through it), `KBox`, `KVec` and
//! `KVVec` in the kernel. An insert makes every allocation it needs before
//! it changes anything, so one that fails leaves the table as it was. The
//! locking is the caller's too (the module keeps the table under a
//! read-write semaphore).

use core::fmt;
use core::mem::size_of;
use core::ops::DerefMut;

/// Runs per leaf: a leaf (8-byte header + 16 bytes per run) fits 2 KiB.
pub const LEAF_RUNS: usize = 127;

/// Leaf pointers per page the module uses: 256 leaf pointers of 16 bytes, one 4 KiB
/// allocation (the host tests use smaller pages too).
pub const PTRS_PER_PAGE: usize = 256;

/// Longest run (its length is kept in 16 bits).
pub const MAX_RUN: u64 = 1 << 16;

/// Largest COW chunk number a run can hold (48 bits).
pub const MAX_NEW_CHUNK: u64 = (1 << 48) - 1;

/// One run: `len` origin chunks from `old` map to COW chunks from `new`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Run {
    old: u64,
    /// COW chunk in the low 48 bits, run length - 1 in the high 16.
    new_len: u64,
}

impl Run {
    fn new(old: u64, new: u64, len: u64) -> Run {
        Run {
            old,
            new_len: new | ((len - 1) << 48),
        }
    }

    /// First origin chunk.
    pub fn old(&self) -> u64 {
        self.old
    }

    /// First COW chunk.
    pub fn new_chunk(&self) -> u64 {
        self.new_len & MAX_NEW_CHUNK
    }

    /// Number of chunks.
    pub fn len(&self) -> u64 {
        (self.new_len >> 48) + 1
    }

    /// Always false: a run holds at least one chunk.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn lookup(&self, chunk: u64) -> Option<u64> {
        let off = chunk.checked_sub(self.old)?;
        (off < self.len()).then(|| self.new_chunk() + off)
    }

    /// Adds `(old, new)` at the end of the run if it continues it.
    fn try_append(&mut self, old: u64, new: u64) -> bool {
        let len = self.len();
        if len < MAX_RUN && self.old + len == old && self.new_chunk() + len == new {
            *self = Run::new(self.old, self.new_chunk(), len + 1);
            return true;
        }
        false
    }

    /// Adds `(old, new)` in front of the run if it continues it downwards.
    fn try_prepend(&mut self, old: u64, new: u64) -> bool {
        let len = self.len();
        if len < MAX_RUN && old + 1 == self.old && new + 1 == self.new_chunk() {
            *self = Run::new(old, new, len + 1);
            return true;
        }
        false
    }
}

/// A leaf: up to [`LEAF_RUNS`] runs sorted by origin chunk.
#[derive(Clone)]
pub struct Leaf {
    len: u32,
    runs: [Run; LEAF_RUNS],
}

impl Leaf {
    /// An empty leaf (all zero bytes).
    pub const EMPTY: Leaf = Leaf {
        len: 0,
        runs: [Run { old: 0, new_len: 0 }; LEAF_RUNS],
    };

    fn runs(&self) -> &[Run] {
        &self.runs[..self.len as usize]
    }

    fn first_old(&self) -> u64 {
        self.runs[0].old
    }

    /// Index of the last run starting at or before `chunk`, if any.
    fn run_before(&self, chunk: u64) -> Option<usize> {
        self.runs()
            .partition_point(|r| r.old <= chunk)
            .checked_sub(1)
    }

    fn lookup(&self, chunk: u64) -> Option<u64> {
        self.runs[self.run_before(chunk)?].lookup(chunk)
    }

    fn is_full(&self) -> bool {
        self.len as usize == LEAF_RUNS
    }

    /// Inserts `run` at `i` (the leaf is not full).
    fn insert_at(&mut self, i: usize, run: Run) {
        let len = self.len as usize;
        self.runs.copy_within(i..len, i + 1);
        self.runs[i] = run;
        self.len += 1;
    }

    /// Removes the run at `i`.
    fn remove_at(&mut self, i: usize) {
        let len = self.len as usize;
        self.runs.copy_within(i + 1..len, i);
        self.len -= 1;
    }

    /// Moves the upper half of the runs into the empty leaf `to`.
    fn split_into(&mut self, to: &mut Leaf) {
        let len = self.len as usize;
        let half = len / 2;
        for (dst, src) in to.runs.iter_mut().zip(&self.runs[half..len]) {
            *dst = *src;
        }
        to.len = (len - half) as u32;
        self.len = half as u32;
    }
}

/// Index of the last of `items` (sorted by `key`) whose key is at or below
/// `chunk`, if any: a binary search whose branches are well predicted when
/// lookups come near each other, as a device's I/O does.
#[inline]
fn last_at_or_below<T>(items: &[T], chunk: u64, key: impl Fn(&T) -> u64) -> Option<usize> {
    let (mut lo, mut hi) = (0, items.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if items.get(mid).is_some_and(|x| key(x) <= chunk) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.checked_sub(1)
}

/// Out of memory (for a leaf, a page or the directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoMemory;

/// One leaf pointer of a page: a leaf, and the lowest origin chunk it may hold
/// (the first chunk of its first run; 0 for the table's first leaf).
pub struct LeafPtr<L> {
    key: u64,
    leaf: Option<L>,
}

impl<L> LeafPtr<L> {
    /// An unused leaf pointer.
    pub const EMPTY: Self = LeafPtr { key: 0, leaf: None };
}

/// A page's entry in the directory.
pub struct DirEntry<P> {
    /// Lowest origin chunk the page's leaves may hold (its first leaf pointer's key).
    key: u64,
    /// Leaf pointers in use, from the first.
    len: usize,
    page: P,
}

/// How the table gets its memory (the caller's allocators).
///
/// Leaves and pages are allocated one at a time and never grow; only the
/// directory grows, and [`TableMem::reserve_dir`] is where it does: an
/// implementation that must not need physically contiguous memory larger
/// than a page makes the directory fall back to virtually contiguous
/// memory (the kernel's `KVVec`).
pub trait TableMem {
    /// Leaf pointers per page: what every [`TableMem::new_page`] holds (at least 2).
    const PTRS_PER_PAGE: usize;
    /// An owned leaf (`Box<Leaf>`; `KBox<Leaf>` in the kernel).
    type Leaf: DerefMut<Target = Leaf>;
    /// A page: `PTRS_PER_PAGE` leaf pointers in one allocation.
    type Page: DerefMut<Target = [LeafPtr<Self::Leaf>]>;
    /// The directory: a vector of page entries that grows.
    type Dir: DerefMut<Target = [DirEntry<Self::Page>]>;

    /// A new leaf (the table empties it).
    fn new_leaf(&mut self) -> Result<Self::Leaf, NoMemory>;
    /// A new page of `PTRS_PER_PAGE` leaf pointers, every one [`LeafPtr::EMPTY`].
    fn new_page(&mut self) -> Result<Self::Page, NoMemory>;
    /// An empty directory; allocates nothing.
    fn new_dir(&mut self) -> Self::Dir;
    /// Makes room in `dir` for one more entry (allocating only if it has
    /// none); on failure `dir` is as it was.
    fn reserve_dir(&mut self, dir: &mut Self::Dir) -> Result<(), NoMemory>;
    /// Appends `entry` to `dir`, which has room for it
    /// ([`TableMem::reserve_dir`]): allocates nothing.
    fn push_dir(
        &mut self,
        dir: &mut Self::Dir,
        entry: DirEntry<Self::Page>,
    ) -> Result<(), NoMemory>;
    /// Entries `dir` has memory for.
    fn dir_capacity(&self, dir: &Self::Dir) -> usize;
    /// Takes the last entry off `dir` (a page that emptied): allocates
    /// nothing.
    fn pop_dir(&mut self, dir: &mut Self::Dir) -> Option<DirEntry<Self::Page>>;
    /// Sets `leaves` leaves and `pages` pages aside, and room in `dir` for
    /// `pages` more entries, so that that many of the following
    /// [`TableMem::new_leaf`], [`TableMem::new_page`] and
    /// [`TableMem::reserve_dir`] calls cannot fail (they use what was set
    /// aside first). On failure what was set aside before stays.
    fn reserve(&mut self, dir: &mut Self::Dir, leaves: usize, pages: usize)
        -> Result<(), NoMemory>;
}

/// Why an exception could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The origin chunk already has an exception.
    Duplicate,
    /// The COW chunk number needs more than 48 bits.
    TooLarge,
    /// No memory for a new leaf, page or directory entry.
    NoMemory,
    /// The caller's memory broke its contract (a page of the wrong size, a
    /// directory that could not take a reserved entry); the table is as it
    /// was.
    BadMemory,
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsertError::Duplicate => write!(f, "the chunk already has an exception"),
            InsertError::TooLarge => write!(f, "COW chunk number too large"),
            InsertError::NoMemory => write!(f, "out of memory"),
            InsertError::BadMemory => write!(f, "exception table memory inconsistent"),
        }
    }
}

impl From<NoMemory> for InsertError {
    fn from(_: NoMemory) -> Self {
        InsertError::NoMemory
    }
}

/// The exception table.
pub struct ExceptionTable<M: TableMem> {
    mem: M,
    dir: M::Dir,
    leaves: usize,
    exceptions: u64,
    runs: u64,
}

impl<M: TableMem> ExceptionTable<M> {
    /// An empty table that allocates through `mem`.
    pub fn new(mut mem: M) -> Self {
        let dir = mem.new_dir();
        ExceptionTable {
            mem,
            dir,
            leaves: 0,
            exceptions: 0,
            runs: 0,
        }
    }

    /// Number of exceptions (chunks).
    pub fn len(&self) -> u64 {
        self.exceptions
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.exceptions == 0
    }

    /// Number of runs.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// Number of leaves.
    pub fn leaves(&self) -> usize {
        self.leaves
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.dir.len()
    }

    /// Bytes of memory the table takes: its leaves, pages and directory.
    pub fn bytes(&self) -> usize {
        self.leaves * size_of::<Leaf>()
            + self.dir.len() * M::PTRS_PER_PAGE * size_of::<LeafPtr<M::Leaf>>()
            + self.mem.dir_capacity(&self.dir) * size_of::<DirEntry<M::Page>>()
    }

    /// The used leaf pointers of a page.
    fn leaf_ptrs(e: &DirEntry<M::Page>) -> &[LeafPtr<M::Leaf>] {
        e.page.get(..e.len).unwrap_or(&[])
    }

    /// The page (directory index) and leaf pointer of the leaf that holds, or
    /// would hold, `chunk`: the last with a key at or below it (the first
    /// page and leaf pointer have key 0). `None` if the table has no leaf.
    fn find(&self, chunk: u64) -> Option<(usize, usize)> {
        let dir: &[DirEntry<M::Page>] = &self.dir;
        // Tables of up to some 16,000 runs have one page.
        let d = match dir.len() {
            1 => 0,
            _ => last_at_or_below(dir, chunk, |e| e.key)?,
        };
        let s = last_at_or_below(Self::leaf_ptrs(dir.get(d)?), chunk, |sl| sl.key)?;
        Some((d, s))
    }

    /// The leaf of leaf pointer `s` of page `d`.
    fn leaf_mut(&mut self, d: usize, s: usize) -> Option<&mut Leaf> {
        let e = self.dir.get_mut(d)?;
        if s >= e.len {
            return None;
        }
        e.page.get_mut(s)?.leaf.as_deref_mut()
    }

    /// The COW chunk of origin chunk `chunk`, if it has an exception.
    pub fn lookup(&self, chunk: u64) -> Option<u64> {
        let (d, s) = self.find(chunk)?;
        let ptrs = Self::leaf_ptrs(self.dir.get(d)?);
        ptrs.get(s)?.leaf.as_deref()?.lookup(chunk)
    }

    /// A new page from the caller, checked.
    fn new_page(&mut self) -> Result<M::Page, InsertError> {
        let page = self.mem.new_page()?;
        if M::PTRS_PER_PAGE < 2 || page.len() != M::PTRS_PER_PAGE {
            return Err(InsertError::BadMemory);
        }
        Ok(page)
    }

    /// A new leaf from the caller, emptied.
    fn new_leaf(&mut self) -> Result<M::Leaf, InsertError> {
        let mut leaf = self.mem.new_leaf()?;
        leaf.len = 0;
        Ok(leaf)
    }

    /// Makes the first page with the first leaf (the table is empty).
    fn first_leaf(&mut self) -> Result<(), InsertError> {
        let leaf = self.new_leaf()?;
        let mut page = self.new_page()?;
        self.mem.reserve_dir(&mut self.dir)?;
        page[0] = LeafPtr {
            key: 0,
            leaf: Some(leaf),
        };
        let entry = DirEntry {
            key: 0,
            len: 1,
            page,
        };
        self.mem
            .push_dir(&mut self.dir, entry)
            .map_err(|NoMemory| InsertError::BadMemory)?;
        self.leaves = 1;
        Ok(())
    }

    /// Records that origin chunk `old` is now at COW chunk `new`. On an
    /// error the table is as it was.
    pub fn insert(&mut self, old: u64, new: u64) -> Result<(), InsertError> {
        if new > MAX_NEW_CHUNK {
            return Err(InsertError::TooLarge);
        }
        if self.dir.is_empty() {
            self.first_leaf()?;
        }
        let (d, s) = self.find(old).ok_or(InsertError::BadMemory)?;
        let leaf = self.leaf_mut(d, s).ok_or(InsertError::BadMemory)?;
        let before = leaf.run_before(old);
        if let Some(b) = before {
            if leaf.runs[b].lookup(old).is_some() {
                return Err(InsertError::Duplicate);
            }
            if leaf.runs[b].try_append(old, new) {
                self.exceptions += 1;
                return Ok(());
            }
        }
        // Only the table's first leaf (key 0) can get a chunk below its
        // first run's: every other leaf's first chunk is its key, for good.
        let next = before.map_or(0, |b| b + 1);
        if next < leaf.len as usize && leaf.runs[next].try_prepend(old, new) {
            self.exceptions += 1;
            return Ok(());
        }
        let run = Run::new(old, new, 1);
        if !leaf.is_full() {
            leaf.insert_at(next, run);
        } else {
            self.split_leaf(d, s, next, run)?;
        }
        self.exceptions += 1;
        self.runs += 1;
        Ok(())
    }

    /// Splits the full leaf of leaf pointer `s` of page `d` in two and inserts
    /// `run` at `next` of its runs. Every allocation comes first: if one
    /// fails, nothing has changed.
    fn split_leaf(&mut self, d: usize, s: usize, next: usize, run: Run) -> Result<(), InsertError> {
        let mut upper = self.new_leaf()?;
        let page_full = self.dir.get(d).map_or(0, |e| e.len) >= M::PTRS_PER_PAGE;
        let (d, s) = if page_full {
            let page = self.new_page()?;
            self.mem.reserve_dir(&mut self.dir)?;
            // Nothing fails from here on.
            self.split_page(d, page)?;
            let half = M::PTRS_PER_PAGE / 2;
            if s < half {
                (d, s)
            } else {
                (d + 1, s - half)
            }
        } else {
            (d, s)
        };
        let leaf = self.leaf_mut(d, s).ok_or(InsertError::BadMemory)?;
        leaf.split_into(&mut upper);
        let low_len = leaf.len as usize;
        if next <= low_len {
            leaf.insert_at(next, run);
        } else {
            upper.insert_at(next - low_len, run);
        }
        let key = upper.first_old();
        let e = self.dir.get_mut(d).ok_or(InsertError::BadMemory)?;
        let len = e.len;
        // The page has room (`len < PTRS_PER_PAGE`): the empty leaf pointer at `len`
        // comes round to `s + 1`.
        e.page[s + 1..=len].rotate_right(1);
        e.page[s + 1] = LeafPtr {
            key,
            leaf: Some(upper),
        };
        e.len += 1;
        self.leaves += 1;
        Ok(())
    }

    /// Moves the upper half of the full page `d` into `page`, which goes
    /// into the directory after it (room for it is reserved).
    fn split_page(&mut self, d: usize, page: M::Page) -> Result<(), InsertError> {
        let entry = DirEntry {
            key: 0,
            len: 0,
            page,
        };
        // The reserve makes this push infallible; if the caller's
        // directory fails it anyway, nothing has changed yet.
        self.mem
            .push_dir(&mut self.dir, entry)
            .map_err(|NoMemory| InsertError::BadMemory)?;
        let at = d + 1;
        self.dir[at..].rotate_right(1);
        let (lo, hi) = self.dir.split_at_mut(at);
        let (lo, hi) = (&mut lo[d], &mut hi[0]);
        let half = M::PTRS_PER_PAGE / 2;
        let moved = M::PTRS_PER_PAGE - half;
        hi.page[..moved].swap_with_slice(&mut lo.page[half..]);
        hi.len = moved;
        hi.key = hi.page[0].key;
        lo.len = half;
        Ok(())
    }

    /// The run holding `chunk`, if it has an exception.
    pub fn run_of(&self, chunk: u64) -> Option<Run> {
        let (d, s) = self.find(chunk)?;
        let ptrs = Self::leaf_ptrs(self.dir.get(d)?);
        let leaf = ptrs.get(s)?.leaf.as_deref()?;
        let run = *leaf.runs().get(leaf.run_before(chunk)?)?;
        run.lookup(chunk).map(|_| run)
    }

    /// How many runs [`ExceptionTable::remove`] splits in two when it
    /// removes `chunks` (in descending order, each having an exception),
    /// one after the other in that order: the new leaves (and at most as
    /// many pages and directory entries) that removing them may need.
    /// `Err(c)`: chunk `c` has no exception, or `chunks` is not in
    /// descending order.
    pub fn removal_splits(&self, chunks: &[u64]) -> Result<usize, u64> {
        let mut splits = 0;
        // The piece of the current run still left below the chunks
        // removed so far: [lo, end).
        let mut piece: Option<(u64, u64)> = None;
        let mut prev = None;
        for &c in chunks {
            if prev.is_some_and(|p| p <= c) {
                return Err(c);
            }
            prev = Some(c);
            let (lo, end) = match piece {
                Some((lo, end)) if lo <= c && c < end => (lo, end),
                _ => {
                    let run = self.run_of(c).ok_or(c)?;
                    (run.old(), run.old() + run.len())
                }
            };
            piece = if c + 1 == end {
                Some((lo, c))
            } else if c == lo {
                // The lowest chunk left of the run: the rest stays whole.
                None
            } else {
                splits += 1;
                Some((lo, c))
            };
        }
        Ok(splits)
    }

    /// Sets aside what `splits` splits of runs need (see
    /// [`ExceptionTable::removal_splits`]): removals that split no more
    /// runs than that cannot fail. On failure nothing was set aside that
    /// was not before.
    pub fn reserve_for_removal(&mut self, splits: usize) -> Result<(), InsertError> {
        if splits == 0 {
            return Ok(());
        }
        self.mem.reserve(&mut self.dir, splits, splits)?;
        Ok(())
    }

    /// Forgets the exception of origin chunk `old` (a merge copied it
    /// back); returns its COW chunk, or `None` if it had none.
    ///
    /// The first or last chunk of a run shortens it; a chunk inside a run
    /// splits it in two, which may need a new leaf (and a page and a
    /// directory entry): taken from what [`ExceptionTable::reserve_for_removal`]
    /// set aside, else allocated, and if that fails the table is as it
    /// was (`NoMemory`). A leaf that empties is freed, and a page that
    /// empties leaves the directory. Leaves are not merged back: after
    /// removals a leaf may be less than half full.
    pub fn remove(&mut self, old: u64) -> Result<Option<u64>, InsertError> {
        let Some((d, s)) = self.find(old) else {
            return Ok(None);
        };
        let leaf = self.leaf_mut(d, s).ok_or(InsertError::BadMemory)?;
        let Some(i) = leaf.run_before(old) else {
            return Ok(None);
        };
        let run = leaf.runs[i];
        let Some(new) = run.lookup(old) else {
            return Ok(None);
        };
        let (first, first_new, len) = (run.old(), run.new_chunk(), run.len());
        let off = old - first;
        if len == 1 {
            leaf.remove_at(i);
            let empty = leaf.len == 0;
            self.runs -= 1;
            if empty {
                self.drop_leaf(d, s)?;
            } else if i == 0 {
                self.rekey(d, s);
            }
        } else if off == 0 {
            leaf.runs[i] = Run::new(old + 1, new + 1, len - 1);
            if i == 0 {
                self.rekey(d, s);
            }
        } else if off + 1 == len {
            leaf.runs[i] = Run::new(first, first_new, len - 1);
        } else {
            let upper = Run::new(old + 1, new + 1, len - off - 1);
            if !leaf.is_full() {
                leaf.runs[i] = Run::new(first, first_new, off);
                leaf.insert_at(i + 1, upper);
            } else {
                // Every allocation first; the run is cut once nothing can
                // fail any more (it is in the lower half, or the upper
                // one, with `upper` right after it).
                self.split_leaf(d, s, i + 1, upper)?;
                let (d, s) = self.find(first).ok_or(InsertError::BadMemory)?;
                let leaf = self.leaf_mut(d, s).ok_or(InsertError::BadMemory)?;
                let i = leaf.run_before(first).ok_or(InsertError::BadMemory)?;
                leaf.runs[i] = Run::new(first, first_new, off);
            }
            self.runs += 1;
        }
        self.exceptions -= 1;
        Ok(Some(new))
    }

    /// The leaf of leaf pointer `s` of page `d` has a new first run: its key (and
    /// its page's) follows it, but the table's first leaf keeps key 0.
    fn rekey(&mut self, d: usize, s: usize) {
        if d == 0 && s == 0 {
            return;
        }
        let Some(e) = self.dir.get_mut(d) else {
            return;
        };
        let Some(first) = e
            .page
            .get(s)
            .and_then(|sl| sl.leaf.as_deref())
            .map(Leaf::first_old)
        else {
            return;
        };
        e.page[s].key = first;
        if s == 0 {
            e.key = first;
        }
    }

    /// Frees the empty leaf of leaf pointer `s` of page `d`, and the page if that
    /// was its last leaf.
    fn drop_leaf(&mut self, d: usize, s: usize) -> Result<(), InsertError> {
        let e = self.dir.get_mut(d).ok_or(InsertError::BadMemory)?;
        let len = e.len;
        e.page[s..len].rotate_left(1);
        let freed = core::mem::replace(&mut e.page[len - 1], LeafPtr::EMPTY);
        e.len -= 1;
        drop(freed);
        self.leaves -= 1;
        if e.len > 0 {
            if s == 0 {
                if d == 0 {
                    e.page[0].key = 0;
                } else {
                    e.key = e.page[0].key;
                }
            }
            return Ok(());
        }
        // The page is empty: out of the directory.
        self.dir[d..].rotate_left(1);
        let gone = self.mem.pop_dir(&mut self.dir);
        drop(gone);
        if d == 0 {
            if let Some(first) = self.dir.get_mut(0) {
                first.key = 0;
                first.page[0].key = 0;
            }
        }
        Ok(())
    }

    /// Every run, in origin-chunk order.
    pub fn iter_runs(&self) -> impl Iterator<Item = Run> + '_ {
        self.dir
            .iter()
            .flat_map(|e| Self::leaf_ptrs(e).iter())
            .filter_map(|sl| sl.leaf.as_deref())
            .flat_map(|l| l.runs().iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    /// Host memory with `N` leaf pointers per page; fails the allocation numbered
    /// `fail_at` (counting every allocation made or tried).
    struct TestMem<const N: usize> {
        tried: u64,
        fail_at: Option<u64>,
        #[expect(
            clippy::vec_box,
            reason = "the table's leaves are boxes; spares are leaves"
        )]
        spare_leaves: Vec<Box<Leaf>>,
        spare_pages: Vec<HostPage>,
    }

    impl<const N: usize> TestMem<N> {
        fn new() -> Self {
            TestMem {
                tried: 0,
                fail_at: None,
                spare_leaves: Vec::new(),
                spare_pages: Vec::new(),
            }
        }

        fn alloc(&mut self) -> Result<(), NoMemory> {
            let n = self.tried;
            self.tried += 1;
            if self.fail_at == Some(n) {
                return Err(NoMemory);
            }
            Ok(())
        }
    }

    type HostPage = Vec<LeafPtr<Box<Leaf>>>;

    impl<const N: usize> TableMem for TestMem<N> {
        const PTRS_PER_PAGE: usize = N;
        type Leaf = Box<Leaf>;
        type Page = HostPage;
        type Dir = Vec<DirEntry<HostPage>>;

        fn new_leaf(&mut self) -> Result<Box<Leaf>, NoMemory> {
            if let Some(leaf) = self.spare_leaves.pop() {
                return Ok(leaf);
            }
            self.alloc()?;
            // Not empty: the table must empty it.
            let mut leaf = Box::new(Leaf::EMPTY);
            leaf.len = 3;
            Ok(leaf)
        }
        fn new_page(&mut self) -> Result<HostPage, NoMemory> {
            if let Some(page) = self.spare_pages.pop() {
                return Ok(page);
            }
            self.alloc()?;
            Ok((0..N).map(|_| LeafPtr::EMPTY).collect())
        }
        fn new_dir(&mut self) -> Vec<DirEntry<HostPage>> {
            Vec::new()
        }
        fn reserve_dir(&mut self, dir: &mut Vec<DirEntry<HostPage>>) -> Result<(), NoMemory> {
            if dir.len() == dir.capacity() {
                self.alloc()?;
                dir.reserve(1);
            }
            Ok(())
        }
        fn push_dir(
            &mut self,
            dir: &mut Vec<DirEntry<HostPage>>,
            entry: DirEntry<HostPage>,
        ) -> Result<(), NoMemory> {
            // Must not allocate.
            assert!(dir.len() < dir.capacity(), "push without a reserve");
            dir.push(entry);
            Ok(())
        }
        fn dir_capacity(&self, dir: &Vec<DirEntry<HostPage>>) -> usize {
            dir.capacity()
        }
        fn pop_dir(&mut self, dir: &mut Vec<DirEntry<HostPage>>) -> Option<DirEntry<HostPage>> {
            dir.pop()
        }
        fn reserve(
            &mut self,
            dir: &mut Vec<DirEntry<HostPage>>,
            leaves: usize,
            pages: usize,
        ) -> Result<(), NoMemory> {
            while self.spare_leaves.len() < leaves {
                self.alloc()?;
                let mut leaf = Box::new(Leaf::EMPTY);
                leaf.len = 5;
                self.spare_leaves.push(leaf);
            }
            while self.spare_pages.len() < pages {
                self.alloc()?;
                self.spare_pages
                    .push((0..N).map(|_| LeafPtr::EMPTY).collect());
            }
            if dir.capacity() < dir.len() + pages {
                self.alloc()?;
                dir.reserve(pages);
            }
            Ok(())
        }
    }

    type Table<const N: usize> = ExceptionTable<TestMem<N>>;

    fn table_n<const N: usize>() -> Table<N> {
        ExceptionTable::new(TestMem::new())
    }

    fn table() -> Table<PTRS_PER_PAGE> {
        table_n()
    }

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// The structure's invariants, and the counts and bytes it reports.
    fn check_structure<const N: usize>(t: &Table<N>) {
        let mut leaves = 0;
        let mut runs = 0;
        let mut exceptions = 0;
        let mut last_key = None;
        let mut last_end = 0;
        for (d, e) in t.dir.iter().enumerate() {
            assert_eq!(e.page.len(), N);
            assert!(
                e.len >= 1 && e.len <= N,
                "page {d} uses {} leaf pointers",
                e.len
            );
            assert_eq!(e.key, e.page[0].key, "page {d}: key");
            for (s, sl) in e.page.iter().enumerate() {
                if s >= e.len {
                    assert!(
                        sl.leaf.is_none(),
                        "page {d} leaf pointer {s}: a leaf past the end"
                    );
                    continue;
                }
                let leaf = sl
                    .leaf
                    .as_deref()
                    .expect("a used leaf pointer without a leaf");
                assert!(leaf.len >= 1 && leaf.len as usize <= LEAF_RUNS);
                if d == 0 && s == 0 {
                    assert_eq!(sl.key, 0, "the first leaf's key");
                } else {
                    assert_eq!(sl.key, leaf.first_old(), "page {d} leaf pointer {s}: key");
                    assert!(last_key.is_some_and(|k| k < sl.key), "keys out of order");
                    // No run of the leaf before reaches this one's key.
                    assert!(last_end <= sl.key, "a run crosses a leaf's key");
                }
                last_key = Some(sl.key);
                for r in leaf.runs() {
                    assert!(r.old() >= sl.key);
                    assert!(r.old() >= last_end, "runs overlap or are out of order");
                    last_end = r.old() + r.len();
                    runs += 1;
                    exceptions += r.len();
                }
                leaves += 1;
            }
        }
        assert_eq!(t.leaves(), leaves);
        assert_eq!(t.runs(), runs);
        assert_eq!(t.len(), exceptions);
        assert_eq!(
            t.bytes(),
            leaves * size_of::<Leaf>()
                + t.dir.len() * N * size_of::<LeafPtr<Box<Leaf>>>()
                + t.dir.capacity() * size_of::<DirEntry<HostPage>>()
        );
    }

    fn check<const N: usize>(t: &Table<N>, oracle: &BTreeMap<u64, u64>, probe_max: u64) {
        assert_eq!(t.len(), oracle.len() as u64);
        for c in 0..probe_max {
            assert_eq!(t.lookup(c), oracle.get(&c).copied(), "chunk {c}");
        }
        check_structure(t);
        // The runs, chunk by chunk, are the oracle.
        let mut it = oracle.iter();
        for r in t.iter_runs() {
            for k in 0..r.len() {
                assert_eq!(it.next(), Some((&(r.old() + k), &(r.new_chunk() + k))));
            }
        }
        assert_eq!(it.next(), None);
    }

    /// Inserts into both; the table must agree with the oracle's answer.
    fn put<const N: usize>(t: &mut Table<N>, oracle: &mut BTreeMap<u64, u64>, old: u64, new: u64) {
        let r = t.insert(old, new);
        if let std::collections::btree_map::Entry::Vacant(e) = oracle.entry(old) {
            assert_eq!(r, Ok(()), "insert {old} -> {new}");
            e.insert(new);
        } else {
            assert_eq!(r, Err(InsertError::Duplicate));
        }
    }

    #[test]
    fn sizes() {
        assert!(size_of::<Leaf>() <= 2048);
        assert_eq!(size_of::<LeafPtr<Box<Leaf>>>(), 16);
        assert_eq!(PTRS_PER_PAGE * size_of::<LeafPtr<Box<Leaf>>>(), 4096);
    }

    #[test]
    fn sequential_copies_pack_into_runs() {
        let mut t = table();
        for c in 0..100_000 {
            t.insert(c, c + 1).unwrap();
        }
        // 100000 chunks in runs of at most 65536.
        assert_eq!(t.runs(), 2);
        assert_eq!(t.lookup(99_999), Some(100_000));
        assert_eq!(t.lookup(100_000), None);
        // Downwards too.
        let mut t = table();
        for c in (0..1000).rev() {
            t.insert(c + 5000, c).unwrap();
        }
        assert_eq!(t.runs(), 1);
        assert_eq!(t.lookup(5000), Some(0));
        assert_eq!(t.lookup(4999), None);
        check_structure(&t);
    }

    #[test]
    fn random_inserts_match_an_oracle() {
        let mut t = table();
        let mut oracle = BTreeMap::new();
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut next_free = 0;
        for _ in 0..20_000 {
            let old = rng.next() % 50_000;
            if !oracle.contains_key(&old) {
                put(&mut t, &mut oracle, old, next_free);
                next_free += 1;
            } else {
                put(&mut t, &mut oracle, old, 0);
            }
        }
        check(&t, &oracle, 50_010);
        // Random chunks barely form runs: most leaves split, and the table
        // stays within 32 bytes per run (dm-snapshot: 32 bytes per
        // exception plus its hash bucket).
        assert!(t.leaves() > 100);
        assert!(
            t.bytes() as u64 <= 32 * t.runs() + 4096,
            "{} bytes",
            t.bytes()
        );
    }

    #[test]
    fn small_pages_split_often() {
        // Pages of 2, 3 and 4 leaf pointers: page splits at every position, and
        // the directory grows through many reallocations.
        fn run<const N: usize>(seed: u64) {
            let mut t = table_n::<N>();
            let mut oracle = BTreeMap::new();
            let mut rng = Rng(seed);
            for i in 0..30_000u64 {
                let old = rng.next() % 1_000_000;
                // COW chunks in allocation order, with gaps now and then
                // so that neighbours sometimes form runs.
                put(&mut t, &mut oracle, old, i * 2 + (rng.next() & 1));
                if i % 5000 == 0 {
                    check_structure(&t);
                }
            }
            check(&t, &oracle, 0);
            for _ in 0..100_000 {
                let c = rng.next() % 1_000_100;
                assert_eq!(t.lookup(c), oracle.get(&c).copied());
            }
            assert!(t.pages() > 50, "{} pages", t.pages());
        }
        run::<2>(7);
        run::<3>(8);
        run::<4>(9);
    }

    /// The key range of the leaf of leaf pointer `s` of page `d`.
    fn leaf_range<const N: usize>(t: &Table<N>, d: usize, s: usize) -> (u64, u64) {
        let lo = t.dir[d].page[s].key;
        let hi = if s + 1 < t.dir[d].len {
            t.dir[d].page[s + 1].key
        } else if d + 1 < t.dir.len() {
            t.dir[d + 1].key
        } else {
            u64::MAX
        };
        (lo, hi)
    }

    /// Whether the leaf's key range has room to split it.
    fn has_room<const N: usize>(
        t: &Table<N>,
        oracle: &BTreeMap<u64, u64>,
        d: usize,
        s: usize,
    ) -> bool {
        let (lo, hi) = leaf_range(t, d, s);
        hi - lo - oracle.range(lo..hi).count() as u64 > 2 * LEAF_RUNS as u64
    }

    /// Splits the leaf of leaf pointer `s` of page `d` by inserting chunks in its
    /// key range (to new COW chunks, so that none joins a run).
    fn split_leaf_at<const N: usize>(
        t: &mut Table<N>,
        oracle: &mut BTreeMap<u64, u64>,
        next_new: &mut u64,
        d: usize,
        s: usize,
    ) {
        let (lo, hi) = leaf_range(t, d, s);
        let (leaves, pages, full) = (t.leaves(), t.pages(), t.dir[d].len == N);
        let mut c = lo;
        while t.leaves() == leaves {
            assert!(c < hi, "no room left in the leaf's key range");
            if !oracle.contains_key(&c) {
                *next_new += 2;
                put(t, oracle, c, *next_new);
            }
            c += 1;
        }
        assert_eq!(t.leaves(), leaves + 1);
        assert_eq!(t.pages(), pages + usize::from(full));
        check(t, oracle, 0);
        for k in lo.saturating_sub(2)..c + 2 {
            assert_eq!(t.lookup(k), oracle.get(&k).copied());
        }
    }

    #[test]
    fn splits_at_page_edges() {
        const N: usize = 4;
        let mut t = table_n::<N>();
        let mut oracle = BTreeMap::new();
        let mut next_new = 0;
        // Widely spaced chunks: every leaf's key range has room.
        let mut rng = Rng(42);
        for _ in 0..3000 {
            let old = (rng.next() % 100_000) * 1000;
            next_new += 2;
            put(&mut t, &mut oracle, old, next_new);
        }
        check(&t, &oracle, 0);
        // Every combination of: the first, a middle or the last page; its
        // first or last leaf pointer; the page full or not.
        let mut seen = [[[false; 2]; 2]; 3];
        for _ in 0..200 {
            for (where_d, seen_d) in seen.iter_mut().enumerate() {
                for first_ptr in [true, false] {
                    for full in [true, false] {
                        let n = t.dir.len();
                        let ptr =
                            |d: usize, t: &Table<N>| if first_ptr { 0 } else { t.dir[d].len - 1 };
                        let pick = |d: usize, t: &Table<N>| {
                            (t.dir[d].len == N) == full && has_room(t, &oracle, d, ptr(d, t))
                        };
                        let d = match where_d {
                            0 => 0,
                            1 => (1..n - 1).find(|&d| pick(d, &t)).unwrap_or(1),
                            _ => n - 1,
                        };
                        if d >= n || !pick(d, &t) {
                            continue;
                        }
                        let s = ptr(d, &t);
                        split_leaf_at(&mut t, &mut oracle, &mut next_new, d, s);
                        seen_d[usize::from(first_ptr)][usize::from(full)] = true;
                    }
                }
            }
            if seen.iter().flatten().flatten().all(|&x| x) {
                break;
            }
            // Change the shape (fill pages up, split others).
            for _ in 0..300 {
                let old = (rng.next() % 100_000) * 1000 + 500;
                next_new += 2;
                put(&mut t, &mut oracle, old, next_new);
            }
        }
        assert!(
            seen.iter().flatten().flatten().all(|&x| x),
            "not every case came: {seen:?}"
        );
        check(&t, &oracle, 0);
    }

    #[test]
    fn millions_of_random_inserts() {
        // 2,000,000 exceptions over 8,000,000 chunks, in COW allocation
        // order (as a snapshot fills, and as a load reads them).
        let mut t = table();
        let mut oracle = BTreeMap::new();
        let mut rng = Rng(0x0dd_ba11);
        let mut next_free = 0;
        while oracle.len() < 2_000_000 {
            let old = rng.next() % 8_000_000;
            if oracle.contains_key(&old) {
                continue;
            }
            put(&mut t, &mut oracle, old, next_free);
            next_free += 1;
        }
        check(&t, &oracle, 0);
        for _ in 0..2_000_000 {
            let c = rng.next() % 8_000_100;
            assert_eq!(t.lookup(c), oracle.get(&c).copied());
        }
        // About 70 % full leaves: under 26 bytes per run, the pages and
        // directory included.
        let per_run = t.bytes() as f64 / t.runs() as f64;
        assert!(per_run < 26.0, "{per_run} bytes per run");
        assert!(t.pages() > 60);
    }

    /// What an insert that failed must not have changed.
    fn fingerprint<const N: usize>(t: &Table<N>) -> (u64, u64, usize, usize, usize, usize, u64) {
        // The leaves' lengths and keys, folded.
        let mut h = 0u64;
        for e in t.dir.iter() {
            for sl in &e.page[..e.len] {
                let len = sl.leaf.as_deref().map_or(0, |l| l.len);
                h = h
                    .wrapping_mul(0x100_0000_01b3)
                    .wrapping_add(sl.key ^ u64::from(len));
            }
        }
        (
            t.len(),
            t.runs(),
            t.leaves(),
            t.pages(),
            t.bytes(),
            t.dir.capacity(),
            h,
        )
    }

    /// Fails each allocation of each insert in turn (the first, then the
    /// second, ...), checking that a failed insert changed nothing, then
    /// lets it through.
    fn failing_inserts<const N: usize>(count: usize, span: u64, seed: u64) -> u64 {
        let mut t = table_n::<N>();
        let mut oracle = BTreeMap::new();
        let mut rng = Rng(seed);
        let mut failed = 0;
        let mut next_free = 0;
        for i in 0..count {
            let old = rng.next() % span;
            let new = next_free;
            for k in 0.. {
                t.mem.fail_at = Some(t.mem.tried + k);
                let before = fingerprint(&t);
                match t.insert(old, new) {
                    Err(InsertError::NoMemory) => {
                        failed += 1;
                        assert_eq!(
                            fingerprint(&t),
                            before,
                            "insert {i} with allocation {k} failed"
                        );
                        assert_eq!(t.lookup(old), oracle.get(&old).copied());
                        if failed % 256 == 0 {
                            check(&t, &oracle, 0);
                        }
                    }
                    r => {
                        t.mem.fail_at = None;
                        if let std::collections::btree_map::Entry::Vacant(e) = oracle.entry(old) {
                            assert_eq!(r, Ok(()));
                            e.insert(new);
                            next_free += 1;
                        } else {
                            assert_eq!(r, Err(InsertError::Duplicate));
                        }
                        break;
                    }
                }
                assert!(k < 3, "an insert needs at most 3 allocations");
            }
        }
        check(&t, &oracle, 0);
        failed
    }

    #[test]
    fn allocation_failures_change_nothing() {
        // Small pages: page splits and directory growth all the time.
        let f4 = failing_inserts::<4>(40_000, 1 << 30, 3);
        // Module-sized pages.
        let f256 = failing_inserts::<PTRS_PER_PAGE>(150_000, 1 << 30, 4);
        assert!(f4 > 500 && f256 > 1000, "{f4} {f256} failures injected");
    }

    #[test]
    fn a_bad_page_is_refused() {
        struct Short;
        impl TableMem for Short {
            const PTRS_PER_PAGE: usize = 4;
            type Leaf = Box<Leaf>;
            type Page = HostPage;
            type Dir = Vec<DirEntry<HostPage>>;
            fn new_leaf(&mut self) -> Result<Box<Leaf>, NoMemory> {
                Ok(Box::new(Leaf::EMPTY))
            }
            fn new_page(&mut self) -> Result<HostPage, NoMemory> {
                Ok((0..3).map(|_| LeafPtr::EMPTY).collect())
            }
            fn new_dir(&mut self) -> Vec<DirEntry<HostPage>> {
                Vec::new()
            }
            fn reserve_dir(&mut self, dir: &mut Vec<DirEntry<HostPage>>) -> Result<(), NoMemory> {
                dir.reserve(1);
                Ok(())
            }
            fn push_dir(
                &mut self,
                dir: &mut Vec<DirEntry<HostPage>>,
                e: DirEntry<HostPage>,
            ) -> Result<(), NoMemory> {
                dir.push(e);
                Ok(())
            }
            fn dir_capacity(&self, dir: &Vec<DirEntry<HostPage>>) -> usize {
                dir.capacity()
            }
            fn pop_dir(&mut self, dir: &mut Vec<DirEntry<HostPage>>) -> Option<DirEntry<HostPage>> {
                dir.pop()
            }
            fn reserve(
                &mut self,
                _dir: &mut Vec<DirEntry<HostPage>>,
                _leaves: usize,
                _pages: usize,
            ) -> Result<(), NoMemory> {
                Ok(())
            }
        }
        let mut t = ExceptionTable::new(Short);
        assert_eq!(t.insert(1, 1), Err(InsertError::BadMemory));
        assert!(t.is_empty() && t.lookup(1).is_none() && t.leaves() == 0);
    }

    #[test]
    fn interleaved_runs_and_gaps() {
        // Ascending origin chunks with every third skipped, COW chunks in
        // allocation order: runs break at every gap.
        let mut t = table();
        let mut oracle = BTreeMap::new();
        let mut next = 0;
        for c in (0..3000).filter(|c| c % 3 != 2) {
            t.insert(c, next).unwrap();
            oracle.insert(c, next);
            next += 1;
        }
        check(&t, &oracle, 3010);
        assert_eq!(t.runs(), 1000);
        // Filling the gaps later goes to new COW chunks: new runs.
        for c in (0..3000).filter(|c| c % 3 == 2) {
            t.insert(c, next).unwrap();
            oracle.insert(c, next);
            next += 1;
        }
        check(&t, &oracle, 3010);
    }

    #[test]
    fn limits() {
        let mut t = table();
        assert_eq!(t.insert(1, MAX_NEW_CHUNK + 1), Err(InsertError::TooLarge));
        assert!(t.is_empty() && t.leaves() == 0);
        t.insert(u64::MAX - 1, MAX_NEW_CHUNK).unwrap();
        assert_eq!(t.lookup(u64::MAX - 1), Some(MAX_NEW_CHUNK));
        assert_eq!(t.lookup(u64::MAX), None);
        assert_eq!(t.insert(u64::MAX - 1, 5), Err(InsertError::Duplicate));
        // Below the first leaf's first run.
        t.insert(0, 7).unwrap();
        assert_eq!(t.lookup(0), Some(7));
        assert!(table().lookup(0).is_none());
        check_structure(&t);
    }

    /// Removes from both; the table must agree with the oracle.
    fn take<const N: usize>(t: &mut Table<N>, oracle: &mut BTreeMap<u64, u64>, old: u64) {
        assert_eq!(t.remove(old), Ok(oracle.remove(&old)), "remove {old}");
    }

    #[test]
    fn removals_match_an_oracle() {
        fn run<const N: usize>(seed: u64) {
            let mut t = table_n::<N>();
            let mut oracle = BTreeMap::new();
            let mut rng = Rng(seed);
            let mut next_free = 0;
            for round in 0..6 {
                // Inserts: runs of consecutive chunks (sequential writes)
                // and scattered ones.
                for _ in 0..4000 {
                    let old = rng.next() % 40_000;
                    let n = if rng.next().is_multiple_of(4) {
                        rng.next() % 300
                    } else {
                        1
                    };
                    for k in 0..n {
                        if !oracle.contains_key(&(old + k)) {
                            put(&mut t, &mut oracle, old + k, next_free);
                            next_free += 1;
                        }
                    }
                }
                check(&t, &oracle, 0);
                // Removals: at random (run starts, ends and middles), then
                // everything in some rounds.
                let keys: Vec<u64> = oracle.keys().copied().collect();
                let all = round % 3 == 2;
                for (i, &k) in keys.iter().enumerate() {
                    if all || rng.next().is_multiple_of(3) {
                        take(&mut t, &mut oracle, k);
                    }
                    // Chunks without an exception: nothing happens.
                    assert_eq!(t.remove(k + 40_000_000), Ok(None));
                    if i % 3000 == 0 {
                        check_structure(&t);
                    }
                }
                check(&t, &oracle, 40_400);
                if all {
                    assert!(t.is_empty());
                    assert_eq!((t.leaves(), t.pages(), t.runs()), (0, 0, 0));
                }
            }
        }
        run::<2>(11);
        run::<3>(12);
        run::<PTRS_PER_PAGE>(13);
    }

    #[test]
    fn a_middle_removal_splits_a_full_leaf() {
        // One long run per leaf pointer, the leaf full: removing a middle
        // chunk needs a new leaf (and with pages of 2 leaf pointers, a new page).
        let mut t = table_n::<2>();
        let mut oracle = BTreeMap::new();
        for r in 0..LEAF_RUNS as u64 * 4 {
            for k in 0..10 {
                put(&mut t, &mut oracle, r * 100 + k, r * 1000 + k);
            }
        }
        check(&t, &oracle, 0);
        let (leaves, runs) = (t.leaves(), t.runs());
        for r in 0..LEAF_RUNS as u64 * 4 {
            take(&mut t, &mut oracle, r * 100 + 5);
        }
        check(&t, &oracle, LEAF_RUNS as u64 * 400);
        assert_eq!(t.runs(), runs * 2);
        assert!(t.leaves() > leaves);
    }

    #[test]
    fn removal_allocation_failures_change_nothing() {
        let mut t = table_n::<3>();
        let mut oracle = BTreeMap::new();
        let mut rng = Rng(77);
        for r in 0..3000u64 {
            let len = 1 + rng.next() % 20;
            for k in 0..len {
                put(&mut t, &mut oracle, r * 64 + k, r * 64 + k);
            }
        }
        let mut failed = 0;
        let keys: Vec<u64> = oracle.keys().copied().collect();
        for &old in keys.iter().filter(|_| rng.next().is_multiple_of(2)) {
            for k in 0.. {
                t.mem.fail_at = Some(t.mem.tried + k);
                let before = fingerprint(&t);
                match t.remove(old) {
                    Err(InsertError::NoMemory) => {
                        failed += 1;
                        assert_eq!(
                            fingerprint(&t),
                            before,
                            "remove {old}, allocation {k} failed"
                        );
                        assert_eq!(t.lookup(old), oracle.get(&old).copied());
                    }
                    r => {
                        t.mem.fail_at = None;
                        assert_eq!(r, Ok(oracle.remove(&old)));
                        break;
                    }
                }
                assert!(k < 3, "a removal needs at most 3 allocations");
            }
        }
        check(&t, &oracle, 0);
        assert!(failed > 50, "{failed} failures injected");
    }

    #[test]
    fn reserved_removals_never_fail() {
        // A merge removes its batch in descending order after setting
        // aside what `removal_splits` says: with every allocation failing
        // from then on, the removals still succeed, and exactly the
        // predicted number of runs split.
        fn run<const N: usize>(seed: u64) {
            let mut t = table_n::<N>();
            let mut oracle = BTreeMap::new();
            let mut rng = Rng(seed);
            let mut next_free = 0;
            while oracle.len() < 30_000 {
                let old = rng.next() % 60_000;
                let n = 1 + rng.next() % 50;
                for k in 0..n {
                    if !oracle.contains_key(&(old + k)) {
                        put(&mut t, &mut oracle, old + k, next_free);
                        next_free += 1;
                    }
                }
            }
            let mut total_splits = 0;
            while !oracle.is_empty() {
                // A batch: any subset of the chunks, largest first.
                let want = 1 + (rng.next() % 3000) as usize;
                let mut batch: Vec<u64> = oracle
                    .keys()
                    .copied()
                    .filter(|_| rng.next().is_multiple_of(4))
                    .take(want)
                    .collect();
                if batch.is_empty() {
                    batch.push(*oracle.keys().next().unwrap());
                }
                batch.reverse();
                let splits = t.removal_splits(&batch).unwrap();
                t.reserve_for_removal(splits).unwrap();
                let (runs, len) = (t.runs(), t.len());
                let gone = batch.len() as u64;
                t.mem.fail_at = Some(t.mem.tried);
                let mut made = 0;
                for &c in &batch {
                    let before = t.runs();
                    take(&mut t, &mut oracle, c);
                    made += usize::from(t.runs() > before);
                    t.mem.fail_at = Some(t.mem.tried);
                }
                t.mem.fail_at = None;
                assert_eq!(made, splits, "splits predicted");
                assert!(t.runs() <= runs + splits as u64);
                assert_eq!(t.len() + gone, len);
                total_splits += splits;
                check_structure(&t);
            }
            check(&t, &oracle, 0);
            assert!(t.is_empty() && t.leaves() == 0);
            assert!(total_splits > 100, "{total_splits} splits");
            // A chunk without an exception, or an ascending batch.
            put(&mut t, &mut oracle, 10, 1);
            put(&mut t, &mut oracle, 11, 2);
            assert_eq!(t.removal_splits(&[12]), Err(12));
            assert_eq!(t.removal_splits(&[10, 11]), Err(11));
            assert_eq!(t.removal_splits(&[11, 10]), Ok(0));
        }
        run::<2>(5);
        run::<PTRS_PER_PAGE>(6);
    }

    /// One lookup, out of line (as the module's map path makes it, once
    /// per bio): the compiler cannot overlap or hoist work across lookups.
    #[inline(never)]
    fn probe(t: &Table<PTRS_PER_PAGE>, c: u64) -> Option<u64> {
        t.lookup(c)
    }

    /// Lookup speed (`cargo test --release -p rdm-core lookup_speed --
    /// --ignored --nocapture`): tables of 1,000,000 and 10,000 scattered
    /// runs, looked up at random chunks (half of them have an exception)
    /// and at consecutive ones. Prints the best of 40 passes of 250,000
    /// lookups, in ns per lookup.
    #[test]
    #[ignore]
    fn lookup_speed() {
        for (runs, span) in [(1_000_000u64, 2_000_000u64), (10_000, 20_000)] {
            let mut t = table();
            for i in 0..runs {
                // A stride permutation: distinct, scattered chunks.
                t.insert((i * 1_236_067) % span, i * 2).unwrap();
            }
            let mut rng = Rng(0x5eed);
            let random: Vec<u64> = (0..250_000).map(|_| rng.next() % span).collect();
            let start = rng.next() % span;
            let seq: Vec<u64> = (0..250_000).map(|i| (start + i) % span).collect();
            for (what, probes) in [("random", &random), ("consecutive", &seq)] {
                let mut best = f64::MAX;
                let mut hits = 0;
                for _ in 0..40 {
                    let t0 = std::time::Instant::now();
                    hits = 0;
                    for &c in probes.iter() {
                        hits += usize::from(probe(&t, std::hint::black_box(c)).is_some());
                    }
                    best = best.min(t0.elapsed().as_secs_f64());
                }
                std::println!(
                    "lookup, {runs} runs, {what} chunks: {:.1} ns ({hits} hits; {} bytes, {:.1} bytes/run)",
                    best * 1e9 / probes.len() as f64,
                    t.bytes(),
                    t.bytes() as f64 / t.runs() as f64
                );
            }
        }
    }
}
