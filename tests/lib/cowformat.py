#!/usr/bin/env python3
"""The one Python oracle of dm-snapshot's persistent COW format (the
format of drivers/md/dm-snap-persistent.c, which rdm shares:
Documentation/on-disk-format.rst). The driver's own implementation is
src/core/persistent.rs; tests/host/test_cowformat.sh checks the two
against each other (images written by one, read by the other), so they
cannot drift. tests/vm/mkcow.py, tests/powercut/pc.py and the VM tests'
cow_header (tests/vm/test_common.sh) use this module. Standard library
only; runs on the host and in the test VM.

Format (sizes in 512-byte sectors, positions in chunks):
  chunk 0      header: le32 magic 0x70416e53 ("SnAp"), le32 valid,
               le32 version 1, le32 chunk size in sectors, then zeros.
               Magic 0: a new COW device (no header yet).
  area k       at chunk 1 + k * (epa + 1), epa = chunk bytes / 16 entries
               of {le64 old_chunk, le64 new_chunk}; the epa data chunks of
               area k follow it. An entry with new_chunk 0 ends the list;
               a full area continues in the next one.
  next_free    past the last data chunk in use (skipping a metadata area);
               dm's status shows allocated = next_free * chunk and
               metadata = (current area + 2) * chunk sectors.

As a command (for shell tests):
  cowformat.py header FILE   prints "magic valid version chunk" (decimal)
                             of the header at the start of FILE ("-":
                             stdin), as the VM tests' cow_header does.
  cowformat.py read FILE     prints "chunk= valid= exceptions= area=
                             in_area= next_free=" then one "old new" line
                             per exception, in list order (exit 1 on a
                             format error); see read_image.
  cowformat.py write FILE --chunk C [--invalid] [--sectors S] < PAIRS
                             writes an image of S sectors (default: just
                             big enough) holding the "old new" pairs read
                             from stdin, in order (see write_image).
"""
import struct
import sys

SECTOR = 512
SNAP_MAGIC = 0x70416E53
DISK_VERSION = 1
HEADER = struct.Struct("<IIII")  # magic, valid, version, chunk size
ENTRY = struct.Struct("<QQ")  # old_chunk, new_chunk
MAX_OLD_CHUNK = (1 << 48) - 1


class FormatError(Exception):
    pass


def header(chunk, valid=1, version=DISK_VERSION, magic=SNAP_MAGIC):
    """Chunk 0 of a COW device: the header, padded to a chunk."""
    return HEADER.pack(magic, valid, version, chunk) + bytes(chunk * SECTOR - HEADER.size)


def parse_header(buf):
    """(magic, valid, version, chunk) of the header at the start of buf."""
    return HEADER.unpack_from(buf)


def epa(chunk):
    """Exceptions per metadata area, for a chunk of `chunk` sectors."""
    return chunk * SECTOR // ENTRY.size


def area_chunk(area, chunk):
    """The chunk that holds metadata area `area`."""
    return 1 + area * (epa(chunk) + 1)


def is_metadata(c, chunk):
    """Chunk c holds the header or a metadata area."""
    return c == 0 or (c - 1) % (epa(chunk) + 1) == 0


def skip_metadata(c, chunk):
    """c, or the chunk after it if c holds a metadata area (dm's
    skip_metadata)."""
    return c + 1 if is_metadata(c, chunk) else c


def new_chunk(i, chunk):
    """The data chunk of exception i, allocated in order on a fresh device
    (the first data chunk after area i // epa's)."""
    a, j = divmod(i, epa(chunk))
    return area_chunk(a, chunk) + 1 + j


def area_entries(buf):
    """The (old, new) entries of one metadata area up to the end of the
    list (new == 0), and whether the area is full."""
    out = []
    for old, new in ENTRY.iter_unpack(bytes(buf)):
        if new == 0:
            return out, False
        out.append((old, new))
    return out, True


def read_image(read_chunk, cow_chunks):
    """Reads a COW device as dm's read_exceptions does. read_chunk(c) gives
    chunk c's bytes; the device has cow_chunks chunks. Returns a dict:
    new=True for magic 0; else chunk, valid, and for a valid one
    exceptions [(old, new)...] in list order, area (the area the list ends
    in), in_area (its entries), next_free. Raises FormatError on a bad
    header, an area past the end, a data chunk that is the header, a
    metadata area or past the end, an old chunk out of range or twice."""
    magic, valid, version, chunk = parse_header(read_chunk(0))
    if magic == 0:
        return dict(new=True)
    if magic != SNAP_MAGIC:
        raise FormatError(f"bad magic {magic:#x}")
    if version != DISK_VERSION:
        raise FormatError(f"unknown version {version}")
    if chunk < 1 or chunk & (chunk - 1):
        raise FormatError(f"bad chunk size {chunk}")
    r = dict(new=False, chunk=chunk, valid=valid, exceptions=[], area=0, in_area=0, next_free=2)
    if not valid:
        return r
    n = epa(chunk)
    seen = set()
    area, next_free = 0, skip_metadata(2, chunk)
    while True:
        loc = area_chunk(area, chunk)
        if loc >= cow_chunks:
            raise FormatError(f"metadata area {area} (chunk {loc}) is past the end")
        entries, full = area_entries(read_chunk(loc))
        for old, new in entries:
            if new >= cow_chunks or new < 2 or is_metadata(new, chunk):
                raise FormatError(f"area {area}: data chunk {new} is the header, metadata or past the end")
            if old > MAX_OLD_CHUNK:
                raise FormatError(f"area {area}: old chunk {old} out of range")
            if old in seen:
                raise FormatError(f"old chunk {old} has two exceptions")
            seen.add(old)
            r["exceptions"].append((old, new))
            if new >= next_free:
                next_free = skip_metadata(new + 1, chunk)
        r["in_area"] = len(entries)
        if not full or area_chunk(area + 1, chunk) >= cow_chunks:
            break
        area += 1
    r.update(area=area, next_free=next_free)
    return r


def image_bytes(chunk, pairs, valid=1, cow_chunks=None):
    """A whole COW image (bytes) holding the exceptions `pairs` [(old,
    new)...] in list order: the header, each area's entries (new == 0
    after the last), zeroed data chunks. cow_chunks defaults to just big
    enough for the list's areas, its data chunks and one more area."""
    cb, n = chunk * SECTOR, epa(chunk)
    # The areas the list uses, and (when sized here) the zeroed one after.
    areas = (len(pairs) + n - 1) // n if cow_chunks else len(pairs) // n + 1
    need = max([area_chunk(max(areas - 1, 0), chunk) + 1] + [new + 1 for _, new in pairs])
    cow_chunks = cow_chunks or max(need, area_chunk(areas, chunk))
    if cow_chunks < need:
        raise FormatError(f"{len(pairs)} exceptions need {need} chunks, the device has {cow_chunks}")
    img = bytearray(cow_chunks * cb)
    img[0:cb] = header(chunk, valid)
    for i, (old, new) in enumerate(pairs):
        a, j = divmod(i, n)
        ENTRY.pack_into(img, area_chunk(a, chunk) * cb + j * ENTRY.size, old, new)
    return bytes(img)


def _open_read(path):
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def main(argv):
    if len(argv) >= 2 and argv[0] == "header":
        buf = _open_read(argv[1])
        if len(buf) < HEADER.size:
            print("cowformat: short header", file=sys.stderr)
            return 1
        print(*parse_header(buf))
        return 0
    if len(argv) == 2 and argv[0] == "read":
        data = _open_read(argv[1])
        magic, _, _, chunk = parse_header(data)
        cb = max(chunk, 1) * SECTOR
        try:
            r = read_image(lambda c: data[c * cb:(c + 1) * cb], len(data) // cb)
        except FormatError as e:
            print(f"cowformat: {e}", file=sys.stderr)
            return 1
        if r["new"]:
            print("new")
            return 0
        if not r["valid"]:
            print(f"chunk={r['chunk']} valid=0")
            return 0
        print(f"chunk={r['chunk']} valid={r['valid']} exceptions={len(r['exceptions'])} "
              f"area={r['area']} in_area={r['in_area']} next_free={r['next_free']}")
        for old, new in r["exceptions"]:
            print(old, new)
        return 0
    if len(argv) >= 4 and argv[0] == "write" and argv[2] == "--chunk":
        chunk, valid, sectors = int(argv[3]), 1, None
        rest = argv[4:]
        while rest:
            if rest[0] == "--invalid":
                valid, rest = 0, rest[1:]
            elif rest[0] == "--sectors":
                sectors, rest = int(rest[1]), rest[2:]
            else:
                break
        pairs = [tuple(int(w) for w in line.split()) for line in sys.stdin if line.strip()]
        img = image_bytes(chunk, pairs, valid, sectors // chunk if sectors else None)
        with open(argv[1], "wb") as f:
            f.write(img)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
