"""Comparisons: variants x seeds of one base recipe, one table, one report (``tagless compare``).

A compare file names a base run recipe, overrides shared by every run, the seeds, and the
variants (each a list of overrides)::

    name: sp_losses            # folder under out_dir (default: the file's stem)
    out_dir: runs              # default runs
    base: multilabel_scenes    # bundled recipe or YAML path (relative to this file first)
    set: [train.epochs=20]     # overrides for every run
    seeds: [0, 1, 2]           # RunConfig.seed of the runs (default [0])
    metrics: [map_class]       # columns (default: every numeric metric the runs report)
    reference: bce_full        # variant the others are compared against
    variants:
      - {name: bce_full, set: [loss.name=bce, labels.mode=full]}
      - {name: an, set: [loss.name=an]}
      - {name: other, base: other_recipe, set: []}  # a variant may start from its own recipe

Run ``variant_sSEED`` gets ``(variant.base or base) + set + variant.set + --set + [seed, name,
out_dir]``; every config is validated before the first run trains. Runs train one after another, seed-major
(every variant at the first seed, then the next seed), under ``OUT_DIR/NAME/runs/``; a run
with a ``result.json`` is reused, one with a checkpoint is resumed, one that raises a
TaglessError (NaN loss, ...) is recorded as failed and the comparison goes on.

The table shows mean +- sample std (ddof=1) over seeds, and the difference of means from the
reference with a seed-noise verdict: beyond noise when |difference| > 2 standard errors of
the difference, sqrt(s_a^2 / n_a + s_b^2 / n_b).

The package: :mod:`~tagless.compare.spec` (the compare file), :mod:`~tagless.compare.runner`
(plan, train, resume), :mod:`~tagless.compare.table` (statistics and the table),
:mod:`~tagless.compare.plots` and :mod:`~tagless.compare.report` (the PNGs and report.html).
It sits above ``report`` and ``engine`` (it trains runs and draws them) and below the commands.
"""

from tagless.compare.runner import PlannedRun, plan_runs, run_compare
from tagless.compare.spec import COMPARE_DIR, CompareSpec, Variant, base_config, load_spec, resolve_compare_path
from tagless.compare.table import mean_difference, mean_std, summarise

__all__ = ["COMPARE_DIR", "CompareSpec", "PlannedRun", "Variant", "base_config", "load_spec", "mean_difference",
           "mean_std", "plan_runs", "resolve_compare_path", "run_compare", "summarise"]
