#!/usr/bin/env python3
"""bench/disk.py - what the machine's disk and page cache do to a store, with
no Keybrake running: the figures behind the p99 discussion in
docs/benchmarks.md.

1. fdatasync latency: 16 KiB written in place into a 4 MiB file (like a WAL
   that restarted) and fdatasync'ed, 1 ms apart, for DURATION seconds.
2. Page-cache retention: a 200 MiB file is written, flushed and read back
   (fully cached), then how much of it is still cached HOLD seconds later,
   with plenty of free memory (util-linux fincore).

usage: bench/disk.py [DURATION [HOLD]]   (defaults 30 and 20; files under a
mktemp dir in /tmp, removed afterwards)
"""
import os
import subprocess
import sys
import tempfile
import time


def fsync_latency(d, duration):
    fd = os.open(os.path.join(d, "wal"), os.O_RDWR | os.O_CREAT, 0o600)
    size = 4 << 20
    os.pwrite(fd, b"\0" * size, 0)
    os.fsync(fd)
    buf = os.urandom(16384)
    off, lats = 0, []
    end = time.monotonic() + duration
    while time.monotonic() < end:
        t0 = time.perf_counter()
        os.pwrite(fd, buf, off)
        os.fdatasync(fd)
        lats.append(time.perf_counter() - t0)
        off = (off + len(buf)) % size
        time.sleep(0.001)
    os.close(fd)
    lats.sort()
    n = len(lats)
    ms = lambda q: lats[min(n - 1, int(n * q))] * 1e3
    print(f"fdatasync: {n} in {duration:.0f} s: p50 {ms(.5):.2f} ms, p99 {ms(.99):.2f} ms, "
          f"p99.9 {ms(.999):.2f} ms, max {lats[-1] * 1e3:.1f} ms; "
          f"over 10 ms: {sum(x > .01 for x in lats)}, over 100 ms: {sum(x > .1 for x in lats)}")


def cached_mib(path):
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", path],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) / (1 << 20)


def cache_retention(d, hold):
    path = os.path.join(d, "cache")
    with open(path, "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
        f.flush()
        os.fsync(f.fileno())
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass
    before = cached_mib(path)
    time.sleep(hold)
    after = cached_mib(path)
    free = int(next(l for l in open("/proc/meminfo") if l.startswith("MemAvailable")).split()[1])
    print(f"page cache: {before:.0f} MiB of a 200 MiB file cached, {after:.0f} MiB still cached "
          f"{hold:.0f} s later, with {free / (1 << 20):.1f} GiB available")


def main():
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 30
    hold = float(sys.argv[2]) if len(sys.argv) > 2 else 20
    with tempfile.TemporaryDirectory(prefix="keybrake-disk.", dir="/tmp") as d:
        fsync_latency(d, duration)
        cache_retention(d, hold)


if __name__ == "__main__":
    main()
