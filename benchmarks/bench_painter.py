"""Speed of the painter's edits: 100 edits of a 64x64 scenes64 image, 4 clients at once, over real HTTP.

    python benchmarks/bench_painter.py [--run runs/demo] [--edits 100] [--clients 4] [--threads 1]

Starts a uvicorn server in-process on a free port (`viz.painter.server.ServerThread`) and sends edits from
`--clients` threads with httpx, each painting its own image as a user would: every request carries its seed
and all strokes so far (1 to 6 strokes of add / remove / erase, then a new seed). Latency is measured by the
client, from sending the request to holding the PNG. The bare generator's forward pass (batch 1, the same
threads) is timed in the same run for the ratio. Without --run, scenes64 is dissected first (layer3 and
layer4, 32 samples per set) into a temporary folder. Prints JSON; the issue's target is a median under 50 ms
and a 95th percentile under 150 ms on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from gandissect.core.sampling import sample_z
from gandissect.viz.painter.app import create_app
from gandissect.viz.painter.loader import open_painter
from gandissect.viz.painter.server import ServerThread

STROKES_PER_IMAGE = 6


def dissect(folder: Path) -> Path:
    """A small scenes64 dissection with causal rankings of layer4 to paint with, made in other processes
    (their thread pools stay there)."""
    run = folder / "run"
    subprocess.run([sys.executable, "-m", "gandissect.cli", "dissect", "--model", "scenes64", "--layers",
                    "layer3,layer4", "--samples", "32", "--no-report", "--out", str(run)], check=True,
                   capture_output=True)
    subprocess.run([sys.executable, "-m", "gandissect.cli", "causal", str(run), "--layer", "layer4", "--concept",
                    "all", "--samples", "32", "--set-samples", "8", "--no-report"], check=True, capture_output=True)
    return run


Offer = tuple[str, str, str, int]  # concept, action, layer, most units


def offered(painter: object) -> list[Offer]:
    """Every (concept, action, layer) the painter offers, with its largest strength."""
    found = []
    for name, concept in painter.concepts.items():  # type: ignore[attr-defined]
        for layer, units in concept.layers.items():
            for action in ("remove", "add"):
                direction = units.direction(action)
                if direction.available:
                    found.append((name, action, layer, direction.max_strength))
    return found


def strokes_for(rng: random.Random, concepts: list[Offer], count: int) -> list[dict]:
    """`count` random strokes: a polyline of 8 points, actions mostly add and remove."""
    out = []
    for _ in range(count):
        x, y = rng.uniform(4, 60), rng.uniform(4, 60)
        points = [[min(64.0, max(0.0, x + rng.uniform(-12, 12))), min(64.0, max(0.0, y + rng.uniform(-12, 12)))]
                  for _ in range(8)]
        if rng.random() < 0.2:
            out.append({"action": "erase", "points": points, "radius": rng.uniform(2, 8)})
            continue
        concept, action, layer, most = rng.choice(concepts)
        out.append({"action": action, "points": points, "radius": rng.uniform(2, 8), "concept": concept,
                    "layer": layer, "strength": rng.randint(1, most)})
    return out


def client(url: str, index: int, edits: int, concepts: list[Offer], latencies: list[float]) -> None:
    """One user: paints `edits` requests, a new seed every STROKES_PER_IMAGE strokes."""
    rng = random.Random(index)
    with httpx.Client(base_url=url, timeout=30) as http:
        for i in range(edits):
            seed = 1000 * index + i // STROKES_PER_IMAGE
            body = {"seed": seed, "strokes": strokes_for(random.Random(seed), concepts, 1 + i % STROKES_PER_IMAGE)}
            rng.random()
            began = time.perf_counter()
            response = http.post("/api/edit", json=body)
            latencies.append(time.perf_counter() - began)
            assert response.status_code == 200, response.text


def bare_forward_ms(generator: torch.nn.Module, repeats: int = 100) -> float:
    """Median milliseconds of one generator forward of one image (inference mode)."""
    times = []
    with torch.inference_mode():
        for seed in range(repeats):
            z = sample_z(generator, 10_000 + seed, [0])
            began = time.perf_counter()
            generator(z)
            times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="a finished scenes64 dissection (default: make a small one)")
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the paint command's default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(args.run) if args.run else dissect(Path(scratch))
        painter = open_painter(run)
        concepts = offered(painter)
        bare = bare_forward_ms(painter.generator)
        with ServerThread(create_app(painter)) as server:
            client(server.url, 99, 12, concepts, [])  # warm-up: first requests, allocator, caches of one seed
            latencies: list[float] = []
            share = [args.edits // args.clients + (i < args.edits % args.clients) for i in range(args.clients)]
            threads = [threading.Thread(target=client, args=(server.url, i, share[i], concepts, latencies))
                       for i in range(args.clients)]
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - began
    ms = [t * 1000 for t in latencies]
    median, p95 = statistics.median(ms), percentile(ms, 0.95)
    print(json.dumps({
        "edits": len(ms), "clients": args.clients, "threads": args.threads, "cores": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "median_ms": round(median, 2), "p95_ms": round(p95, 2), "max_ms": round(max(ms), 2),
        "edits_per_second": round(len(ms) / wall, 1), "bare_forward_ms": round(bare, 2),
        "median_over_bare_forward": round(median / bare, 1),
        "target_met": median < 50 and p95 < 150,
    }, indent=1))


if __name__ == "__main__":
    main()
