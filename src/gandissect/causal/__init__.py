"""Causality: intervene on units (ablate, insert) and measure what changes in the generated image.

`cut` splits a generator at a layer; `interventions` picks insertion values from a dissection run and builds
edits; `ace` measures average causal effects of units on concepts, batched over units and samples.
"""
