"""Per-batch cost and memory over a long dissection: does a batch cost more late in the run than early?

    python benchmarks/dissect_per_batch.py --samples 10000 --layers layer3 --passes one

Runs one `Dissector` on scenes64 (its segmenter merged with the colour segmenter) with an `on_batch` callback
that records wall time, user and system CPU time, minor page faults, resident and peak resident memory after
every batch, and prints their per-batch averages over each sixth of each pass. Like `gandissect dissect`, it
keeps freed memory in glibc's heap (`--return-freed-memory` leaves the allocator's defaults). Run it under
`/usr/bin/time -v` for the whole process.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

from gandissect.core.segmenters import ColorSegmenter, MergedSegmenter
from gandissect.dissection import DissectConfig, Dissector
from gandissect.engine.speed import keep_freed_memory
from gandissect.models import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--layers", default="layer3")
    parser.add_argument("--passes", default="one", choices=("auto", "one", "two"))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--return-freed-memory", action="store_true")
    args = parser.parse_args()
    if not args.return_freed_memory:
        keep_freed_memory()
    page = resource.getpagesize()
    bundle = load("scenes64")
    rows = []

    def on_batch(description: str, done: int) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with open("/proc/self/statm") as statm:
            resident = int(statm.read().split()[1]) * page
        rows.append((description, done, time.perf_counter(), usage.ru_utime, usage.ru_stime, usage.ru_minflt,
                     usage.ru_maxrss, resident))

    config = DissectConfig(layers=args.layers.split(","), samples=args.samples, passes=args.passes)
    with tempfile.TemporaryDirectory() as out:
        dissector = Dissector(bundle.generator, MergedSegmenter(bundle.segmenter, ColorSegmenter()), config, out,
                              progress=False, on_batch=on_batch, workers=args.workers)
        dissector.finish(dissector.run())
    for description in dict.fromkeys(row[0] for row in rows):
        mine = [row for row in rows if row[0] == description]
        step = max(1, len(mine) // 6)
        for a, b in zip(mine[::step], mine[step::step], strict=False):
            n = b[1] - a[1]
            print(f"{description:10s} batches {a[1]:4d}-{b[1]:4d}: wall {(b[2] - a[2]) / n:.3f} user "
                  f"{(b[3] - a[3]) / n:.3f} sys {(b[4] - a[4]) / n:.3f} minflt/batch {(b[5] - a[5]) / n:.0f} "
                  f"rss {b[7] / 2**20:.0f} MiB maxrss {b[6] / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
