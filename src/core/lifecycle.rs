//! Typed lifecycles: each is a `#[repr(u8)]` enum whose legal transitions
//! are listed by [`Lifecycle::allowed`], held in an [`AtomicState`] whose
//! only writer is [`AtomicState::advance`]. Kernel-free: the transition
//! tables are tested on the host.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU8, Ordering};

/// A state machine's states.
pub trait Lifecycle: Copy + Eq + 'static {
    /// Every state, the first being the one [`AtomicState::get`] falls
    /// back to for a code that is no state (which `advance` never stores).
    const ALL: &'static [Self];
    /// The state's code (its `#[repr(u8)]` discriminant).
    fn code(self) -> u8;
    /// Whether the machine may go from `from` to `to`.
    fn allowed(from: Self, to: Self) -> bool;
}

/// A state of `S` in an atomic byte.
///
/// # Invariants
/// The byte always holds the code of a state of `S`: it is set by `new`
/// and changed only by [`AtomicState::advance`], along a legal transition.
pub struct AtomicState<S> {
    code: AtomicU8,
    _state: PhantomData<S>,
}

impl<S: Lifecycle> AtomicState<S> {
    /// A machine in state `s`.
    pub fn new(s: S) -> Self {
        AtomicState {
            code: AtomicU8::new(s.code()),
            _state: PhantomData,
        }
    }

    /// The current state (acquire: what was written before the
    /// transition into it is seen).
    pub fn get(&self) -> S {
        let code = self.code.load(Ordering::Acquire);
        S::ALL
            .iter()
            .copied()
            .find(|s| s.code() == code)
            .unwrap_or(S::ALL[0])
    }

    /// Moves from `from` to `to` if the machine is in `from` and the
    /// transition is legal (release: what was written before is seen by
    /// whoever reads `to`). Returns whether it happened.
    pub fn advance(&self, from: S, to: S) -> bool {
        S::allowed(from, to)
            && self
                .code
                .compare_exchange(from.code(), to.code(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// The stage of a copier job (`src/snapshot/copier.rs`). The copier thread
/// moves it out of the stages it owns (`Queued`, `ReadDone`, `WriteDone`);
/// I/O completions move it out of `Reading` and `Writing`.
///
/// ```text
/// Queued ──► Reading ──► ReadDone ──► Writing ──► WriteDone
///   │  │        │                       ▲            │
///   │  └────────┼───────────────────────┘ (header)   │ next piece
///   │           └──────► WriteDone (submit failed)   ▼
///   └──────────────────► WriteDone (nothing to copy, Reading
///                         or no memory)
/// ```
///
/// A whole-chunk overwrite starts in `Writing` (its write is the
/// submitter's own).
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum JobStage {
    /// Waiting for the copier thread to start it.
    Queued = 0,
    /// A piece is being read.
    Reading = 1,
    /// The piece is read: the thread writes it.
    ReadDone = 2,
    /// The piece (or the job's only write) is being written.
    Writing = 3,
    /// The writes are over (or the job failed): the thread reads the next
    /// piece or ends the job.
    WriteDone = 4,
}

impl Lifecycle for JobStage {
    const ALL: &'static [Self] = &[
        JobStage::Queued,
        JobStage::Reading,
        JobStage::ReadDone,
        JobStage::Writing,
        JobStage::WriteDone,
    ];

    fn code(self) -> u8 {
        self as u8
    }

    fn allowed(from: Self, to: Self) -> bool {
        use JobStage::*;
        matches!(
            (from, to),
            (Queued, Reading | Writing | WriteDone)
                | (Reading, ReadDone | WriteDone)
                | (ReadDone, Writing)
                | (Writing, WriteDone)
                | (WriteDone, Reading)
        )
    }
}

/// The stage of a persistent store's commit (`src/snapshot/store.rs`). The
/// copier thread starts a stage of writes; the completion of its last
/// write moves it to the stage's `Done`; the thread goes on from there.
///
/// ```text
/// Idle ──► Later ──► LaterDone ──► Current ──► CurrentDone ──► Idle
///   │                   │             ▲             (complete or
///   └───────────────────┼─────────────┘              abandon)
///                       └──► Idle (abandon)
/// ```
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CommitStage {
    /// No commit in flight.
    Idle = 0,
    /// The areas after the current one are being written.
    Later = 1,
    /// They are written.
    LaterDone = 2,
    /// The current area is being written (FLUSH+FUA).
    Current = 3,
    /// It is written.
    CurrentDone = 4,
}

impl CommitStage {
    /// The stage a stage of writes ends in when its last write completes
    /// (`None` for a stage that has no writes).
    pub fn done(self) -> Option<CommitStage> {
        match self {
            CommitStage::Later => Some(CommitStage::LaterDone),
            CommitStage::Current => Some(CommitStage::CurrentDone),
            _ => None,
        }
    }
}

impl Lifecycle for CommitStage {
    const ALL: &'static [Self] = &[
        CommitStage::Idle,
        CommitStage::Later,
        CommitStage::LaterDone,
        CommitStage::Current,
        CommitStage::CurrentDone,
    ];

    fn code(self) -> u8 {
        self as u8
    }

    fn allowed(from: Self, to: Self) -> bool {
        use CommitStage::*;
        matches!(
            (from, to),
            (Idle, Later | Current)
                | (Later, LaterDone)
                | (LaterDone, Current | Idle)
                | (Current, CurrentDone)
                | (CurrentDone, Idle)
        )
    }
}

/// Whether a persistent snapshot's header says what its validity is
/// (`src/snapshot/store.rs`): once the snapshot is invalidated, its header
/// must say so before an origin write that stops copying for it goes on.
///
/// ```text
/// Valid ──► Unsynced ──► Synced
/// ```
///
/// `Unsynced` is left by whichever header write ends first (the copier's
/// invalid-header job, or a teardown's synchronous write), or by its
/// failure (logged: origin writes go on rather than wait for ever). A
/// store opened on an invalid header starts `Synced`.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Invalidation {
    /// The snapshot is valid.
    Valid = 0,
    /// It was invalidated; the header does not say so yet.
    Unsynced = 1,
    /// The header says it is invalid (or cannot be made to).
    Synced = 2,
}

impl Lifecycle for Invalidation {
    const ALL: &'static [Self] = &[
        Invalidation::Valid,
        Invalidation::Unsynced,
        Invalidation::Synced,
    ];

    fn code(self) -> u8 {
        self as u8
    }

    fn allowed(from: Self, to: Self) -> bool {
        use Invalidation::*;
        matches!((from, to), (Valid, Unsynced) | (Unsynced, Synced))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn legal<S: Lifecycle>() -> Vec<(S, S)> {
        let mut v = Vec::new();
        for &a in S::ALL {
            for &b in S::ALL {
                if S::allowed(a, b) {
                    v.push((a, b));
                }
            }
        }
        v
    }

    /// Codes are the discriminants, distinct, and `get` reads back what
    /// `new` stored.
    fn codes_round_trip<S: Lifecycle + core::fmt::Debug>() {
        for (i, &s) in S::ALL.iter().enumerate() {
            assert_eq!(usize::from(s.code()), i);
            assert_eq!(AtomicState::new(s).get(), s);
        }
    }

    /// `advance` follows exactly the legal transitions, only from the
    /// state the machine is in.
    fn advance_is_the_table<S: Lifecycle + core::fmt::Debug>() {
        for &a in S::ALL {
            for &b in S::ALL {
                let st = AtomicState::new(a);
                assert_eq!(st.advance(a, b), S::allowed(a, b), "{a:?} -> {b:?}");
                assert_eq!(st.get(), if S::allowed(a, b) { b } else { a });
                for &c in S::ALL {
                    if c != a {
                        let st = AtomicState::new(a);
                        assert!(!st.advance(c, b), "from {c:?} while in {a:?}");
                        assert_eq!(st.get(), a);
                    }
                }
            }
        }
    }

    #[test]
    fn job_stage() {
        use JobStage::*;
        codes_round_trip::<JobStage>();
        advance_is_the_table::<JobStage>();
        assert_eq!(
            legal::<JobStage>(),
            [
                (Queued, Reading),
                (Queued, Writing),
                (Queued, WriteDone),
                (Reading, ReadDone),
                (Reading, WriteDone),
                (ReadDone, Writing),
                (Writing, WriteDone),
                (WriteDone, Reading),
            ]
        );
        // A copy of two pieces.
        let st = AtomicState::new(Queued);
        for (a, b) in [
            (Queued, Reading),
            (Reading, ReadDone),
            (ReadDone, Writing),
            (Writing, WriteDone),
            (WriteDone, Reading),
            (Reading, ReadDone),
            (ReadDone, Writing),
            (Writing, WriteDone),
        ] {
            assert!(st.advance(a, b));
        }
        // A completion cannot end a stage twice.
        assert!(!st.advance(Writing, WriteDone));
    }

    #[test]
    fn commit_stage() {
        use CommitStage::*;
        codes_round_trip::<CommitStage>();
        advance_is_the_table::<CommitStage>();
        assert_eq!(
            legal::<CommitStage>(),
            [
                (Idle, Later),
                (Idle, Current),
                (Later, LaterDone),
                (LaterDone, Idle),
                (LaterDone, Current),
                (Current, CurrentDone),
                (CurrentDone, Idle),
            ]
        );
        for s in CommitStage::ALL {
            match s.done() {
                Some(d) => assert!(CommitStage::allowed(*s, d)),
                None => assert!(!matches!(s, Later | Current)),
            }
        }
    }

    #[test]
    fn invalidation() {
        use Invalidation::*;
        codes_round_trip::<Invalidation>();
        advance_is_the_table::<Invalidation>();
        assert_eq!(
            legal::<Invalidation>(),
            [(Valid, Unsynced), (Unsynced, Synced)]
        );
        // The second of two header writes to end finds it synced already.
        let st = AtomicState::new(Valid);
        assert!(st.advance(Valid, Unsynced));
        assert!(st.advance(Unsynced, Synced));
        assert!(!st.advance(Unsynced, Synced));
        assert_eq!(st.get(), Synced);
    }
}
