"""Results as tables: a pandas DataFrame when pandas is installed, else a small `Table` that prints as text
and shows itself as HTML in Jupyter, so a notebook or a script gets the same rows either way."""

from __future__ import annotations

import html
import importlib
from collections.abc import Iterator, Sequence
from typing import Any


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


class Table:
    """Rows of named columns (what `table` returns without pandas)."""

    def __init__(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
        self.rows = [dict(row) for row in rows]
        self.columns = list(columns) if columns is not None else list(dict.fromkeys(k for r in self.rows for k in r))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]

    def column(self, name: str) -> list[Any]:
        return [row.get(name) for row in self.rows]

    def __repr__(self) -> str:
        cells = [self.columns] + [[_cell(row.get(c)) for c in self.columns] for row in self.rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(self.columns))]
        lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
                 for line in cells]
        return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(row.get(c)))}</td>" for c in self.columns) + "</tr>"
                       for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, pandas: bool | None = None) -> Any:
    """`rows` as a pandas DataFrame (when pandas is installed, or `pandas=True`), else as a `Table`."""
    found = None
    if pandas is not False:
        try:
            found = importlib.import_module("pandas")
        except ImportError:
            if pandas:
                raise
    if found is None:
        return Table(rows, columns)
    frame = found.DataFrame([dict(row) for row in rows])
    return frame.reindex(columns=list(columns)) if columns is not None else frame
