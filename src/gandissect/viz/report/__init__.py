"""The dissection report: one self-contained HTML page. See `page` (the page), `images` (the highlighted top
images), `charts` (the SVG bar charts), `data` (what the pages read from dissect.json), and `causal` (the
run's causal results, with `evidence` for the intervals of a schema-2 ace.json and `figures` for captions)."""

from gandissect.viz.report.images import DIM, OUTLINE, render_unit_images
from gandissect.viz.report.page import write_report

__all__ = ["DIM", "OUTLINE", "render_unit_images", "write_report"]
