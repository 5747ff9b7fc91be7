"""gandissect: find which units of a generator draw which concepts, prove it, and edit with them."""

__version__ = "0.1.0"
