#!/usr/bin/env python3
"""Builds, reads and checks dm-snapshot persistent COW images (the on-disk
format of drivers/md/dm-snap-persistent.c, which rdm shares) for rdm's VM
tests. Standard library only; runs on the host and in the test VM.

The format itself (header, metadata areas, where each exception's data
chunk is) comes from tests/lib/cowformat.py, the one Python oracle of it,
which tests/host/test_cowformat.sh checks against the driver's own code.

Commands (sizes in 512-byte sectors, chunks in chunks):

  mkcow.py make COW --chunk C --count N [--origin-chunks M] [--stride P]
                    [--first F] [--data all|none] [--data-below W] [--invalid]
                    [--stale S]
      Writes a COW image onto COW (block device or file) with N exceptions:
      exception i maps origin chunk old(i) = (F + i*P) mod M to the i-th
      data chunk in allocation order (the data chunks between the metadata
      areas, from chunk 2 on), and fills that data chunk with the COW data
      of old(i) (see Data below; --data none: metadata only). M defaults
      to the smallest power of two >= 2N, P to an odd-ish number near
      0.618*M coprime with M (so old(i) are distinct, and neighbours in
      allocation order are not neighbours on the origin). If the last area
      is full, the next one is zeroed. --invalid: valid=0 in the header.
      --stale S: after the end of the list (the zero entry at position N)
      the last area holds S stale entries, positions N+1..N+S, each as
      `make --count N+1+S` would have written it (old(i), the i-th data
      chunk, whose data is written too): what a crash in the middle of a
      write of a longer list leaves, or an older list. A reader stops at
      the end and must never see them. They must fit in the area.
      --data-below W: only the exceptions of origin chunks below W get
      their COW data (a large sparse image; `sample --below W` reads only
      those). A small stride (about M / entries-per-area) makes each
      metadata area one or two arithmetic progressions, which are written
      and checked at C speed: the way to build images of millions.
      After writing, reads the image back (O_DIRECT) as dm does and checks
      it (exit 1 on a mismatch). Prints one line of key=value figures,
      among them allocated= and metadata= in sectors as dm's status shows
      them for the image (dm's rule: next_free = last data chunk + 1,
      skipping a metadata area; metadata = (current area + 2) chunks).

  mkcow.py olds --chunk C --count N [--origin-chunks M] [--stride P]
                [--first F] --from I --to J
      Prints old(i) for I <= i < J, one a line (the origin chunks of
      exceptions I..J of the image `make` builds with the same arguments).

  mkcow.py expect DEV --chunk C --tag cow|origin CHUNKS-FILE
      Reads each chunk listed in CHUNKS-FILE (whitespace-separated) from
      DEV: it must hold the COW data (cow) or the origin data (origin) of
      that chunk, whole. Exit 1 on the first that does not.

  mkcow.py origin DEV --chunk C --chunks M
      Stamps origin chunks [0, M) of DEV with their origin data.

  mkcow.py check COW [--image FILE] [--olds FILE]
      Parses an existing image as dm's read_metadata does and prints
      chunk= valid= version= exceptions= areas= allocated= metadata=;
      exit 1 if two exceptions share an origin chunk or a data chunk, or a
      data chunk is the header, a metadata area or past the end.
      --image FILE: every exception's data chunk must equal that old chunk
      of FILE (an image of the snapshot's contents; prints image=ok).
      --olds FILE: the exceptions must be for exactly the origin chunks
      listed in FILE (whitespace-separated; prints olds=ok).

  mkcow.py sample SNAP --chunk C --count N [--origin-chunks M] [--stride P]
                       [--first F] [--samples K] [--seed S] [--origin-only]
                       [--below W]
      Reads K chunks of the snapshot device SNAP that have exceptions in
      the image `make` built with the same arguments (the first and the
      last, those at area boundaries, random ones: they must hold their
      COW data) and K origin chunks below M without one (they must hold
      their origin data, from `origin`). Exit 1 on a mismatch.
      --origin-only: SNAP is the origin device: all of them must hold
      their origin data. --below W: only chunks below W (those `make
      --data-below W` and `origin --chunks W` wrote), random ones.

Data: each 512-byte sector of a chunk starts with the little-endian word
TAG | sector-in-chunk << 40 | chunk and its other words are TAG, with TAG
0xc0de << 48 for COW data (chunk = the origin chunk it stands for) and
0x0a1c << 48 for origin data: a chunk read from the snapshot says whose
data it is, and which sector.

All device I/O is O_DIRECT through a few reused page-aligned buffers, in
pieces of up to 4 MiB: under TCG, fresh buffers (page faults) and small
I/Os cost more than the I/O itself.
"""
import argparse
import array
import mmap
import os
import random
import stat
import struct
import sys
import time
from math import gcd

# cowformat.py: in tests/lib, or beside this file (kselftest's install).
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(_here, "..", "lib"), _here]
import cowformat as cf  # noqa: E402

SNAP_MAGIC = cf.SNAP_MAGIC
DISK_VERSION = cf.DISK_VERSION
COW_TAG = 0xC0DE << 48
ORIG_TAG = 0x0A1C << 48
ENTRY = cf.ENTRY
WORD = struct.Struct("<Q")
SECTOR = 512
IO_MAX = 4 << 20


def die(msg):
    print("mkcow: error: " + msg, file=sys.stderr)
    sys.exit(1)


def name_chunk(buf, off, tag, c, cb):
    """Patches the sector-head words of the chunk at buf[off:off+cb] (whose
    other words are tag already)."""
    for j in range(cb // SECTOR):
        WORD.pack_into(buf, off + j * SECTOR, tag | j << 40 | c)


def chunk_of(tag, c, cb):
    """The data of chunk c named by tag (for comparisons)."""
    buf = bytearray(WORD.pack(tag) * (cb // 8))
    name_chunk(buf, 0, tag, c, cb)
    return bytes(buf)


class Dev:
    """A block device or file, read and written with O_DIRECT where it can
    be (so that we see what the kernel wrote with bios, whatever the page
    cache holds), through one reused aligned buffer."""

    def __init__(self, path, write=False):
        self.path = path
        st = os.stat(path)
        self.is_blk = stat.S_ISBLK(st.st_mode)
        flags = os.O_RDWR if write else os.O_RDONLY
        self.fd = os.open(path, flags)
        self.dfd = None
        try:
            self.dfd = os.open(path, flags | os.O_DIRECT)
        except OSError:
            pass
        self.size = os.lseek(self.fd, 0, os.SEEK_END) if self.is_blk else st.st_size
        self.buf = mmap.mmap(-1, IO_MAX)

    def _direct(self, off, length):
        return self.dfd is not None and off % SECTOR == 0 and length % SECTOR == 0

    def view(self, off, length):
        """A memoryview of length bytes from off (<= IO_MAX), valid until
        the next I/O."""
        mv = memoryview(self.buf)[:length]
        if self._direct(off, length):
            try:
                if os.preadv(self.dfd, [mv], off) == length:
                    return mv
            except OSError:
                pass
        data = os.pread(self.fd, length, off)
        if len(data) != length:
            die(f"{self.path}: short read at byte {off} ({len(data)} of {length})")
        return memoryview(data)

    def read(self, off, length):
        out = bytearray()
        while length:
            n = min(length, IO_MAX)
            out += self.view(off, n)
            off, length = off + n, length - n
        return bytes(out)

    def write_view(self, off, mv):
        """Writes a view of an aligned buffer (ours or a Writer's)."""
        if self._direct(off, len(mv)):
            try:
                if os.pwritev(self.dfd, [mv], off) == len(mv):
                    return
            except OSError:
                pass
        if os.pwrite(self.fd, mv, off) != len(mv):
            die(f"{self.path}: short write at byte {off}")

    def write(self, off, data):
        while data:
            n = min(len(data), IO_MAX)
            self.buf[:n] = data[:n]
            self.write_view(off, memoryview(self.buf)[:n])
            off, data = off + n, data[n:]

    def close(self):
        os.fsync(self.fd)
        os.close(self.fd)
        if self.dfd is not None:
            os.close(self.dfd)


class Writer:
    """Collects runs of consecutive chunks in an aligned buffer that holds
    the tag template, and writes each run with one I/O: a named chunk only
    needs its sector-head words patched."""

    def __init__(self, dev, cb, tag):
        self.dev, self.cb, self.tag = dev, cb, tag
        self.n = max(1, IO_MAX // cb)
        self.tmpl = WORD.pack(tag) * (cb // 8)
        self.m = mmap.mmap(-1, self.n * cb)
        self.m[:] = self.tmpl * self.n
        self.dirty = bytearray(self.n)  # slot holds something else than the template
        self.start, self.count, self.written = None, 0, 0

    def _slot(self, chunk):
        if self.start is not None and (chunk != self.start + self.count or self.count == self.n):
            self.flush()
        if self.start is None:
            self.start = chunk
        self.count += 1
        return self.count - 1

    def put(self, chunk, data):
        k = self._slot(chunk)
        self.m[k * self.cb:(k + 1) * self.cb] = data
        self.dirty[k] = 1

    def put_named(self, chunk, c):
        k = self._slot(chunk)
        off = k * self.cb
        if self.dirty[k]:
            self.m[off:off + self.cb] = self.tmpl
            self.dirty[k] = 0
        name_chunk(self.m, off, self.tag, c, self.cb)

    def flush(self):
        if self.count:
            self.dev.write_view(self.start * self.cb, memoryview(self.m)[:self.count * self.cb])
            self.written += self.count * self.cb
        self.start, self.count = None, 0


def coprime_stride(m):
    p = max(1, int(m * 0.6180339887)) | 1
    while gcd(p, m) != 1:
        p += 2
    return p


class Layout:
    def __init__(self, chunk, count, origin_chunks=None, stride=None, first=0):
        if chunk < 1 or chunk & (chunk - 1):
            die(f"chunk size {chunk} is not a power of two")
        self.chunk = chunk
        self.cb = chunk * SECTOR
        self.epa = cf.epa(chunk)
        self.count = count
        m = origin_chunks
        if not m:
            m = 1
            while m < 2 * max(count, 1):
                m *= 2
        if count > m:
            die(f"{count} exceptions do not fit in {m} origin chunks")
        self.m = m
        self.stride = stride if stride else coprime_stride(m)
        if gcd(self.stride, m) != 1:
            die(f"stride {self.stride} is not coprime with {m}: old chunks would repeat")
        self.first = first
        self.inverse = None

    def old(self, i):
        return (self.first + i * self.stride) % self.m

    def index_of(self, c):
        """The exception of origin chunk c, or None."""
        if self.inverse is None:
            self.inverse = pow(self.stride, -1, self.m)
        i = (c - self.first) * self.inverse % self.m
        return i if i < self.count else None

    def below(self, w):
        """The exceptions of origin chunks below w, in allocation order."""
        found = (self.index_of(c) for c in range(min(w, self.m)))
        return sorted(i for i in found if i is not None)

    def news(self, lo, hi):
        """array of new(i) for i in [lo, hi) (within one area)."""
        first = self.new(lo)
        return array.array("Q", range(first, first + hi - lo))

    def olds(self, lo, hi):
        """array of old(i) for i in [lo, hi): one C-speed range per
        arithmetic progression between two wraps past M."""
        out = array.array("Q")
        i = lo
        while i < hi:
            start = self.old(i)
            k = min(hi - i, (self.m - 1 - start) // self.stride + 1)
            out.extend(range(start, start + k * self.stride, self.stride))
            i += k
        return out

    def area_entries(self, ar):
        """Area ar's entries as an array of little-endian (old, new)
        words (the area's first entries; the rest of the area is zero)."""
        lo, hi = ar * self.epa, min(self.count, (ar + 1) * self.epa)
        e = array.array("Q", bytes(16 * (hi - lo)))
        e[0::2] = self.olds(lo, hi)
        e[1::2] = self.news(lo, hi)
        if sys.byteorder != "little":
            e.byteswap()
        return e

    def area_loc(self, a):
        return cf.area_chunk(a, self.chunk)

    def new(self, i):
        return cf.new_chunk(i, self.chunk)

    def figures(self):
        """dm's next_free and current_area after loading the image, the way
        dm-snap-persistent computes them."""
        next_free = self.new(self.count - 1) + 1 if self.count else 2
        next_free = cf.skip_metadata(next_free, self.chunk)
        return next_free, self.count // self.epa

    def chunks_needed(self):
        next_free, current_area = self.figures()
        return max(next_free, self.area_loc(current_area) + 1)


header = cf.header


def parse(dev):
    """Reads an image as dm's persistent_read_metadata does: a dict with the
    header fields, the exceptions in on-disk order (arrays olds and news)
    and dm's next_free / current_area (with allocated / metadata in
    sectors)."""
    magic, valid, version, chunk = cf.parse_header(dev.view(0, SECTOR))
    olds_a, news_a = array.array("Q"), array.array("Q")
    r = dict(magic=magic, valid=valid, version=version, chunk=chunk, olds=olds_a, news=news_a)
    if magic == 0:
        r["new"] = True
        return r
    if magic != SNAP_MAGIC:
        die(f"bad magic {magic:#x}")
    if version != DISK_VERSION:
        die(f"unknown version {version}")
    if chunk < 1 or chunk & (chunk - 1):
        die(f"bad chunk size {chunk} in the header")
    cb = chunk * SECTOR
    epa = cf.epa(chunk)
    span = (epa + 1) * cb
    # Areas (with their data) per read from a device; a file (sparse, in
    # the page cache) is read an area at a time.
    per_read = max(1, IO_MAX // span) if dev.is_blk else 1
    next_free, area = 2, 0
    win_first, win = None, None
    while valid:
        loc = cf.area_chunk(area, chunk)
        if (loc + 1) * cb > dev.size:
            die(f"metadata area {area} (chunk {loc}) is past the end of the device")
        if win_first is None or area >= win_first + per_read:
            win_first = area
            length = min(per_read * span if per_read > 1 else cb, dev.size - loc * cb)
            win = dev.view(loc * cb, length - length % cb)
        base = (area - win_first) * span
        e = array.array("Q")
        e.frombytes(win[base:base + cb])
        if sys.byteorder != "little":
            e.byteswap()
        news = e[1::2]
        try:
            used = news.index(0)
        except ValueError:
            used = epa
        if used:
            olds_a.extend(e[0:2 * used:2])
            news_a.extend(news[:used])
            next_free = max(next_free, max(news[:used]) + 1)
        if used < epa:
            break
        area += 1
    next_free = cf.skip_metadata(next_free, chunk)
    r.update(new=False, epa=epa)
    if valid:
        r.update(next_free=next_free, current_area=area,
                 allocated=next_free * chunk, metadata=(area + 2) * chunk)
    return r


def cmd_make(a):
    L = Layout(a.chunk, a.count, a.origin_chunks, a.stride, a.first)
    cb, epa, n = L.cb, L.epa, L.count
    t0 = time.monotonic()
    dev = Dev(a.cow, write=True)
    need = L.chunks_needed() * cb
    if dev.is_blk and need > dev.size:
        die(f"the image needs {need // SECTOR} sectors, {a.cow} has {dev.size // SECTOR}")
    stale = range(n + 1, n + 1 + a.stale)
    if a.stale:
        if n % epa + a.stale >= epa:
            die(f"{a.stale} stale entries after entry {n % epa} do not fit in an area of {epa}")
        Layout(a.chunk, n + 1 + a.stale, L.m, L.stride, L.first)  # old chunks stay distinct
        if L.chunks_needed() + a.stale + 1 > need // cb:
            need = (L.chunks_needed() + a.stale + 1) * cb
            if dev.is_blk and need > dev.size:
                die(f"the image with stale entries needs {need // SECTOR} sectors")
    w = Writer(dev, cb, COW_TAG)
    w.put(0, header(L.chunk, valid=0 if a.invalid else 1))
    areas = (n + epa - 1) // epa if not a.stale else n // epa + 1
    for ar in range(areas):
        lo, hi = ar * epa, min(n, (ar + 1) * epa)
        meta = bytearray(L.area_entries(ar).tobytes())
        meta += bytes(cb - len(meta))
        mine = [i for i in stale if i // epa == ar]
        for i in mine:
            ENTRY.pack_into(meta, (i - lo) * ENTRY.size, L.old(i), L.new(i))
        w.put(L.area_loc(ar), bytes(meta))
        if a.data == "all" and not a.data_below:
            for i in list(range(lo, hi)) + mine:
                w.put_named(L.new(i), L.old(i))
    written = []
    if a.data == "all" and a.data_below:
        written = L.below(a.data_below)
        for i in written:
            w.put_named(L.new(i), L.old(i))
    if n % epa == 0 and not a.stale:
        # The last area is full (or there is none): the next one must be
        # zero, or stale entries behind it would be read as exceptions.
        w.put(L.area_loc(n // epa), bytes(cb))
    w.flush()
    dev.close()
    took = time.monotonic() - t0
    next_free, cur = L.figures()
    print(f"mkcow: chunk={L.chunk} epa={epa} exceptions={n} areas={cur + 1} "
          f"origin_chunks={L.m} stride={L.stride} first={L.first} next_free={next_free} "
          f"allocated={next_free * L.chunk} metadata={(cur + 2) * L.chunk} "
          + (f"stale={a.stale} " if a.stale else "")
          + f"wrote_kib={w.written // 1024} took_ms={int(took * 1000)}"
          + (f" data_below={len(written)}" if a.data_below else ""))
    # Self-check: read the image back as dm would, and compare.
    t0 = time.monotonic()
    dev = Dev(a.cow)
    r = parse(dev)
    if r["valid"] != (0 if a.invalid else 1) or r["chunk"] != L.chunk:
        die(f"self-check: header reads valid={r['valid']} chunk={r['chunk']}")
    if not a.invalid:
        if (r["next_free"], r["current_area"]) != (next_free, cur):
            die(f"self-check: next_free {r['next_free']}, current area {r['current_area']} "
                f"read back, expected {next_free}, {cur}")
        olds, news = r["olds"], r["news"]
        if len(olds) != n:
            die(f"self-check: read back {len(olds)} exceptions, wrote {n}")
        # Compared a metadata area at a time, as arrays. (The old chunks
        # are distinct: the stride is coprime with M.)
        for ar in range(areas):
            lo, hi = ar * epa, min(n, (ar + 1) * epa)
            if olds[lo:hi] != L.olds(lo, hi) or news[lo:hi] != L.news(lo, hi):
                i = next(i for i in range(lo, hi) if (olds[i], news[i]) != (L.old(i), L.new(i)))
                die(f"self-check: entry {i} reads ({olds[i]}, {news[i]}), "
                    f"wrote ({L.old(i)}, {L.new(i)})")
        if a.data == "all" and n:
            rnd = random.Random(1)
            if a.data_below:
                idx = set(rnd.sample(written, min(len(written), 200)))
            else:
                idx = {0, n - 1} | {rnd.randrange(n) for _ in range(min(n, 200))}
            for i in sorted(idx):
                if bytes(dev.view(L.new(i) * cb, cb)) != chunk_of(COW_TAG, L.old(i), cb):
                    die(f"self-check: data chunk {L.new(i)} of exception {i} is wrong")
    print(f"mkcow: self-check ok: {len(r['olds'])} exceptions read back, "
          f"allocated={r.get('allocated')} metadata={r.get('metadata')} "
          f"({int((time.monotonic() - t0) * 1000)} ms)")


def cmd_olds(a):
    L = Layout(a.chunk, max(a.count, a.to), a.origin_chunks, a.stride, a.first)
    print("\n".join(str(L.old(i)) for i in range(a.start, a.to)))


def cmd_expect(a):
    cb = a.chunk * SECTOR
    tag = COW_TAG if a.tag == "cow" else ORIG_TAG
    dev = Dev(a.dev)
    with open(a.chunks) as f:
        chunks = [int(w) for w in f.read().split()]
    for c in chunks:
        got = bytes(dev.view(c * cb, cb))
        if got != chunk_of(tag, c, cb):
            w = WORD.unpack_from(got)[0]
            die(f"chunk {c} of {a.dev} reads word {w:#x}, expected the {a.tag} data {tag | c:#x}")
    print(f"mkcow: expect ok: {len(chunks)} chunks of {a.dev} hold their {a.tag} data")


def cmd_origin(a):
    cb = a.chunk * SECTOR
    dev = Dev(a.dev, write=True)
    if a.chunks * cb > dev.size and dev.is_blk:
        die(f"{a.dev} is smaller than {a.chunks} chunks")
    # The sector-head words of consecutive chunks are arithmetic series:
    # one strided store per sector-in-chunk fills a whole buffer.
    w = Writer(dev, cb, ORIG_TAG)
    q = memoryview(w.m).cast("Q")
    wpc, wps = cb // 8, SECTOR // 8
    for c0 in range(0, a.chunks, w.n):
        k = min(w.n, a.chunks - c0)
        for j in range(cb // SECTOR):
            first = ORIG_TAG | j << 40 | c0
            heads = array.array("Q", range(first, first + k))
            if sys.byteorder != "little":
                heads.byteswap()
            q[j * wps:k * wpc:wpc] = heads
        dev.write_view(c0 * cb, memoryview(w.m)[:k * cb])
    q.release()
    dev.close()
    print(f"mkcow: stamped {a.chunks} origin chunks of {a.chunk} sectors")


def cmd_check(a):
    dev = Dev(a.cow)
    r = parse(dev)
    if r["new"]:
        print("mkcow: new (zero magic)")
        return
    olds, news = r["olds"], r["news"]
    ex = list(zip(olds, news)) if a.image else []
    cb, epa = r["chunk"] * SECTOR, r["epa"]
    bad = []
    if len(set(olds)) != len(olds):
        bad.append("an old chunk has two exceptions")
    news_set = set(news)
    if len(news_set) != len(news):
        bad.append("a data chunk is used twice")
    if news:
        meta = set(range(1, max(news) + 1, epa + 1))
        if min(news) < 2 or (max(news) + 1) * cb > dev.size or not news_set.isdisjoint(meta):
            nw = min(news_set & meta) if not news_set.isdisjoint(meta) else (
                min(news) if min(news) < 2 else max(news))
            bad.append(f"data chunk {nw} is a header/metadata chunk or past the end")
    if a.image and ex and not bad:
        cow = dev.read(0, (max(news) + 1) * cb)
        with open(a.image, "rb") as f:
            img = f.read()
        for old, nw in ex:
            if cow[nw * cb:(nw + 1) * cb] != img[old * cb:(old + 1) * cb]:
                bad.append(f"data chunk {nw} differs from chunk {old} of {a.image}")
                break
    if a.olds and not bad:
        with open(a.olds) as f:
            want = set(int(w) for w in f.read().split())
        have = set(olds)
        if want != have:
            extra, missing = sorted(have - want), sorted(want - have)
            bad.append(f"exceptions for chunks not expected: {extra[:10]} ({len(extra)}), "
                       f"missing for chunks: {missing[:10]} ({len(missing)})")
    fig = ""
    if r["valid"]:
        fig = f" areas={r['current_area'] + 1} allocated={r['allocated']} metadata={r['metadata']}"
    print(f"mkcow: chunk={r['chunk']} valid={r['valid']} version={r['version']} "
          f"exceptions={len(olds)}{fig}" + (" image=ok" if a.image and not bad else "")
          + (" olds=ok" if a.olds and not bad else ""))
    if bad:
        die("; ".join(bad))


def cmd_sample(a):
    L = Layout(a.chunk, a.count, a.origin_chunks, a.stride, a.first)
    cb, n = L.cb, L.count
    dev = Dev(a.snap)
    rnd = random.Random(a.seed)
    k = a.samples
    if a.below:
        # Random exceptions and plain chunks below W only.
        below = L.below(a.below)
        idx = set(rnd.sample(below, min(k, len(below))))
        span = min(a.below, L.m)
    else:
        idx = {0, n - 1}
        for b in (1, 2, 3, n // L.epa):
            for d in (-1, 0):
                if 0 <= b * L.epa + d < n:
                    idx.add(b * L.epa + d)
        while len(idx) < min(n, k):
            idx.add(rnd.randrange(n))
        span = L.m
    t0 = time.monotonic()
    tag = ORIG_TAG if a.origin_only else COW_TAG
    for i in sorted(idx):
        c = L.old(i)
        got = bytes(dev.view(c * cb, cb))
        if got != chunk_of(tag, c, cb):
            w = WORD.unpack_from(got)[0]
            die(f"chunk {c} (exception {i}, data chunk {L.new(i)}) of {a.snap} reads word {w:#x}, "
                f"expected {tag | c:#x} (and the rest of the chunk to match)")
    plain = set()
    tries = 0
    while len(plain) < k and tries < 100 * k:
        tries += 1
        c = rnd.randrange(span)
        if L.index_of(c) is None:
            plain.add(c)
    for c in sorted(plain):
        got = bytes(dev.view(c * cb, cb))
        if got != chunk_of(ORIG_TAG, c, cb):
            w = WORD.unpack_from(got)[0]
            die(f"chunk {c} (no exception) of {a.snap} reads word {w:#x}, expected origin "
                f"{ORIG_TAG | c:#x} (and the rest of the chunk to match)")
    what = "the origin's data" if a.origin_only else "their COW data"
    print(f"mkcow: sample ok: {len(idx)} chunks with exceptions hold {what}, "
          f"{len(plain)} without hold the origin's ({int((time.monotonic() - t0) * 1000)} ms)")


def main():
    p = argparse.ArgumentParser(description="dm-snapshot persistent COW images for rdm's tests",
                                epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def layout_args(s):
        s.add_argument("--chunk", type=int, required=True, help="chunk size in sectors")
        s.add_argument("--count", type=int, required=True, help="exceptions")
        s.add_argument("--origin-chunks", type=int, default=0)
        s.add_argument("--stride", type=int, default=0)
        s.add_argument("--first", type=int, default=0)

    s = sub.add_parser("make")
    s.add_argument("cow")
    layout_args(s)
    s.add_argument("--data", choices=("all", "none"), default="all")
    s.add_argument("--data-below", type=int, default=0,
                   help="COW data only for the exceptions of origin chunks below this")
    s.add_argument("--invalid", action="store_true", help="write valid=0 in the header")
    s.add_argument("--stale", type=int, default=0,
                   help="stale entries after the end of the list, in the last area")
    s.set_defaults(fn=cmd_make)
    s = sub.add_parser("olds")
    layout_args(s)
    s.add_argument("--from", dest="start", type=int, required=True)
    s.add_argument("--to", type=int, required=True)
    s.set_defaults(fn=cmd_olds)
    s = sub.add_parser("expect")
    s.add_argument("dev")
    s.add_argument("--chunk", type=int, required=True)
    s.add_argument("--tag", choices=("cow", "origin"), required=True)
    s.add_argument("chunks", help="file of chunk numbers")
    s.set_defaults(fn=cmd_expect)
    s = sub.add_parser("origin")
    s.add_argument("dev")
    s.add_argument("--chunk", type=int, required=True)
    s.add_argument("--chunks", type=int, required=True)
    s.set_defaults(fn=cmd_origin)
    s = sub.add_parser("check")
    s.add_argument("cow")
    s.add_argument("--image")
    s.add_argument("--olds", help="file of the origin chunks that must have exceptions")
    s.set_defaults(fn=cmd_check)
    s = sub.add_parser("sample")
    s.add_argument("snap")
    layout_args(s)
    s.add_argument("--samples", type=int, default=64)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--origin-only", action="store_true",
                   help="SNAP is the origin: every sampled chunk holds the origin's data")
    s.add_argument("--below", type=int, default=0,
                   help="sample only chunks below this (see make --data-below)")
    s.set_defaults(fn=cmd_sample)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
