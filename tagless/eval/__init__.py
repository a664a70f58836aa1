"""Evaluation of frozen features and multi-label predictions: pure functions of tensors.

* :mod:`tagless.eval.knn` - weighted / majority kNN (papers 002, 004);
* :mod:`tagless.eval.linear` - L-BFGS logistic-regression probes and the L2 sweep (papers 001, 004);
* :mod:`tagless.eval.cluster` - NMI, adjusted NMI, ARI, Hungarian accuracy, purity, k-means (paper 002);
* :mod:`tagless.eval.multilabel` - AP, mAP@class, mAP@sample, CP/CR/CF1/OP/OR/OF1, mAP per
  object size (papers 001, 003).
"""

from tagless.eval.cluster import (
    adjusted_nmi,
    ari,
    cluster_scores,
    contingency_matrix,
    expected_mutual_info,
    hungarian_accuracy,
    kmeans,
    nmi,
    purity,
)
from tagless.eval.knn import knn_accuracy, knn_multilabel_scores, knn_predict, knn_votes
from tagless.eval.linear import (
    DEFAULT_L2_VALUES,
    C_to_l2,
    LinearModel,
    LinearProbeResult,
    SweepResult,
    fit_linear,
    l2_to_C,
    linear_probe,
    linear_sweep,
)
from tagless.eval.multilabel import (
    average_precision,
    map_by_object_size,
    map_class,
    map_sample,
    object_size_buckets,
    threshold_metrics,
    topk_metrics,
)

__all__ = [
    "DEFAULT_L2_VALUES",
    "C_to_l2",
    "LinearModel",
    "LinearProbeResult",
    "SweepResult",
    "adjusted_nmi",
    "ari",
    "average_precision",
    "cluster_scores",
    "contingency_matrix",
    "expected_mutual_info",
    "fit_linear",
    "hungarian_accuracy",
    "kmeans",
    "knn_accuracy",
    "knn_multilabel_scores",
    "knn_predict",
    "knn_votes",
    "l2_to_C",
    "linear_probe",
    "linear_sweep",
    "map_by_object_size",
    "map_class",
    "map_sample",
    "nmi",
    "object_size_buckets",
    "purity",
    "threshold_metrics",
    "topk_metrics",
]
