"""The dissection report: one self-contained HTML page. See `page`."""

from gandissect.viz.report.page import DIM, OUTLINE, render_unit_images, write_report

__all__ = ["DIM", "OUTLINE", "render_unit_images", "write_report"]
