"""The plain-text tables every command prints (train, eval, report, demo)."""

from __future__ import annotations

import math


def format_float(v: float) -> str:
    """2 decimals, or 3 significant digits below 1 and from 1e6 (an L2 of 0.0133 stays 0.0133)."""
    return f"{v:.2f}" if v == 0 or 1 <= abs(v) < 1e6 or v != v or abs(v) == float("inf") else f"{v:.3g}"


def format_table(rows: list[dict], columns: list[str] | None = None, title: str = "") -> str:
    """A fixed-width text table of dict rows (None as '-', floats by :func:`format_float`)."""
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))

    def cell(v):
        if v is None:
            return "-"
        return format_float(v) if isinstance(v, float) else str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    rule = "-" * len(line)
    out = ([title] if title else []) + [line, rule] + ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(out)


def json_safe(value):
    """NaN / inf become null (recursively in dicts, lists, tuples), so that a ``--json`` line or
    a results file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
