"""Plots (matplotlib, Agg) and a self-contained HTML report of a run.

* :mod:`tagless.report.plots` - one function per PNG: training curves, t-SNE, confusion
  matrix, per-class AP, score histograms, image grids;
* :mod:`tagless.report.html` - ``render_html(title, sections)``: escaped, inline CSS, no JS;
* :mod:`tagless.report.report` - ``write_report(run_dir, sections)`` and the section builders.
"""

from tagless.report.html import render_html, render_table
from tagless.report.plots import (
    confusion_matrix,
    plot_confusion_matrix,
    plot_image_grid,
    plot_per_class_ap,
    plot_score_histograms,
    plot_training_curves,
    plot_tsne,
    tsne_embedding,
)
from tagless.report.report import (
    load_metrics,
    multilabel_section,
    report_dir,
    single_label_section,
    training_section,
    training_summary,
    write_report,
)

__all__ = [
    "confusion_matrix",
    "load_metrics",
    "multilabel_section",
    "plot_confusion_matrix",
    "plot_image_grid",
    "plot_per_class_ap",
    "plot_score_histograms",
    "plot_training_curves",
    "plot_tsne",
    "render_html",
    "render_table",
    "report_dir",
    "single_label_section",
    "training_section",
    "training_summary",
    "tsne_embedding",
    "write_report",
]
