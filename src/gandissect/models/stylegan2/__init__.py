"""StyleGAN2 generators for the `g_ema` checkpoints of rosinality's stylegan2-pytorch (see `modeling`)."""

from gandissect.models.stylegan2.convert import (
    from_published,
    infer_architecture,
    load_stylegan2,
    published_checkpoint,
    to_published,
)
from gandissect.models.stylegan2.modeling import NOISE_MODES, SPACES, StyleGAN2Generator, stylegan2_channels

__all__ = ["NOISE_MODES", "SPACES", "StyleGAN2Generator", "from_published", "infer_architecture", "load_stylegan2",
           "published_checkpoint", "stylegan2_channels", "to_published"]
