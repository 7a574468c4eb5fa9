#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Power-cut test of persistent snapshots: the engine (scripts/powercut).

Guest side (called by tests/powercut/guest.sh, one boot at a time):
  pc.py stamp                 write the pre-snapshot image, start the journal
  pc.py verify BOOT STATUS [NAME]  check origin, snapshot, COW metadata, status
  pc.py load BOOT cut         write load until the host kills the guest
  pc.py verify-load BOOT STATUS [NAME]  verify, then load BOOT cut; exits 3
                              instead of loading if most chunks have exceptions
  pc.py retake BOOT           (snapshot removed) new pre-snapshot image, COW reset
  pc.py load BOOT clean N     N writes, a final flush, then stop
  pc.py load BOOT probe N     N origin writes into chunks that have exceptions
  pc.py sums                  sha256 of the origin and of the snapshot
  pc.py check BOOT NAME ok|fail [TEXT]   record a check's result
  pc.py note BOOT FLAG [TEXT]             record a flag (skip, ...)
  pc.py clean-record BOOT STATUS SUMS / clean-get
Merge scenario (scripts/powercut --merge; PC_ORIGIN is then the
snapshot-merge device while a merge runs):
  pc.py merge-setup BOOT      (origin and snapshot live) a bounded load on both,
                              then the snapshot's image saved on the journal
                              disk: what the merge must make of the origin
  pc.py merge-verify BOOT STATUS [NAME]  the origin is that image, but for the
                              origin writes made since the merge started
                              (committed ones all there); COW metadata sane
  pc.py merge-load BOOT       origin writers (no snapshot device) until killed
  pc.py merge-left            exceptions left on the COW device
Host side:
  pc.py host-plan SEED CUTS   chunk size and kill delays of a run
  pc.py host-state IMG BOOT   what boot BOOT recorded in the journal disk

Devices (guest): PC_ORIGIN and PC_SNAP (the mapped origin and snapshot),
/dev/vda (origin disk), /dev/vdb (COW disk), /dev/vdc (journal disk).

Writers: three on the origin and one on the snapshot (random sizes and
places, half of them starting in chunks without an exception), and two
whole-chunk snapshot writers: each write covers one to four whole chunks
that had no exception when the load started and that no whole-chunk
write took before, so it is the first write to them (on a P snapshot it
skips the copy and allocates the chunk itself); half are RWF_DSYNC, and
those are journaled (committed) by their writer as soon as they return,
without waiting for the flusher.

Data: every 512-byte sector this test writes says what it is: a 32-byte
header (b"RDPC", kind, seed, sector, version) and a fill derived from the
same values. Kind P is the pre-snapshot image (version 0); O a write to the
origin, S a write to the snapshot. Versions are boot.load.counter (bits 32,
24, 0; load 0 is the load that is cut, 1 and 2 the bounded ones), and
overlapping writes are ordered by range locks, so on any sector a higher
version was written after a lower one completed.

Merge: a merge generation starts from a pre-snapshot image and a
persistent snapshot; a bounded load writes both (its origin writes, of
load number 3, must all be gone after the merge); the snapshot's image is
then saved at MERGE_IMG on the journal disk and the merge started (LVM2's
way: the origin's table replaced by snapshot-merge, the snapshot
removed); the journal's writes so far are retired. From then on only the
origin is written, through the merging device, and every cut must leave:
each sector the image's, or an origin write made since the merge started
(never an older one, and the newest committed one or a later one where a
write was committed). Once a boot finds the merge complete it checks the
disk under the origin holds what the device shows, and starts the next
generation.

Journal (/dev/vdc, 4 KiB blocks written O_DIRECT|O_DSYNC, so they are on
the host's disk image when the write returns and survive a SIGKILL of QEMU):
block 0 the set-up, block 1 the clean-shutdown record, block 16+BOOT what
that boot did, and from block LOG0 a log of records (header with sequence
number = position, boot, flags, CRC; entries kind/dsync/count/start/version).
After a flush (fsync/fdatasync of both devices) completes, the writes that
had completed before it started are appended with a COMMIT record; writes
made with RWF_DSYNC are committed without a flush. Only committed records
count: they are the writes that must be on the disk after a power cut.
"""

import array
import hashlib
import json
import mmap
import os
import random
import struct
import sys
import threading
import time
import zlib

# The COW format's one Python oracle (tests/lib/cowformat.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import cowformat as cf  # noqa: E402

SECT = 512
BLK = 4096
LEN = 32768  # origin sectors under test (16 MiB)
M64 = (1 << 64) - 1
K = 0x9E3779B97F4A7C15
HDR = struct.Struct("<4sc3xQQQ")  # magic, kind, seed, sector, version
FILL = struct.Struct("<QQ")
STRIPE = 64  # sectors per range lock

SETUP_BLK, CLEAN_BLK, BOOT_BLK0 = 0, 1, 16
LOG0 = 4096  # first log block (16 MiB into the journal disk)
LOGH = struct.Struct("<8sQIIII")  # magic, seq, boot, flags, n, crc
ENT = struct.Struct("<ccHIQQ")  # kind, dsync, pad, count, start, version
MAXE = (BLK - LOGH.size) // ENT.size
COMMIT = 1

ORIGIN = os.environ.get("PC_ORIGIN", "/dev/mapper/pc-origin")
SNAP = os.environ.get("PC_SNAP", "/dev/mapper/pc-snap")
VDA, VDB, VDC = "/dev/vda", "/dev/vdb", "/dev/vdc"

SNAP_MAGIC = cf.SNAP_MAGIC

# The merge scenario: the snapshot's image, at the end of the journal disk
# (its log stops before it).
MERGE_IMG = 48 << 20
SETUP_LOAD = 3  # load number of a merge generation's bounded load


# --- sector contents ---------------------------------------------------------


def fill(kind, s, v, seed):
    return FILL.pack((s * K ^ seed) & M64, v ^ (kind[0] << 56)) * 30


def gen(kind, start, count, v, seed):
    return b"".join(
        [HDR.pack(b"RDPC", kind, seed, s, v) + fill(kind, s, v, seed) for s in range(start, start + count)]
    )


def parse(buf, off, seed):
    """(kind, sector, version) of the sector at buf[off:], or None if it is
    not a whole sector this run wrote."""
    magic, kind, sd, s, v = HDR.unpack_from(buf, off)
    if magic != b"RDPC" or sd != seed or kind not in (b"P", b"O", b"S"):
        return None
    if buf[off + 32 : off + SECT] != fill(kind, s, v, seed):
        return None
    return kind, s, v


def vname(v):
    return "v%d.%d.%d" % (v >> 32, v >> 24 & 0xFF, v & 0xFFFFFF) if v else "pre-snapshot data"


# --- direct I/O ----------------------------------------------------------------


class Dev:
    """A block device opened with O_DIRECT, through a page-aligned buffer."""

    def __init__(self, path, rw=False, sync=False):
        flags = (os.O_RDWR if rw else os.O_RDONLY) | os.O_DIRECT | (os.O_DSYNC if sync else 0)
        self.path = path
        self.fd = os.open(path, flags)
        self.buf = mmap.mmap(-1, 1 << 20)

    def size(self):
        return os.lseek(self.fd, 0, os.SEEK_END)

    def read(self, off, n):
        out = bytearray()
        while n:
            k = min(n, len(self.buf))
            got = os.preadv(self.fd, [memoryview(self.buf)[:k]], off)
            if got != k:
                raise OSError("short read of %s at %d: %d of %d" % (self.path, off, got, k))
            out += self.buf[:k]
            off += k
            n -= k
        return bytes(out)

    def write(self, off, data, flags=0):
        pos = 0
        while pos < len(data):
            k = min(len(data) - pos, len(self.buf))
            self.buf[:k] = data[pos : pos + k]
            got = os.pwritev(self.fd, [memoryview(self.buf)[:k]], off + pos, flags)
            if got != k:
                raise OSError("short write to %s at %d: %d of %d" % (self.path, off + pos, got, k))
            pos += k


class ImageFile:
    """The journal disk's image file, read on the host."""

    def __init__(self, path):
        self.f = open(path, "rb")

    def read(self, off, n):
        self.f.seek(off)
        b = self.f.read(n)
        return b + bytes(n - len(b))


# --- journal -------------------------------------------------------------------


def pack_json(magic, obj):
    payload = json.dumps(obj, sort_keys=True).encode()
    if len(payload) > BLK - 16:
        raise ValueError("journal record too big")
    b = struct.pack("<8sII", magic, len(payload), zlib.crc32(payload)) + payload
    return b + bytes(BLK - len(b))


def unpack_json(magic, blk):
    m, n, crc = struct.unpack_from("<8sII", blk)
    if m != magic or n > BLK - 16 or zlib.crc32(blk[16 : 16 + n]) != crc:
        return None
    return json.loads(blk[16 : 16 + n])


class Journal:
    def __init__(self, dev):
        self.dev = dev
        self.lock = threading.Lock()
        self.pos = None

    def get(self, blk, magic):
        return unpack_json(magic, self.dev.read(blk * BLK, BLK))

    def put(self, blk, magic, obj):
        self.dev.write(blk * BLK, pack_json(magic, obj))

    def setup(self):
        st = self.get(SETUP_BLK, b"RDPCSETU")
        if st is None:
            raise SystemExit("pc: the journal disk has no set-up record (boot 1 did not finish stamping)")
        return st

    def boot(self, boot):
        return self.get(BOOT_BLK0 + boot, b"RDPCBOOT") or {"boot": boot, "flags": [], "checks": {}, "log": []}

    def update_boot(self, boot, flag=None, check=None, text=None):
        with self.lock:
            b = self.boot(boot)
            if flag and flag not in b["flags"]:
                b["flags"].append(flag)
            if check:
                b["checks"][check[0]] = check[1][:800]
            if text:
                b["log"].append(text[:600])
            while len(json.dumps(b, sort_keys=True).encode()) > BLK - 16 and b["log"]:
                b["log"].pop(0)
            self.put(BOOT_BLK0 + boot, b"RDPCBOOT", b)

    def scan(self, first=0):
        """Committed log entries (kind, dsync, count, start, version) from
        record FIRST on, and the block after the last commit (where the
        next boot appends)."""
        pos, last_boot, pending, durable, tail, commits = 0, 0, [], [], 0, 0
        nblocks = self.dev_blocks() - LOG0
        while pos < nblocks:
            n = min(64, nblocks - pos)
            data = self.dev.read((LOG0 + pos) * BLK, n * BLK)
            for i in range(n):
                blk = data[i * BLK : (i + 1) * BLK]
                magic, seq, boot, flags, cnt, crc = LOGH.unpack_from(blk)
                if magic != b"RDPCLOG1" or seq != pos or boot < last_boot or cnt > MAXE:
                    return durable, tail, commits
                if zlib.crc32(LOGH.pack(magic, seq, boot, flags, cnt, 0) + blk[LOGH.size :]) != crc:
                    return durable, tail, commits
                last_boot = boot
                for j in range(cnt if pos >= first else 0):
                    kind, dsync, _, count, start, v = ENT.unpack_from(blk, LOGH.size + j * ENT.size)
                    pending.append((kind, dsync, count, start, v))
                pos += 1
                if flags & COMMIT:
                    durable += pending
                    pending = []
                    tail = pos
                    commits += 1
        return durable, tail, commits

    def dev_blocks(self):
        if isinstance(self.dev, Dev):
            n = self.dev.size() // BLK
        else:
            n = os.fstat(self.dev.f.fileno()).st_size // BLK
        # The merge scenario keeps the snapshot's image after the log.
        return min(n, MERGE_IMG // BLK)

    def append(self, boot, entries):
        """One write of the records holding ENTRIES, the last one COMMIT
        (from the flusher, and from the whole-chunk writers: one at a
        time, as the device's buffer is shared)."""
        with self.lock:
            self._append(boot, entries)

    def _append(self, boot, entries):
        blocks = []
        for i in range(0, len(entries), MAXE):
            part = entries[i : i + MAXE]
            flags = COMMIT if i + MAXE >= len(entries) else 0
            seq = self.pos + len(blocks)
            body = b"".join(ENT.pack(k, d, 0, c, s, v) for (k, d, c, s, v) in part)
            body += bytes(BLK - LOGH.size - len(body))
            crc = zlib.crc32(LOGH.pack(b"RDPCLOG1", seq, boot, flags, len(part), 0) + body)
            blocks.append(LOGH.pack(b"RDPCLOG1", seq, boot, flags, len(part), crc) + body)
        if LOG0 + self.pos + len(blocks) > self.dev_blocks():
            raise OSError("the journal disk is full")
        self.dev.write((LOG0 + self.pos) * BLK, b"".join(blocks))
        self.pos += len(blocks)


def journal_rw():
    return Journal(Dev(VDC, rw=True, sync=True))


# --- parameters --------------------------------------------------------------


def chunk_of(seed):
    return (8, 16, 128)[seed % 3]


# --- stamp -----------------------------------------------------------------------


def stamp(seed, generation):
    """Writes the pre-snapshot image of GENERATION on the origin, durably."""
    d = Dev(ORIGIN, rw=True)
    if d.size() < LEN * SECT:
        raise SystemExit("pc: %s is smaller than %d sectors" % (ORIGIN, LEN))
    t = time.time()
    step = 8192
    for s in range(0, LEN, step):
        d.write(s * SECT, gen(b"P", s, step, generation, seed))
    os.fsync(d.fd)
    return time.time() - t


def cmd_stamp():
    seed = int(os.environ["RDM_PC_SEED"])
    chunk = int(os.environ.get("RDM_PC_CHUNK") or chunk_of(seed))
    took = stamp(seed, 0)
    jr = journal_rw()
    # A journal disk from an earlier run would confuse the log scan.
    jr.dev.write(0, bytes(1 << 20))
    jr.dev.write(LOG0 * BLK, bytes(1 << 20))
    jr.put(SETUP_BLK, b"RDPCSETU", {"seed": seed, "chunk": chunk, "len": LEN, "gen": 0, "gen_boot": 1, "log_start": 0})
    print("# stamped the pre-snapshot image (seed %d, %d sectors) in %.1f s" % (seed, LEN, took))


def cmd_retake(boot):
    """With the snapshot removed: a new pre-snapshot image (the next
    generation) on the origin, the COW device made new (its header zeroed;
    the old areas and chunks stay behind as stale data), and the journal's
    writes so far retired. The snapshot is then taken again."""
    jr = journal_rw()
    setup = jr.setup()
    _, tail, _ = jr.scan()
    g = setup["gen"] + 1
    took = stamp(setup["seed"], g)
    Dev(VDB, rw=True, sync=True).write(0, bytes(BLK))
    setup.update(gen=g, gen_boot=boot, log_start=tail)
    jr.put(SETUP_BLK, b"RDPCSETU", setup)
    text = "most chunks have exceptions: a new snapshot (generation %d) over a new pre-snapshot image (%.1f s)" % (g, took)
    jr.update_boot(boot, flag="retake", text=text)
    print("# " + text)


def needs_retake(cow):
    return len(cow.exceptions) * 2 > LEN // cow.chunk


# --- COW metadata ----------------------------------------------------------------


class Cow:
    """dm-snap-persistent's on-disk state, read straight from the COW disk,
    and the status line dm-snapshot derives from it when it loads."""

    def __init__(self, chunk, errs):
        self.dev = Dev(VDB)
        self.chunk = chunk
        self.sectors = self.dev.size() // SECT
        cbytes = chunk * SECT
        self.exceptions = []
        hdr = self.dev.read(0, SECT)
        magic, valid, version, cs = cf.parse_header(hdr)
        self.ok = False
        if magic != SNAP_MAGIC:
            errs.append("COW header: magic %#x, expected %#x" % (magic, SNAP_MAGIC))
            return
        if (valid, version, cs) != (1, cf.DISK_VERSION, chunk):
            errs.append("COW header: valid %d version %d chunk size %d, expected 1 1 %d" % (valid, version, cs, chunk))
            return
        nchunks = self.sectors // chunk
        area = 0
        while True:
            loc = cf.area_chunk(area, chunk)
            if loc >= nchunks:
                errs.append("COW metadata: area %d would be past the end of the COW device" % area)
                return
            entries, full = cf.area_entries(self.dev.read(loc * cbytes, cbytes))
            self.exceptions += entries
            if not full:
                break
            area += 1
        olds, news = set(), set()
        for old, new in self.exceptions:
            if old >= LEN // chunk:
                errs.append("COW metadata: exception for origin chunk %d, past the origin" % old)
            if new < 2 or new >= nchunks or cf.is_metadata(new, chunk):
                errs.append("COW metadata: origin chunk %d mapped to COW chunk %d (header, metadata or past the end)" % (old, new))
            if old in olds:
                errs.append("COW metadata: origin chunk %d has two exceptions" % old)
            if new in news:
                errs.append("COW metadata: COW chunk %d used twice" % new)
            olds.add(old)
            news.add(new)
        next_free = 2
        for _, new in self.exceptions:
            next_free = max(next_free, new + 1)
        next_free = cf.skip_metadata(next_free, chunk)
        self.status = "0 %d snapshot %d/%d %d" % (LEN, next_free * chunk, self.sectors, (area + 2) * chunk)
        self.areas = area + 1
        self.ok = True

    def data(self):
        """{origin chunk: bytes of its COW chunk}."""
        if not self.exceptions:
            return {}
        cb = self.chunk * SECT
        top = max(new for _, new in self.exceptions) + 1
        raw = self.dev.read(0, top * cb)
        return {old: raw[new * cb : (new + 1) * cb] for old, new in self.exceptions}


# --- verify ----------------------------------------------------------------------


def durable_maps(entries):
    dmax = {b"O": array.array("Q", bytes(8 * LEN)), b"S": array.array("Q", bytes(8 * LEN))}
    for kind, _, count, start, v in entries:
        a = dmax[kind]
        for s in range(start, start + count):
            if a[s] < v:
                a[s] = v
    return dmax


def check_image(name, data, pre, kind, dmax, setup, boot, errs, written=None):
    """Every sector of DATA holds the newest committed write of KIND to it
    or a later one (unflushed writes may or may not have landed), or, if no
    write to it was committed, the pre-snapshot data or any write of KIND.
    Writes from before the snapshot was last (re)taken must be gone, and
    the pre-snapshot data is that of the snapshot's generation. Runs of
    sectors with the same problem are reported once."""
    seed, generation, gen_boot = setup["seed"], setup["gen"], setup["gen_boot"]
    other = {b"O": "the origin", b"S": "the snapshot"}
    runs = []

    def bad(key, s, text):
        if runs and runs[-1][0] == key and runs[-1][2] == s - 1:
            runs[-1][2] = s
        else:
            runs.append([key, s, s, text])

    step = 128  # sectors compared at once
    for blk in range(0, LEN, step):
        o = blk * SECT
        if data[o : o + step * SECT] == pre[o : o + step * SECT] and max(dmax[blk : blk + step]) == 0:
            continue
        for s in range(blk, blk + step):
            want = dmax[s]
            p = parse(data, s * SECT, seed)
            if p is None:
                bad("junk", s, "not data this test wrote (torn, misplaced or zero)")
            elif p[1] != s:
                bad("moved", s, "holds the data of sector %d" % p[1])
            elif p[0] == b"P":
                if p[2] != generation:
                    bad("prev", s, "pre-snapshot data of generation %d, not %d" % (p[2], generation))
                elif want:
                    bad("lost", s, "the flushed write %s is lost (pre-snapshot data)" % vname(want))
            elif p[0] != kind:
                bad("other", s, "holds data written to %s (%s)" % (other[p[0]], vname(p[2])))
            elif p[2] < want:
                bad("old", s, "holds %s, older than the flushed %s" % (vname(p[2]), vname(want)))
            elif p[2] >> 32 > boot:
                bad("future", s, "holds %s, from a later boot than %d" % (vname(p[2]), boot))
            elif p[2] >> 32 < gen_boot:
                bad("stale", s, "holds %s, written before the snapshot was taken in boot %d" % (vname(p[2]), gen_boot))
            elif written is not None:
                written.add(s)
        if len(runs) > 12:
            break
    for _, first, last, text in runs:
        more = " (and the %d sectors after it alike)" % (last - first) if last > first else ""
        errs.append("%s sector %d: %s%s" % (name, first, text, more))


def read_all(path):
    return Dev(path).read(0, LEN * SECT)


def cmd_verify(boot, status, name="verify"):
    return verify(boot, status, name)[0]


def verify(boot, status, name):
    """(0 or 1, the COW metadata) after checking everything."""
    t = time.time()
    jr = journal_rw()
    setup = jr.setup()
    seed, chunk = setup["seed"], setup["chunk"]
    entries, tail, commits = jr.scan(setup["log_start"])
    dmax = durable_maps(entries)
    errs = []
    if status.split()[3:4] == ["Invalid"] or status.split()[3:4] == ["Overflow"]:
        errs.append("snapshot status is '%s'" % status)
    pre = gen(b"P", 0, LEN, setup["gen"], seed)
    origin = read_all(ORIGIN)
    try:
        snap = read_all(SNAP)
    except OSError as e:
        errs.append("reading the snapshot: %s" % e)
        snap = None
    written = set()
    check_image("origin", origin, pre, b"O", dmax[b"O"], setup, boot, errs, written)
    if snap is not None:
        check_image("snapshot", snap, pre, b"S", dmax[b"S"], setup, boot, errs)
    cow = Cow(chunk, errs)
    nexc = 0
    if cow.ok:
        nexc = len(cow.exceptions)
        if status != cow.status:
            errs.append("status '%s', but the COW metadata (%d exceptions) gives '%s'" % (status, nexc, cow.status))
        excepted = {old for old, _ in cow.exceptions}
        for c in sorted({s // chunk for s in written} - excepted)[:5]:
            errs.append("origin chunk %d was written but has no exception in the COW metadata" % c)
        if snap is not None:
            cd = cow.data()
            cb = chunk * SECT
            bad = 0
            for c in range(LEN // chunk):
                want = cd.get(c)
                where = "its COW chunk" if want is not None else "the origin (no exception)"
                if want is None:
                    want = origin[c * cb : (c + 1) * cb]
                if snap[c * cb : (c + 1) * cb] != want:
                    bad += 1
                    if bad <= 5:
                        errs.append("snapshot chunk %d differs from %s" % (c, where))
    ow = sum(1 for e in entries if e[0] == b"O")
    sw = len(entries) - ow
    summary = "%d committed writes (%d origin, %d snapshot) in %d commits, %d exceptions on disk, status '%s'" % (
        len(entries), ow, sw, commits, nexc, status)
    if setup["gen"]:
        summary += ", snapshot generation %d" % setup["gen"]
    if errs:
        msg = "; ".join(errs[:12])
        print("# verify FAILED (%s): %s" % (summary, msg))
        jr.update_boot(boot, check=(name, "fail: " + msg), text=name + ": " + summary)
        return 1, cow
    print("# verify ok in %.1f s: %s" % (time.time() - t, summary))
    jr.update_boot(boot, check=(name, "ok: " + summary))
    return 0, cow


# --- load ------------------------------------------------------------------------


class Load:
    def __init__(self, boot, mode, nwrites, origin_only=False):
        self.boot, self.mode, self.nwrites = boot, mode, nwrites
        self.origin_only = origin_only
        self.jr = journal_rw()
        setup = self.jr.setup()
        self.seed, self.chunk = setup["seed"], setup["chunk"]
        # Loads of one boot (clean, then probe) get versions above the last.
        self.load_no = ("cut", "clean", "probe", "setup").index(mode)
        self.rng = random.Random(self.seed * 1000003 + boot * 31 + self.load_no)
        self.glock = threading.Lock()
        self.completed = []
        self.counter = 0
        self.issued = 0
        self.done_writes = 0
        self.stop_writers = threading.Event()
        self.stop_flusher = threading.Event()
        self.errors = []
        self.commits = 0
        self.flushes = 0
        self.locks = {k: [threading.Lock() for _ in range(LEN // STRIPE)] for k in (b"O", b"S")}
        self.devs = {b"O": Dev(ORIGIN, rw=True)}
        if not origin_only:
            self.devs[b"S"] = Dev(SNAP, rw=True)
        self.targets = None
        errs = []
        cow = Cow(self.chunk, errs)
        if errs:
            raise SystemExit("pc: load: " + "; ".join(errs))
        excepted = {old for old, _ in cow.exceptions}
        # Chunks without an exception yet: half the writes start in one, so
        # that later loads still make copies when most chunks have them.
        self.fresh = sorted(set(range(LEN // self.chunk)) - excepted)
        # The whole-chunk snapshot writers take these chunks one by one, in
        # a random order, each once: their writes are the first to the
        # chunk, which on a P snapshot skips the copy.
        self.whole_left = set(self.fresh)
        self.whole_order = list(self.fresh)
        random.Random(self.seed * 17 + boot).shuffle(self.whole_order)
        self.whole_writes = 0
        if mode == "probe":
            olds = sorted(excepted)
            self.rng.shuffle(olds)
            self.targets = olds[:nwrites]
            self.nwrites = len(self.targets)
        self.hot = self.rng.randrange(0, LEN - 4096) // 8 * 8

    def error(self, text):
        with self.glock:
            self.errors.append(text)
        self.stop_writers.set()

    def pick(self, r, i):
        if self.targets is not None:
            c = self.targets[i]
            count = r.randint(1, min(self.chunk, 64))
            return c * self.chunk + r.randint(0, self.chunk - count), count
        x = r.random()
        count = r.randint(1, 8) if x < 0.35 else r.randint(8, 64) if x < 0.75 else r.randint(64, 256)
        y = r.random()
        if y < 0.5 and self.fresh:
            start = r.choice(self.fresh) * self.chunk + r.randrange(self.chunk)
        else:
            lo, hi = (self.hot, self.hot + 4096) if y < 0.75 else (0, LEN)
            start = r.randrange(lo, hi)
        if count > 1 and r.random() < 0.3:
            # Across a chunk boundary.
            start = (start // self.chunk + 1) * self.chunk - r.randint(1, count - 1)
        return max(0, min(start, LEN - count)), count

    def pick_whole(self, r):
        """A whole-chunk snapshot write: one chunk (sometimes up to 4
        consecutive ones) that had no exception when the load started and
        that no whole-chunk write took yet; None when none is left."""
        want = r.randint(1, max(1, min(4, 256 // self.chunk)))
        with self.glock:
            while self.whole_order:
                c = self.whole_order.pop()
                if c in self.whole_left:
                    break
            else:
                return None
            n = 0
            while n < want and c + n in self.whole_left:
                self.whole_left.discard(c + n)
                n += 1
        return c * self.chunk, n * self.chunk

    def writer(self, wid, kind, whole=False):
        r = random.Random(self.seed * 7 + self.boot * 1009 + wid)
        dev = self.devs[kind]
        locks = self.locks[kind]
        buf = mmap.mmap(-1, 256 * SECT)
        while not self.stop_writers.is_set():
            i = None
            if self.nwrites is not None:
                with self.glock:
                    i = self.issued
                    self.issued += 1
                if i >= self.nwrites:
                    return
            if whole:
                picked = self.pick_whole(r)
                if picked is None:
                    return
                start, count = picked
            else:
                start, count = self.pick(r, i)
            held = locks[start // STRIPE : (start + count - 1) // STRIPE + 1]
            for lk in held:
                lk.acquire()
            try:
                with self.glock:
                    self.counter += 1
                    v = (self.boot << 32) | (self.load_no << 24) | self.counter
                data = gen(kind, start, count, v, self.seed)
                buf[: len(data)] = data
                dsync = r.random() < (0.5 if whole else 0.125)
                try:
                    got = os.pwritev(dev.fd, [memoryview(buf)[: len(data)]], start * SECT, os.RWF_DSYNC if dsync else 0)
                except OSError as e:
                    self.error("%s write of %d sectors at %d failed: %s" % (dev.path, count, start, e))
                    return
                if got != len(data):
                    self.error("%s write of %d sectors at %d: short (%d bytes)" % (dev.path, count, start, got))
                    return
            finally:
                for lk in reversed(held):
                    lk.release()
            entry = (kind, b"\1" if dsync else b"\0", count, start, v)
            if whole and dsync:
                # Durable once the write returned: journaled at once, so
                # that a cut soon after it finds it committed (a driver
                # that acknowledged it before its exception was durable
                # has lost it then).
                try:
                    self.jr.append(self.boot, [entry])
                except OSError as e:
                    self.error("journal write failed: %s" % e)
                    return
            with self.glock:
                if not (whole and dsync):
                    self.completed.append(entry)
                else:
                    self.commits += 1
                self.done_writes += 1
                self.whole_writes += whole

    def flusher(self):
        r = random.Random(self.seed * 13 + self.boot)
        undurable = []
        while True:
            final = self.stop_flusher.wait(r.uniform(0.02, 0.4))
            with self.glock:
                new = self.completed
                self.completed = []
            try:
                if not final and r.random() < 0.25:
                    # Only the RWF_DSYNC writes are durable without a flush.
                    pool = undurable + new
                    durable = [e for e in pool if e[1] == b"\1"]
                    undurable = [e for e in pool if e[1] != b"\1"]
                else:
                    sync = os.fsync if r.random() < 0.5 else os.fdatasync
                    for d in self.devs.values():
                        sync(d.fd)
                    self.flushes += 1
                    durable = undurable + new
                    undurable = []
                if durable:
                    self.jr.append(self.boot, durable)
                    self.commits += 1
            except OSError as e:
                self.error("flush or journal write failed: %s" % e)
                return
            if final:
                return

    def run(self, cap):
        entries, tail, _ = self.jr.scan()
        self.jr.pos = tail
        # Zeroes after the tail: no stale record can extend this boot's log.
        self.jr.dev.write((LOG0 + tail) * BLK, bytes(1 << 20))
        writers = [threading.Thread(target=self.writer, args=(i, b"O")) for i in range(3 if self.targets is None else 1)]
        if self.targets is None and not self.origin_only:
            writers.append(threading.Thread(target=self.writer, args=(3, b"S")))
            # Two whole-chunk snapshot writers: the first write to a chunk
            # of a P snapshot skips the copy, and must not be acknowledged
            # before its exception is committed (else a cut loses it).
            for wid in (4, 5):
                writers.append(threading.Thread(target=self.writer, args=(wid, b"S", True)))
        fl = threading.Thread(target=self.flusher)
        self.jr.update_boot(self.boot, flag="load-" + self.mode)
        print("# %s load started: %d writers, chunk %d, log tail at record %d" % (self.mode, len(writers), self.chunk, tail), flush=True)
        t = time.time()
        for w in writers + [fl]:
            w.start()
        if self.nwrites is None:
            self.stop_writers.wait(cap)
            self.stop_writers.set()
        for w in writers:
            w.join()
        self.stop_flusher.set()
        fl.join()
        took = time.time() - t
        text = "%s load: %d writes (%d whole-chunk snapshot writes), %d flushes, %d commits in %.1f s" % (
            self.mode, self.done_writes, self.whole_writes, self.flushes, self.commits, took)
        if self.errors:
            text += ": " + "; ".join(self.errors[:5])
        print("# " + text)
        if self.mode == "cut":
            self.jr.update_boot(self.boot, flag="load-ended", text=text)
        else:
            self.jr.update_boot(self.boot, check=("load-" + self.mode, ("fail: " if self.errors else "ok: ") + text))
        return 1 if self.errors else 0


def cmd_load(boot, mode, n=None):
    cap = float(os.environ.get("RDM_PC_LOAD_MAX", "120"))
    return Load(boot, mode, n).run(cap)



# --- merge -------------------------------------------------------------------------


def cmd_merge_setup(boot, nwrites):
    """A bounded load on the origin and the snapshot, then the snapshot's
    image saved as what the merge must make of the origin; the writes so
    far retired from the journal."""
    rc = Load(boot, "setup", nwrites).run(600)
    if rc:
        return rc
    img = read_all(SNAP)
    jr = journal_rw()
    Dev(VDC, rw=True, sync=True).write(MERGE_IMG, img)
    setup = jr.setup()
    _, tail, _ = jr.scan()
    setup.update(merge_boot=boot, log_start=tail)
    jr.put(SETUP_BLK, b"RDPCSETU", setup)
    errs = []
    n = len(Cow(setup["chunk"], errs).exceptions)
    text = "merge generation %d: %d exceptions to merge (snapshot image saved)" % (setup["gen"], n)
    jr.update_boot(boot, flag="merge-setup", text=text)
    print("# " + text)
    return 1 if errs else 0


def check_merged(data, image, dmax, setup, boot, errs):
    """Every sector of the merging origin holds the snapshot's image, or an
    origin write made since the merge started: the newest committed one
    or a later one where one was committed."""
    seed, mboot = setup["seed"], setup["merge_boot"]
    runs = []

    def bad(key, s, text):
        if runs and runs[-1][0] == key and runs[-1][2] == s - 1:
            runs[-1][2] = s
        else:
            runs.append([key, s, s, text])

    step = 128
    for blk in range(0, LEN, step):
        o = blk * SECT
        if data[o : o + step * SECT] == image[o : o + step * SECT] and max(dmax[blk : blk + step]) == 0:
            continue
        for s in range(blk, blk + step):
            want = dmax[s]
            o = s * SECT
            if data[o : o + SECT] == image[o : o + SECT]:
                if want:
                    bad("lost", s, "the flushed write %s is lost (the snapshot's image)" % vname(want))
                continue
            p = parse(data, o, seed)
            if p is None:
                bad("junk", s, "neither the snapshot's image nor data this test wrote")
            elif p[1] != s:
                bad("moved", s, "holds the data of sector %d" % p[1])
            elif p[0] != b"O":
                bad("notimg", s, "holds %s data that is not the snapshot's image (%s)" % (p[0].decode(), vname(p[2])))
            elif p[2] < want:
                bad("old", s, "holds %s, older than the flushed %s" % (vname(p[2]), vname(want)))
            elif p[2] >> 32 > boot:
                bad("future", s, "holds %s, from a later boot than %d" % (vname(p[2]), boot))
            elif p[2] >> 32 < mboot or (p[2] >> 32 == mboot and (p[2] >> 24) & 0xFF == SETUP_LOAD):
                bad("unmerged", s, "holds %s, an origin write from before the merge started: not merged" % vname(p[2]))
        if len(runs) > 12:
            break
    for _, first, last, text in runs:
        more = " (and the %d sectors after it alike)" % (last - first) if last > first else ""
        errs.append("origin sector %d: %s%s" % (first, text, more))


def cmd_merge_verify(boot, status, name="verify"):
    t = time.time()
    jr = journal_rw()
    setup = jr.setup()
    entries, _, commits = jr.scan(setup["log_start"])
    dmax = durable_maps(entries)[b"O"]
    errs = []
    info = status.split(None, 3)[3] if len(status.split()) > 3 else status
    if info in ("Invalid", "Merge failed", "Overflow"):
        errs.append("merge status is '%s'" % status)
    image = Dev(VDC).read(MERGE_IMG, LEN * SECT)
    origin = read_all(ORIGIN)
    check_merged(origin, image, dmax, setup, boot, errs)
    cow = Cow(setup["chunk"], errs)
    left = len(cow.exceptions) if cow.ok else -1
    summary = "%d committed origin writes since the merge started, in %d commits; %d exceptions left to merge, status '%s', generation %d" % (
        len(entries), commits, left, status, setup["gen"])
    if errs:
        msg = "; ".join(errs[:12])
        print("# %s FAILED (%s): %s" % (name, summary, msg))
        jr.update_boot(boot, check=(name, "fail: " + msg), text=name + ": " + summary)
        return 1
    print("# %s ok in %.1f s: %s" % (name, time.time() - t, summary))
    jr.update_boot(boot, check=(name, "ok: " + summary))
    return 0


def cmd_merge_load(boot):
    cap = float(os.environ.get("RDM_PC_LOAD_MAX", "120"))
    return Load(boot, "cut", None, origin_only=True).run(cap)


def cmd_merge_left():
    errs = []
    cow = Cow(chunk_of_setup(), errs)
    if errs:
        raise SystemExit("pc: " + "; ".join(errs))
    print(len(cow.exceptions))


def chunk_of_setup():
    return journal_rw().setup()["chunk"]


# --- small commands --------------------------------------------------------------


def cmd_sums():
    h = [hashlib.sha256(read_all(p)).hexdigest()[:16] for p in (ORIGIN, SNAP)]
    print("origin %s snapshot %s" % tuple(h))


def host_plan(seed, cuts):
    """The chunk size and the kill delays (seconds into each load). With
    128-sector chunks every chunk has its exception within seconds, so the
    cuts come earlier."""
    r = random.Random(seed)
    chunk = chunk_of(seed)
    top = 3.0 if chunk == 128 else 6.0
    print(chunk, *[round(r.uniform(0.3, top), 2) for _ in range(cuts)])


def host_state(img, boot):
    if not os.path.exists(img):
        print("flags")
        return
    jr = Journal(ImageFile(img))
    b = jr.get(BOOT_BLK0 + boot, b"RDPCBOOT")
    if b is None:
        print("flags")
        return
    print("flags " + " ".join(b["flags"]))
    for k, v in sorted(b["checks"].items()):
        print("check %s %s" % (k, v))
    for line in b["log"]:
        print("log " + line)


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    a = argv[2:]
    if cmd == "stamp":
        cmd_stamp()
    elif cmd == "verify":
        return cmd_verify(int(a[0]), *a[1:3])
    elif cmd == "verify-load":
        name = a[2] if len(a) > 2 else "verify"
        rc, cow = verify(int(a[0]), a[1], name)
        if rc:
            return rc
        if name == "verify" and needs_retake(cow):
            return 3
        return cmd_load(int(a[0]), "cut")
    elif cmd == "retake":
        cmd_retake(int(a[0]))
    elif cmd == "load":
        return cmd_load(int(a[0]), a[1], int(a[2]) if len(a) > 2 else None)
    elif cmd == "merge-setup":
        return cmd_merge_setup(int(a[0]), int(a[1]) if len(a) > 1 else 1500)
    elif cmd == "merge-verify":
        return cmd_merge_verify(int(a[0]), *a[1:3])
    elif cmd == "merge-load":
        return cmd_merge_load(int(a[0]))
    elif cmd == "merge-left":
        cmd_merge_left()
    elif cmd == "origin-sum":
        print(hashlib.sha256(read_all(ORIGIN)).hexdigest()[:16])
    elif cmd == "disk-sum":
        print(hashlib.sha256(Dev(VDA).read(0, LEN * SECT)).hexdigest()[:16])
    elif cmd == "sums":
        cmd_sums()
    elif cmd == "check":
        journal_rw().update_boot(int(a[0]), check=(a[1], a[2] + (": " + a[3] if len(a) > 3 else "")))
    elif cmd == "note":
        journal_rw().update_boot(int(a[0]), flag=a[1], text=a[2] if len(a) > 2 else None)
    elif cmd == "clean-record":
        journal_rw().put(CLEAN_BLK, b"RDPCCLEA", {"boot": int(a[0]), "status": a[1], "sums": a[2]})
    elif cmd == "clean-get":
        c = journal_rw().get(CLEAN_BLK, b"RDPCCLEA")
        if c is None:
            return 1
        print(c["status"])
        print(c["sums"])
    elif cmd == "host-plan":
        host_plan(int(a[0]), int(a[1]))
    elif cmd == "host-state":
        host_state(a[0], int(a[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
