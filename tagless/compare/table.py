"""The comparison table: mean +- sample std over seeds, the difference of means from the
reference with a seed-noise verdict, and its CSV / Markdown forms."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from tagless.files import write_text_atomic
from tagless.tables import format_float

SPEED = ("wall_s", "images_per_s")
BEYOND, NOISE, FEW = "beyond noise", "noise", "too few seeds"


def _finite(values) -> np.ndarray:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return v[np.isfinite(v)]


def mean_std(values) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1, n) of the finite values; std is NaN below 2 values,
    both NaN for none."""
    v = _finite(values)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)


def mean_difference(a, b, z: float = 2.0) -> tuple[float, float, str]:
    """(mean(a) - mean(b), its standard error sqrt(s_a^2/n_a + s_b^2/n_b), verdict).

    The verdict is 'beyond noise' when |difference| > z standard errors, else 'noise';
    'too few seeds' when a or b has fewer than 2 finite values (no spread to judge by)."""
    a, b = _finite(a), _finite(b)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan, FEW
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return diff, math.nan, FEW
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    return diff, se, BEYOND if abs(diff) > z * se else NOISE


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def run_metrics(record: dict) -> dict:
    """A run's metrics: its test numbers if it has any, else its monitor numbers; plus speed."""
    numbers = record.get("test") or record.get("monitor") or {}
    out = {k: v for k, v in numbers.items() if _is_number(v) or v is None}
    return out | {k: record.get(k) for k in SPEED}


def _selection_value(run: dict) -> float | None:
    value = (run.get("selection") or {}).get("value")
    return value if _is_number(value) and math.isfinite(value) else None


def choose_points(runs: list[dict], select: str = "val", metric: str | None = None) -> list[dict]:
    """One run per (variant, seed): the only one, or, for a sweep, the grid point whose run is best
    on the validation split (``select='val'``: its best.pt value, ``selection.value``; the test
    split never enters) or, as an explicitly named protocol, on the test ``metric``
    (``select='test'``). Ties go to the first point in grid order; a failed point is never chosen.
    Each chosen run gets ``chosen_from`` (the grid size)."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["variant"], r["seed"]), []).append(r)
    chosen = []
    for members in groups.values():
        if len(members) == 1:
            chosen.append(members[0] | {"chosen_from": 1})
            continue
        score = _selection_value if select == "val" else (
            lambda r: r["metrics"].get(metric) if _is_number(r["metrics"].get(metric)) else None)
        scored = [r for r in members if r["status"] != "failed" and score(r) is not None]
        if not scored:
            what = "a validation number (selection)" if select == "val" else f"a test {metric}"
            chosen.append(members[0] | {"status": "failed", "metrics": {}, "chosen_from": len(members),
                                        "error": f"no grid point of {len(members)} has {what}"})
            continue
        best = max(scored, key=score)
        chosen.append(best | {"chosen_from": len(members)})
    return chosen


def chosen_points(chosen: list[dict], variant: str) -> str | None:
    """The grid points a variant's seeds chose, as text ('same for every seed' collapses)."""
    mine = [r for r in chosen if r["variant"] == variant and r.get("chosen_from", 1) > 1]
    if not mine:
        return None
    texts = [" ".join(r.get("point") or []) for r in mine]
    if len(set(texts)) == 1:
        return texts[0]
    return "; ".join(f"s{r['seed']}: {t}" for r, t in zip(mine, texts))


def metric_names(runs: list[dict], wanted: list[str] | None) -> list[str]:
    """The columns: ``wanted``, or every numeric metric of the runs (first seen first), then speed."""
    if wanted:
        return list(wanted)
    found = dict.fromkeys(k for r in runs for k, v in r["metrics"].items() if k not in SPEED and _is_number(v))
    return [*found, *SPEED]


def summarise(runs: list[dict], variants: list[str], metrics: list[str], reference: str | None = None) -> list[dict]:
    """One row per variant: n seeds, failed runs, mean and std of each metric over seeds and,
    with a reference, the difference of means and its seed-noise verdict (numbers, for CSV/JSON)."""
    def values(v, m):
        return [r["metrics"].get(m) for r in runs if r["variant"] == v and r["status"] != "failed"]

    table = []
    for v in variants:
        mine = [r for r in runs if r["variant"] == v]
        row = {"variant": v, "seeds": sum(r["status"] != "failed" for r in mine),
               "failed": sum(r["status"] == "failed" for r in mine)}
        for m in metrics:
            mean, std, _ = mean_std(values(v, m))
            row[m], row[f"{m} std"] = mean, std
            if reference is not None:
                diff, _, verdict = (mean_difference(values(v, m), values(reference, m)) if v != reference
                                    else (None, None, "reference"))
                row[f"{m} vs {reference}"], row[f"{m} verdict"] = diff, verdict
        table.append(row)
    return table


def _num(x) -> str | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else format_float(float(x))


def display_rows(table: list[dict], metrics: list[str], reference: str | None = None,
                 chosen: list[dict] | None = None, select: str = "val") -> list[dict]:
    """The table as text cells: 'mean +- std' and '+diff (verdict)'; with a sweep, the grid
    point each variant chose and how ('chosen on val', or 'CHOSEN ON TEST')."""
    show_failed = any(r["failed"] for r in table)
    out = []
    for r in table:
        row = {"variant": r["variant"] + (" (ref)" if r["variant"] == reference else ""), "seeds": r["seeds"]}
        if show_failed:
            row["failed"] = r["failed"]
        point = chosen_points(chosen or [], r["variant"])
        if point is not None:
            row["chosen on val" if select == "val" else "CHOSEN ON TEST"] = point
        for m in metrics:
            mean, std = _num(r[m]), _num(r[f"{m} std"])
            row[m] = None if mean is None else mean if std is None else f"{mean} +- {std}"
            if reference is not None:
                diff = r[f"{m} vs {reference}"]
                shown = None if r["variant"] == reference else _num(diff)
                row[f"vs {reference}: {m}"] = (None if shown is None else
                                               f"{'' if diff < 0 else '+'}{shown} ({r[f'{m} verdict']})")
        out.append(row)
    return out


def markdown_table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    cell = lambda v: "-" if v is None else (format_float(v) if isinstance(v, float) else str(v)).replace("|", "\\|")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    """``rows`` as CSV, written atomically."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, columns)
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in r.items()})
    write_text_atomic(path, text.getvalue())


def flat_run(r: dict) -> dict:
    return {"variant": r["variant"], "seed": r["seed"], "point": " ".join(r.get("point") or []) or None,
            "status": r["status"], "val": _selection_value(r), **r["metrics"], "error": r["error"],
            "run_dir": r["run_dir"]}
