"""How the artifact study's Frechet distance depends on its counts, and whether its intervals cover the truth.

scenes64's features (scenes64+color concept areas, 23 dimensions) of 2,000 generated samples (seed 4, as
`artifacts` uses) and 2,000 real scenes of the procedural world. Prints the distance at several counts, then
for disjoint subsets of 100-300 rows whether the 95% basic and percentile bootstrap intervals cover the
2,000-row distance. Usage: python benchmarks/frechet_interval_scenes64.py (4 minutes on a loaded 2-core machine).
"""

from __future__ import annotations

import torch

from gandissect.causal.artifactstudy import basic_interval, bootstrap_distances
from gandissect.causal.realism import concept_features
from gandissect.cli.artifacts import real_images
from gandissect.core.frechet import feature_frechet
from gandissect.core.sampling import sample_z
from gandissect.models import resolve_generator, resolve_segmenter


def main() -> None:
    generator, segmenter = resolve_generator("scenes64"), resolve_segmenter("scenes64+color")
    features = concept_features(segmenter)
    with torch.no_grad():
        gen = torch.cat([features(generator(sample_z(generator, 4, range(i, i + 100)))) for i in range(0, 2000, 100)])
    real = torch.cat([features(batch) for batch in real_images("world", 2000, (64, 64)).split(100)])
    gen, real = gen.double(), real.double()
    truth = feature_frechet(gen, real)
    print(f"{gen.shape[1]} features; distance from 2,000 against 2,000 rows: {truth:.1f}")
    for m in (16, 50, 150, 500):
        print(f"real rows {m}: " + ", ".join(f"{n} samples {feature_frechet(gen[:n], real[:m]):.1f}"
                                             for n in (16, 32, 64, 100, 300, 1000)))
    basic = percentile = tries = 0
    for n, m in ((100, 100), (300, 150), (300, 300)):
        for rep in range(6):
            g, r = gen[rep * n:(rep + 1) * n], real[rep * m:(rep + 1) * m]
            draws = bootstrap_distances({"x": g}, r, 200, rep)["x"]
            low, high = basic_interval(draws, feature_frechet(g, r), 0.95, 0.0)
            basic += low <= truth <= high
            percentile += bool(torch.quantile(draws, 0.025) <= truth <= torch.quantile(draws, 0.975))
            tries += 1
    print(f"95% intervals covering {truth:.1f}: basic {basic} of {tries}, percentile {percentile} of {tries}")


if __name__ == "__main__":
    main()
