"""How an exception is told in one line (start-up errors, the parity gate, export failures): its first
non-empty line, cut at `limit` characters, with the exception's type, e.g. `RuntimeError: poisoned`.
An exception without a message is told by its type alone."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of the exception's message ("" for none), at most `limit` characters."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")[:limit]


def one_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: first line` (or `Type` alone for an exception without a message)."""
    line = first_line(exc, limit)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
