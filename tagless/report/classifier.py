"""The classifier sections of a ``multilabel`` run's report: the label split's statistics
(paper 003, Tables K.1-K.3), the test numbers of its own classifier with the analyses of
papers 001 / 003 (score histograms, confident classes per image, logit bias, per-size mAP),
and class activation maps of a few test images; a single-label ``classifier`` run's top-1
and mean-per-class accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def label_section(run_dir: Path, dataset) -> dict | None:
    from tagless.data.label_modes import label_statistics, load_label_split
    from tagless.engine.label_setup import SPLIT_FILE

    path = Path(run_dir) / SPLIT_FILE
    if not path.is_file():
        return None
    split = load_label_split(path, np.asarray(dataset.targets))
    rows = label_statistics(split, list(dataset.classes))
    text = (f"Labels: {split.mode}" + (f" (keep_fraction {split.keep_fraction})" if split.mode == "partial" else "")
            + f", seed {split.seed}; {len(split.train_index)} training images, {len(split.val_index)} carved out "
            f"as clean validation. 'kept (%)' is the share of the true positives the training labels keep.")
    return {"title": "Training labels", "text": text, "table": rows, "images": []}


def classifier_sections(run, out_dir, cams: list[int] | None = None) -> list[dict]:
    """The sections of a run (:class:`tagless.engine.loaded_run.LoadedRun`) whose checkpoint
    holds a classifier ([] otherwise); ``cams``: the test images whose class activation maps
    are drawn (default: the first 8)."""
    from tagless.engine.classifier_eval import checkpoint_test_scores, score_numbers
    from tagless.eval.multilabel_analysis import confident_counts, score_histograms
    from tagless.report.multilabel_plots import plot_cam_grid, plot_confident_counts, plot_run_score_histograms

    out_dir = Path(out_dir)
    model = run.classifier()
    if model is None:
        return []
    cfg = run.config
    sections = []
    labels = label_section(run.run_dir, run.split("train"))
    if labels is not None:
        sections.append(labels)
    test, scores = checkpoint_test_scores(model, run.backbone, run.data, test=run.split("test"))
    targets = torch.as_tensor(np.asarray(test.targets))
    numbers = score_numbers(scores, targets, test, cfg)
    if targets.ndim == 1:  # a single-label classifier (method classifier): its numbers only
        text = "The model's own classifier on the test split: top-1 and mean-per-class accuracy (%)."
        return [*sections, {"title": "Classifier on the test split", "text": text,
                            "table": [{k: round(v, 3) for k, v in numbers.items()}], "images": []}]
    name = f"{cfg.loss.name} ({cfg.labels.mode} labels)"
    images = [str(plot_run_score_histograms({name: score_histograms(scores, targets)},
                                            out_dir / "classifier_scores.png")),
              str(plot_confident_counts({name: confident_counts(scores)}, out_dir / "confident_classes.png"))]
    images.append(_cam_grid(model, test, run.backbone, scores, cams, out_dir / "cams.png", plot_cam_grid))
    text = ("The model's own classifier on the test split (clean labels). Paper 001's logit bias: mean logit of "
            "positives and of negatives; paper 003: AN trained on single positives tends to one confident class "
            "per image (sigmoid > 0.5). CAMs: the top-scoring class of each image, from the 1x1-conv classifier "
            "before pooling.")
    sections.append({"title": "Classifier on the test split", "text": text,
                     "table": [{k: round(v, 3) for k, v in numbers.items()}], "images": images})
    return sections


def _cam_grid(model, test, loaded, scores: torch.Tensor, chosen: list[int] | None, path: Path, plot) -> str:
    from tagless.augment import eval_view
    from tagless.errors import TaglessError

    chosen = list(range(min(8, len(test)))) if not chosen else list(chosen)
    bad = [i for i in chosen if not 0 <= i < len(test)]
    if bad:
        raise TaglessError(f"--cams: image index {bad[0]} is outside the test split (0..{len(test) - 1})")
    n, images, scores = len(chosen), test.images[chosen], scores[chosen]
    x = torch.as_tensor(images).permute(0, 3, 1, 2)
    view = eval_view(x, loaded.size, loaded.crop_fraction, loaded.mean, loaded.std)
    device = next(model.parameters()).device
    with torch.no_grad():
        fmap = model.backbone.forward_features(view.to(device), model.layer)[model.layer]
        cams = model.head(fmap)[1].float().cpu()
    top = scores.argmax(1)
    maps = cams[torch.arange(n), top]
    titles = [f"#{i}: {test.classes[int(c)]} ({torch.sigmoid(scores[j, c]):.2f})"
              for j, (i, c) in enumerate(zip(chosen, top))]
    return str(plot(images, maps, titles, path))
