"""gandissect: find which units of a generator draw which concepts, prove it, and edit with them.

The notebook API is at the top: `gandissect.dissect`, `gandissect.load` (both return a `Dissection` that
draws itself), `gandissect.causal.effects`, the instruments `Trace` and `UnitEdit`, and `sample_z`. They load on first
use, so `import gandissect` stays light (the command line imports no torch before it can catch Ctrl-C).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

EXPORTS = {"dissect": "gandissect.api", "load": "gandissect.api", "Dissection": "gandissect.api",
           "Trace": "gandissect.core.hooks", "UnitEdit": "gandissect.core.edits",
           "sample_z": "gandissect.core.sampling"}
__all__ = [*EXPORTS, "causal"]


def __getattr__(name: str) -> Any:
    if name in EXPORTS:
        return getattr(importlib.import_module(EXPORTS[name]), name)
    if name == "causal":
        return importlib.import_module("gandissect.causal")
    raise AttributeError(f"module 'gandissect' has no attribute {name!r}")
