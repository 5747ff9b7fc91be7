"""The dissection report: one self-contained HTML page. See `page` (the page), `images` (the highlighted top
images), `charts` (the SVG bar charts) and `data` (what the pages read from dissect.json)."""

from gandissect.viz.report.images import DIM, OUTLINE, render_unit_images
from gandissect.viz.report.page import write_report

__all__ = ["DIM", "OUTLINE", "render_unit_images", "write_report"]
