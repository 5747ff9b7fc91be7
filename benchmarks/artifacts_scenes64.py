"""Artifact units of the shipped scenes64 GAN, found automatically, and what ablating them does to the model.

    python benchmarks/artifacts_scenes64.py --run runs/demo [--layers layer3,layer4] [--counts layer3=20+5,layer4=8+3]

For each layer, every unit's top-activating images (the dissection's TopK, regenerated from its IoU seed) are
scored with six signals (see gandissect.causal.artifacts): the Frechet distance of their segmenter features
(soft concept areas, percent) to real scenes, their distance to the nearest real scene in that space (relative
to the real scene's neighbourhood radius), the shipped discriminator's logit, the discriminator's logit
split over 4x4 patches and read where the unit fires, and the discriminator / Frechet gain when the unit is
ablated on its own top images. The worst N units by each signal are ablated everywhere and the whole model's
Frechet distance to real scenes (same feature space) is measured on held-out samples, against N random units
(several draws). Real scenes are rendered by the procedural world the GAN was trained on (seeds of the FSD's
held-out range, three disjoint sets: for ranking units, for the study, and a real-vs-real reference).

Prints a Markdown table; writes study JSON and strips of the worst units' top images (one row per unit, worst
first) to --out. Reads the run folder only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gandissect.causal.artifacts import SIGNALS, dissection_top, unit_realism
from gandissect.causal.artifactstudy import artifact_study
from gandissect.causal.cut import Cut
from gandissect.causal.realism import concept_features, linear_head_patches
from gandissect.core.images import from_uint8, grid, png_bytes, to_uint8
from gandissect.core.sampling import sample_z
from gandissect.dissection import Dissection
from gandissect.models import registry
from gandissect.scenes import world
from gandissect.scenes.metrics import REAL_SEED_OFFSET
from gandissect.scenes.training import HELD_OUT_SEEDS

LABELS = {"frechet": "FD of top images", "nearest_real": "distance to nearest real", "realism": "D logit",
          "patch_realism": "D patches where unit fires", "ablation_frechet": "FD gain if ablated",
          "ablation_realism": "D gain if ablated"}


def real_features(features, first: int, count: int, size: int, batch_size: int = 100) -> torch.Tensor:
    parts = []
    for start in range(first, first + count, batch_size):
        pictures = world.render_batch(range(start, min(start + batch_size, first + count)), size)[0]
        parts.append(features(from_uint8(pictures)))
    return torch.cat(parts).double()


def strip(generator, layer: str, top: torch.Tensor, seed: int, units: list[int], thresholds: torch.Tensor,
          shown: int, path: Path) -> None:
    """One row per unit: its top images, best first, with the region where the unit exceeds its dissection
    threshold outlined in white."""
    cut = Cut(generator, layer)
    rows = []
    for unit in units:
        z = sample_z(generator, seed, top[unit, :shown])
        with torch.no_grad():
            acts = cut.head(z)
            images = cut.tail(acts, z)
            region = F.interpolate(acts[:, unit:unit + 1], size=images.shape[-2:], mode="bilinear",
                                   align_corners=False) > float(thresholds[unit])
            inner = -F.max_pool2d(-region.float(), 3, stride=1, padding=1) > 0
            edge = (region & ~inner).expand_as(images)
        rows.append(to_uint8(torch.where(edge, torch.ones_like(images), images)))
    picture = grid(np.concatenate(rows), columns=shown)
    path.write_bytes(png_bytes(picture, scale=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="finished scenes64 dissection (read only)")
    parser.add_argument("--layers", default="layer3,layer4")
    parser.add_argument("--counts", default="layer3=20+5,layer4=8+3",
                        help="units ablated per layer, several joined by + (layer3=20+5); N=20 for layers not named")
    parser.add_argument("--samples", type=int, default=300, help="held-out generated samples of the study")
    parser.add_argument("--real", type=int, default=300, help="real scenes per set (three disjoint sets)")
    parser.add_argument("--draws", type=int, default=5, help="random draws of N units")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/artifacts_scenes64")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {k: [int(n) for n in v.split("+")] for k, v in (item.split("=") for item in args.counts.split(","))}

    spec = registry.get("scenes64")
    generator, segmenter, discriminator = spec.generator(), spec.segmenter(), spec.discriminator()
    result = Dissection.load(args.run)
    features = concept_features(segmenter)
    size = int(spec.image_size or 64)
    first = HELD_OUT_SEEDS + REAL_SEED_OFFSET
    real_rank = real_features(features, first, args.real, size)
    real_eval = real_features(features, first + args.real, args.real, size)
    real_ref = real_features(features, first + 2 * args.real, args.real, size)
    print(f"real features: {time.time() - started:.0f} s", flush=True)

    def realism(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return discriminator(images)

    rows, report = [], {}
    for layer in args.layers.split(","):
        top, seed = dissection_top(result, layer)
        scores = unit_realism(generator, layer, top, seed, features=features, real_features=real_rank,
                              realism=realism, patch_realism=linear_head_patches(discriminator), batch_size=64,
                              progress=False)
        print(f"{layer}: unit scores {time.time() - started:.0f} s", flush=True)
        report[layer] = {"scores": scores.to_json(), "studies": []}
        for count in counts.get(layer, [20]):
            study = artifact_study(generator, layer, scores, features, real_eval, count=count, draws=args.draws,
                                   samples=args.samples, reference_features=real_ref, batch_size=50, progress=False)
            print(f"{layer}: study of N={count} {time.time() - started:.0f} s", flush=True)
            report[layer]["studies"].append(study.to_json())
            rows.append(study)
        best = rows[-len(counts.get(layer, [20]))].best_signal or "frechet"
        for signal in dict.fromkeys(["frechet", best]):
            path = out / f"{layer}_worst5_{signal}.png"
            strip(generator, layer, scores.top, seed, scores.worst(signal, 5), result.layers[layer].thresholds,
                  min(8, scores.top.shape[1]), path)
            report[layer][f"strip_{signal}"] = {"path": str(path), "units": scores.worst(signal, 5)}
    (out / "artifacts.json").write_text(json.dumps(report, indent=1))

    signals = [s for s in SIGNALS if s in rows[0].after]
    print("\nWhole-model Frechet distance to real scenes (segmenter soft concept areas, %), "
          f"{args.samples} held-out samples vs {args.real} real scenes; lower is better.\n")
    print("| layer | N | before | " + " | ".join(f"worst N by {LABELS[s]}" for s in signals)
          + f" | random N ({args.draws} draws: mean ± sd (median; min–max)) | real vs real |")
    print("| --- " * (len(signals) + 5) + "|")
    for study in rows:
        cells = [f"{study.after[s]:.2f}" for s in signals]
        print(f"| {study.layer} | {study.count} | {study.before:.2f} | " + " | ".join(cells)
              + f" | {study.random_mean:.2f} ± {study.random_sd:.2f} ({statistics.median(study.random_after):.2f}; "
              f"{min(study.random_after):.2f}–{max(study.random_after):.2f}) | {study.reference:.2f} |")
    print()
    for study in rows:
        best = study.best_signal
        margin = (study.gain(best) - study.random_gain) / study.random_sd if study.random_sd > 0 else float("nan")
        print(f"- {study.layer}, N={study.count}: best signal {best} (FD {study.before:.2f} -> "
              f"{study.after[best]:.2f}, gain {study.gain(best):+.2f}; random N gain {study.random_gain:+.2f} ± "
              f"{study.random_sd:.2f}, i.e. {margin:+.1f} sd better than random); ablated {study.ablated[best]}")
    print(f"\nstrips and JSON in {out}; {time.time() - started:.0f} s in all")


if __name__ == "__main__":
    main()
