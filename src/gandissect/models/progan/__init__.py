"""ProGAN generators in the layout of GAN Dissection's released LSUN checkpoints (see `modeling`), their sizes
read from the file (see `checkpoint`)."""

from gandissect.models.progan.checkpoint import convert_state_dict, infer_resolution, infer_sizes, load_progan
from gandissect.models.progan.modeling import ProGANGenerator, default_channels, progan_channels

__all__ = ["ProGANGenerator", "convert_state_dict", "default_channels", "infer_resolution", "infer_sizes",
           "load_progan", "progan_channels"]
