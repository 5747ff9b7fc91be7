"""Rendering speed of the procedural world: seconds for 10,000 scenes at 64x64 (the target is under 60 s).

    python benchmarks/bench_world.py [--count 10000] [--size 64]
"""

from __future__ import annotations

import argparse
import json
import time

from gandissect.scenes.world import render_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    began = time.perf_counter()
    for start in range(0, args.count, 500):
        render_batch(range(start, min(start + 500, args.count)), args.size)
    seconds = time.perf_counter() - began
    print(json.dumps({"scenes": args.count, "size": args.size, "seconds": round(seconds, 2),
                      "scenes_per_second": round(args.count / seconds, 1)}))


if __name__ == "__main__":
    main()
