"""Specs of shipped scene GANs: a `SceneGenerator`, its `SceneDiscriminator` and a `UNetSegmenter`.

`spec_from_folder` reads what `gandissect.scenes.ship` writes to model.json. Policies of this family:
dissect the middle layers (layer2..layerN), segment with the model's own segmenter plus colours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gandissect.core.segmenters import ModuleSegmenter
from gandissect.models.registry import ModelSpec, WeightFile, middle_layers
from gandissect.models.scenegan.modeling import GeneratorConfig, SceneDiscriminator, SceneGenerator
from gandissect.models.unet import SegmenterConfig, UNetSegmenter


def _weight_files(folder: Path, meta: dict[str, Any]) -> dict[str, WeightFile]:
    recorded = meta.get("weights", {})
    files = {}
    for part in ("generator", "discriminator", "segmenter"):
        entry = recorded.get(part, {})
        files[part] = WeightFile(folder / entry.get("file", f"{part}.safetensors"), entry.get("sha256"),
                                 entry.get("bytes"), "network" if part == "segmenter" else "")
    return files


def spec_from_folder(folder: Path, meta: dict[str, Any]) -> ModelSpec:
    """The spec of the scene GAN shipped in `folder`, described by its model.json `meta`."""
    gan = GeneratorConfig.from_dict(meta["generator_config"])
    segmentation = SegmenterConfig.from_dict(meta["segmenter_config"])
    name = folder.name
    layer_names = [f"layer{i + 1}" for i in range(len(gan.channels))]
    return ModelSpec(
        name=name,
        description=meta.get("description", f"scene GAN ({gan.image_size}x{gan.image_size}) with its segmenter"),
        build_generator=lambda: SceneGenerator(gan),
        build_discriminator=lambda: SceneDiscriminator(gan),
        build_segmenter=lambda spec: ModuleSegmenter(UNetSegmenter(segmentation), spec.concepts, spec.categories),
        weights=_weight_files(folder, meta),
        z_shape=(gan.z_dim,),
        default_layers=tuple(meta.get("default_layers", middle_layers(layer_names))),
        default_segmenter=meta.get("default_segmenter", f"{name}+color"),
        output_range=(-1.0, 1.0),
        image_size=gan.image_size,
        concepts=tuple(meta["concepts"]),
        categories=tuple(meta["categories"]),
        hosts=dict(meta.get("hosts", {})),
        metadata=meta,
    )
