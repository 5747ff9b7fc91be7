"""Errors a user can fix. The CLI prints their message as one line; any other exception is a bug in
gandissect (or in the user's own model code) and keeps its traceback."""

from __future__ import annotations


class GandissectError(Exception):
    """Base of every user-facing error: bad input, a wrong flag, a model or run folder that does not fit."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(GandissectError, ValueError):
    """A setting or argument out of its range, or inconsistent with another."""


class ShapeError(GandissectError, ValueError):
    """A tensor of the wrong shape, dtype or range; the message says what was expected."""
