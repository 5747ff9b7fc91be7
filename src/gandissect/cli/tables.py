"""Plain-text tables for the commands' summaries: aligned columns a reader can scan, not Python reprs."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows under headers, columns padded to their widest cell; numbers right-aligned, text left-aligned,
    with a dashed rule under the headers."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    if any(len(row) != len(headers) for row in cells):
        raise ValueError(f"every row needs {len(headers)} cells")
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_is_number(row[i]) for row in cells[1:]) and len(cells) > 1 for i in range(len(headers))]

    def line(row: list[str]) -> str:
        padded = (c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True))
        return "  ".join(padded).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(row) for row in cells[1:]])


def _is_number(text: str) -> bool:
    """A cell that reads as a number ("0.977", "+3.2%", "12 of 128", "nan") or is empty."""
    return text in ("", "-", "nan") or text[:1].isdigit() or (text[:1] in "+-." and text[1:2].isdigit())
