"""Optimised unit set for one concept of scenes64 (target: under 2 minutes on 2 CPU cores), against the
top-k units by single-unit IoU, k the size of the optimised set (at most --top).

Insertion values and the IoU initialisation come from a finished dissection (--run, read only). The
optimisation runs with optimize_units' defaults unless flags change them. Both sets are then ablated and
inserted at full strength over the whole feature map on the same held-out samples (seed --eval-seed).

    python benchmarks/bench_optimize.py [--run runs/demo] [--layer layer3] [--concept tree] [--threads 2]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import time
from pathlib import Path

import torch

from gandissect.causal.interventions import insertion_values
from gandissect.causal.optimize import evaluate_alphas, optimize_units, units_alpha
from gandissect.dissection import Dissection
from gandissect.models import registry, resolve_segmenter

DEFAULTS = {name: p.default for name, p in inspect.signature(optimize_units).parameters.items()
            if p.default is not inspect.Parameter.empty}


def rounded(document: dict, digits: int = 4) -> dict:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in document.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(Path(__file__).resolve().parents[1] / "runs" / "demo"))
    parser.add_argument("--model", default="scenes64")
    parser.add_argument("--segmenter", default="scenes64+color")
    parser.add_argument("--layer", default="layer3")
    parser.add_argument("--concept", default="tree")
    parser.add_argument("--top", type=int, default=20, help="compare at most this many units of each ranking")
    parser.add_argument("--threads", type=int, default=2)
    for name in ("samples", "epochs", "batch_size", "eval_samples", "patch"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=DEFAULTS[name])
    for name in ("lr", "weight"):
        parser.add_argument(f"--{name}", type=float, default=DEFAULTS[name])
    parser.add_argument("--eval-seed", type=int, default=DEFAULTS["eval_seed"])
    parser.add_argument("--out", default=None, help="also save the optimised set's JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    began, cpu = time.perf_counter(), time.process_time()
    result = Dissection.load(args.run)
    values = insertion_values(result, args.layer, args.concept)
    spec = registry.get(args.model)
    generator, segmenter = spec.generator(), resolve_segmenter(args.segmenter)
    loaded, cpu_loaded = time.perf_counter(), time.process_time()
    optimised = optimize_units(generator, segmenter, args.layer, args.concept, values, init=result,
                               samples=args.samples, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               weight=args.weight, patch=args.patch, eval_samples=args.eval_samples,
                               eval_seed=args.eval_seed, progress=False)
    finished, cpu_finished = time.perf_counter(), time.process_time()

    width = values.shape[0]
    k = max(1, min(args.top, len(optimised.units)))
    iou = result.layers[args.layer].iou[:, result.concepts.index(args.concept)]
    by_iou = iou.argsort(descending=True, stable=True)[:k].tolist()
    by_alpha = optimised.units[:k]
    sets = {"optimised": by_alpha, "iou": by_iou}
    held = evaluate_alphas(generator, segmenter, args.layer, args.concept, values,
                           [units_alpha(units, width) for units in sets.values()], samples=args.eval_samples,
                           seed=args.eval_seed, batch_size=2 * args.batch_size, soft=False)
    compare = {name: {"units": units, **rounded(h.to_json())}
               for (name, units), h in zip(sets.items(), held, strict=True)}
    ended, cpu_ended = time.perf_counter(), time.process_time()
    if args.out:
        optimised.save(args.out)
    print(json.dumps({
        "model": args.model, "layer": args.layer, "concept": args.concept, "threads": args.threads,
        "settings": {k: v for k, v in optimised.settings.items() if k != "values"},
        "wall_seconds": {"load": round(loaded - began, 2), "optimise_and_evaluate": round(finished - loaded, 2),
                         "compare_sets": round(ended - finished, 2), "total": round(ended - began, 2)},
        "cpu_seconds": {"load": round(cpu_loaded - cpu, 2),
                        "optimise_and_evaluate": round(cpu_finished - cpu_loaded, 2),
                        "compare_sets": round(cpu_ended - cpu_finished, 2), "total": round(cpu_ended - cpu, 2)},
        "load_average_1min": round(os.getloadavg()[0], 2),
        "losses": [round(v, 4) for v in optimised.losses],
        "optimised_alpha_heldout": rounded(optimised.heldout.to_json()),
        "set_size": len(optimised.units), "k": k,
        "top_k_sets_heldout": compare,
        "top20": [{"unit": u, "alpha": round(float(optimised.alpha[u]), 4), "iou": round(float(iou[u]), 4)}
                  for u in optimised.ranking()[:20]],
    }, indent=1))


if __name__ == "__main__":
    main()
