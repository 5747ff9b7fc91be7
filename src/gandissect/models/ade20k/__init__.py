"""ADE20K scene parsers (Hugging Face SegFormer / UperNet) as segmenters: `--segmenter ade20k:FOLDER`.

Needs the optional extra (pip install 'gandissect[ade20k]') only to load a model; importing this package does
not import transformers. See `segmenter` for the resolution (GAN Dissection's) and the label channels, and
`classes` for the 150 class names and which are parts.
"""

from gandissect.models.ade20k.classes import ADE20K_CATEGORIES, ADE20K_CONCEPTS, ADE20K_LABELS, PARTS, concepts_for
from gandissect.models.ade20k.segmenter import PAPER_DOWNSAMPLE, PAPER_INPUT_SIZE, ADE20KSegmenter

__all__ = [
    "ADE20K_CATEGORIES", "ADE20K_CONCEPTS", "ADE20K_LABELS", "PAPER_DOWNSAMPLE", "PAPER_INPUT_SIZE", "PARTS",
    "ADE20KSegmenter", "concepts_for",
]
