"""A small UNet that segments scenes into the world's concepts."""

from gandissect.models.unet.modeling import SegmenterConfig, UNetSegmenter

__all__ = ["SegmenterConfig", "UNetSegmenter"]
