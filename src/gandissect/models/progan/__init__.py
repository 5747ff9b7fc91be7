"""ProGAN generators in the layout of GAN Dissection's released LSUN checkpoints (see `modeling`)."""

from gandissect.models.progan.modeling import (
    ProGANGenerator,
    convert_state_dict,
    infer_resolution,
    load_progan,
    progan_channels,
)

__all__ = ["ProGANGenerator", "convert_state_dict", "infer_resolution", "load_progan", "progan_channels"]
