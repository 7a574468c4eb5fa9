#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Deterministic I/O for the merge tests (one process instead of one dd per
write: under TCG each process costs about 0.1 s).

  mergeio.py scatter DEV SEED COUNT SPAN MIN MAX [IMAGE] [ALIGN]
      COUNT O_DIRECT writes of random data to DEV, each of MIN..MAX
      sectors at a random sector below SPAN (a multiple of ALIGN sectors,
      default 1; sizes are rounded up to ALIGN); with IMAGE, the same
      writes to that regular file (the expected image). Prints the
      number of sectors written.
  mergeio.py chunks DEV SEED COUNT CHUNK NCHUNKS [IMAGE]
      COUNT whole-chunk writes (CHUNK sectors) to distinct random chunks
      below NCHUNKS.
"""

import mmap
import os
import random
import sys

SECT = 512


def write_all(dev, image, writes):
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    img = open(image, "r+b") if image else None
    buf = mmap.mmap(-1, 1 << 20)
    total = 0
    for start, data in writes:
        buf[: len(data)] = data
        got = os.pwritev(fd, [memoryview(buf)[: len(data)]], start * SECT)
        if got != len(data):
            raise SystemExit("short write to %s at sector %d" % (dev, start))
        if img:
            img.seek(start * SECT)
            img.write(data)
        total += len(data) // SECT
    os.fsync(fd)
    os.close(fd)
    if img:
        img.close()
    print(total)


def scatter(dev, seed, count, span, lo, hi, image=None, align=1):
    r = random.Random(seed)
    writes = []
    for _ in range(count):
        n = r.randint(lo, hi)
        n = (n + align - 1) // align * align
        start = r.randrange(0, max(1, span - n + 1)) // align * align
        writes.append((start, r.randbytes(n * SECT)))
    write_all(dev, image, writes)


def chunks(dev, seed, count, chunk, nchunks, image=None):
    r = random.Random(seed)
    picked = r.sample(range(nchunks), min(count, nchunks))
    write_all(dev, image, [(c * chunk, r.randbytes(chunk * SECT)) for c in picked])


def main(a):
    if len(a) >= 7 and a[1] == "scatter":
        scatter(a[2], int(a[3]), int(a[4]), int(a[5]), int(a[6]), int(a[7]),
                a[8] if len(a) > 8 and a[8] else None, int(a[9]) if len(a) > 9 else 1)
    elif len(a) >= 7 and a[1] == "chunks":
        chunks(a[2], int(a[3]), int(a[4]), int(a[5]), int(a[6]), a[7] if len(a) > 7 else None)
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
