"""Causality: intervene on units (ablate, insert) and measure what changes in the generated image.

- `cut`: a generator split at a layer (features, then the image from edited features).
- `interventions`: insertion values from a dissection run, and the edits.
- `ace`: single-unit average causal effects, batched over units and samples.
- `optimize` (with `locations`): a strength per unit fitted by SGD through soft concept scores.
- `curves`, `context`: ablation curves by ranking, and where inserted units draw their concept.
- `labels`: the concept each unit draws, found by interventions, and each labelling rule's agreement.
- `artifacts` (with `realism`): units whose top images look unreal, and what ablating them does.
- `outputs`: causal results written into the run folder.
- `notebook`: all of that for a notebook, `gandissect.causal.effects(...)` (loaded on first use).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("effects", "CausalEffects"):
        from gandissect.causal import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'gandissect.causal' has no attribute {name!r}")
