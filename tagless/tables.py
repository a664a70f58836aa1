"""The plain-text tables every command prints (train, eval, report, demo)."""

from __future__ import annotations


def format_table(rows: list[dict], columns: list[str] | None = None, title: str = "") -> str:
    """A fixed-width text table of dict rows (floats with 2 decimals, None as '-')."""
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))

    def cell(v):
        if v is None:
            return "-"
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    rule = "-" * len(line)
    out = ([title] if title else []) + [line, rule] + ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(out)
