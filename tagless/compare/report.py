"""The report of a comparison: ``OUT/report.html`` with the table, bar charts, curves, score
panels, the variants, the runs and the base config."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import quote

from tagless import config_io
from tagless.compare.plots import plot_bars, plot_curves, plot_score_panels, plot_validation
from tagless.compare.spec import CompareSpec, base_config
from tagless.compare.table import flat_run
from tagless.files import write_text_atomic
from tagless.report.html import render_html


def write_report(spec: CompareSpec, runs: list[dict], shown: list[dict], metrics: list[str], table: list[dict],
                 chosen: list[dict] | None = None) -> Path:
    """OUT/report.html: the table, bar charts and curves (of the chosen grid points), the
    validation curves of every grid point, the variants, the runs, the base config."""
    out = spec.dir
    base = base_config(spec)
    config_io.save(base, out / "base_config.yaml")
    for stale in [*out.glob("bar_*.png"), out / "curves.png", out / "scores.png", out / "confident.png",
                  out / "validation.png"]:
        stale.unlink(missing_ok=True)  # from an earlier invocation
    bars = [p for m in metrics if (p := plot_bars(table, m, spec.reference, out / f"bar_{_file_part(m)}.png"))]
    chosen = runs if chosen is None else chosen
    ok = [r for r in chosen if r["status"] != "failed"]
    curves = plot_curves({v.name: [Path(r["run_dir"]) for r in ok if r["variant"] == v.name] for v in spec.variants},
                         out / "curves.png", keys=spec.metrics)
    rel = {r["run_dir"]: Path(r["run_dir"]).relative_to(out).as_posix() if Path(r["run_dir"]).is_relative_to(out)
           else r["run_dir"] for r in runs}
    overrides = " ".join(spec.set + spec.cli_set) or "none"
    sections = [{"title": "Comparison", "table": shown,
                 "text": f"Base recipe {spec.base} with {overrides}; seeds {spec.seeds}; {len(runs)} runs.\n"
                         f"Mean +- sample standard deviation over seeds. "
                         + (f"Differences are to {spec.reference}: beyond noise when |difference| exceeds two "
                            f"standard errors of the difference, sqrt(s_a^2/n_a + s_b^2/n_b)."
                            if spec.reference else "")}]
    failed = [{"variant": r["variant"], "seed": r["seed"], "error": r["error"]}
              for r in runs if r["status"] == "failed"]
    if failed:
        sections.append({"title": "Failed runs", "table": failed})
    if bars:
        sections.append({"title": "Metrics", "text": "Mean over seeds, error bars one standard deviation.",
                         "images": [p.name for p in bars]})
    scores = plot_score_panels({v.name: [Path(r["run_dir"]) for r in ok if r["variant"] == v.name]
                                for v in spec.variants}, out)
    if scores:
        sections.append({"title": "Scores on the test split",
                         "text": "Each variant's first finished seed: sigmoid scores of positive and negative test "
                                 "labels, and the share of images with 0, 1, 2, ... confident classes (> 0.5); "
                                 "paper 003 shows AN on single positives collapsing to one confident class.",
                         "images": [p.name for p in scores]})
    if curves:
        sections.append({"title": "Curves", "text": "Evaluation rows of each chosen run's metrics.jsonl, mean over "
                                                    "seeds (band: one standard deviation).", "images": [curves.name]})
    if len(chosen) < len(runs):
        validation = plot_validation(runs, chosen, out / "validation.png")
        how = ("on the validation split (each run's best epoch on it, best.pt); the test split never enters"
               if spec.select == "val" else "ON THE TEST SPLIT (an explicitly named protocol, not the papers')")
        sections.append({"title": "Grid points and their choice",
                         "text": f"Every grid point of each variant's sweep ran; the point of each seed was chosen "
                                 f"{how}. Curves: the validation number of every grid point over epochs (mean "
                                 f"over seeds); the chosen point bold.",
                         "table": [{"variant": r["variant"], "seed": r["seed"], "chosen": " ".join(r["point"]),
                                    "of": r["chosen_from"], "validation": (r.get("selection") or {}).get("value"),
                                    "at epoch": (r.get("selection") or {}).get("epoch")} for r in chosen
                                   if r.get("chosen_from", 1) > 1],
                         "images": [validation.name] if validation else []})
    sections.append({"title": "Variants", "table": [{"variant": v.name, "base": str(v.base or spec.base),
                                                     "overrides": " ".join(v.set) or "(none)"}
                                                    for v in spec.variants],
                     "text": f"Every run: {spec.base} + {' '.join(spec.set) or '(no file overrides)'} + the "
                             f"variant's overrides + {' '.join(spec.cli_set) or '(no --set)'} + seed, name, out_dir."})
    sections.append({"title": "Runs", "table": [flat_run(r) | {"run_dir": rel[r["run_dir"]]} for r in runs]})
    sections.append({"title": "Base config", "text": "The base recipe with the overrides of every run "
                                                     "(base_config.yaml).",
                     "table": [{"key": k, "value": v if isinstance(v, (int, float, str, type(None))) else str(v)}
                               for k, v in config_io.flatten(config_io.to_dict(base)).items()]})
    page = render_html(f"tagless compare {spec.name}", sections)
    for r in runs:  # render_html escapes every cell: the run directories become links here
        text = html.escape(rel[r["run_dir"]])
        page = page.replace(f"<td>{text}</td>",
                            f'<td><a href="{html.escape(quote(rel[r["run_dir"]]))}/">{text}</a></td>')
    return write_text_atomic(out / "report.html", page)


def _file_part(metric: str) -> str:
    return re.sub(r"[^\w.+-]", "_", metric)
