"""ImageNet ReaL (paper 003, Table K.1): the reader of ``real.json`` and ReaL top-1 / mAP,
against values computed by hand on a small file in the real format."""

import json

import numpy as np
import pytest

from tagless.cli import main
from tagless.data.real_labels import read_real_labels, real_labels_for
from tagless.errors import TaglessError
from tagless.eval.linear import linear_probe
from tagless.eval.real import real_scores

# real.json's format: one list of class ids per validation image, in file order; image 2's is empty
REAL = [[1], [], [0, 2], [3], [2]]
SCORES = np.array([
    [0.1, 0.9, 0.3, 0.2],   # image 1: top class 1, in [1]        -> hit
    [0.8, 0.1, 0.1, 0.0],   # image 2: empty list                 -> left out
    [0.2, 0.1, 0.7, 0.4],   # image 3: top class 2, in [0, 2]     -> hit
    [0.5, 0.3, 0.1, 0.25],  # image 4: top class 0, not in [3]    -> miss
    [0.3, 0.6, 0.4, 0.1],   # image 5: top class 1, not in [2]    -> miss
], dtype=np.float32)
# By hand, over images 1, 3, 4, 5: ReaL top-1 = 2 / 4.
# AP per class (ranked scores, positives marked *):
#   class 0: 0.5, 0.3, 0.2*, 0.1       -> 1/3
#   class 1: 0.9*, 0.6, 0.3, 0.1       -> 1
#   class 2: 0.7*, 0.4*, 0.3, 0.1      -> 1
#   class 3: 0.4, 0.25*, 0.2, 0.1      -> 1/2
# ReaL mAP = (1/3 + 1 + 1 + 1/2) / 4 = 17/24; labels per kept image (1 + 2 + 1 + 1) / 4.
REAL_TOP1, REAL_MAP = 0.5, 17 / 24


def _real_file(tmp_path, data=REAL):
    path = tmp_path / "real.json"
    path.write_text(json.dumps(data))
    return path


def test_real_scores_by_hand(tmp_path):
    real = read_real_labels(_real_file(tmp_path))
    assert real == REAL
    out = real_scores(SCORES, real)
    assert out["real_top1"] == pytest.approx(REAL_TOP1)
    assert out["real_map"] == pytest.approx(REAL_MAP)
    assert (out["images"], out["left_out"]) == (4, 1)
    assert out["labels_per_image"] == pytest.approx(1.25)


def test_the_empty_list_counts_nowhere():
    """With image 2 scored instead of left out (its top class 0 as a miss and a negative),
    both numbers would be lower: 2/5 and class 0's AP 1/4."""
    other = real_scores(SCORES, [[1], [1], [0, 2], [3], [2]])
    assert other["real_top1"] == pytest.approx(0.4)
    assert real_scores(SCORES, REAL)["real_top1"] != other["real_top1"]


def test_labels_found_by_file_name_in_any_order():
    paths = ["val/n02/ILSVRC2012_val_00000005.JPEG", "val/n00/ILSVRC2012_val_00000001.JPEG",
             "val/n01/ILSVRC2012_val_00000003.JPEG"]
    assert real_labels_for(paths, REAL) == [[2], [1], [0, 2]]
    with pytest.raises(TaglessError, match="not an ImageNet validation file name"):
        real_labels_for(["val/n00/cat.jpg"], REAL)
    with pytest.raises(TaglessError, match="image 9 is beyond the 5 entries"):
        real_labels_for(["ILSVRC2012_val_00000009.JPEG"], REAL)


@pytest.mark.parametrize(("content", "message"), [
    ("{", "not a JSON file"),
    ('{"1": [2]}', "expected a non-empty JSON list"),
    ("[[1], [-2]]", r"entry 1 \(image 2\) must be a list of class ids >= 0"),
    ('[[1], ["n01440764"]]', "entry 1"),
    ("[[1], 3]", "entry 1"),
])
def test_bad_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "real.json"
    path.write_text(content)
    with pytest.raises(TaglessError, match=message) as e:
        read_real_labels(path)
    assert "\n" not in str(e.value)


def test_a_label_beyond_the_scored_classes_is_an_error():
    with pytest.raises(TaglessError, match="ReaL label 7 of image 0 is outside the 4 scored classes"):
        real_scores(SCORES, [[7], [], [0], [1], [2]])


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_eval_real_with_given_scores(tmp_path, capsys):
    features = tmp_path / "f.npz"
    np.savez(features, scores=SCORES, y_test=np.array([1, 0, 2, 3, 2]))
    assert main(["eval", "real", "--features", str(features), "--real-labels", str(_real_file(tmp_path)),
                 "--json"]) == 0
    out = _last_json(capsys)
    assert out["real_top1"] == pytest.approx(REAL_TOP1) and out["real_map"] == pytest.approx(REAL_MAP)
    row = out["results"][0]
    assert row["ReaL top-1 (%)"] == pytest.approx(50.0)
    assert row["top-1, original labels (%)"] == pytest.approx(50.0)  # images 1 and 3 of the four kept


def test_eval_real_with_a_linear_probe(tmp_path, capsys):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8))
    y = np.repeat(np.arange(4), 10)
    x = (centers[y] + rng.normal(size=(40, 8))).astype(np.float32)
    xt = (centers[[1, 0, 2, 3, 2]] + rng.normal(size=(5, 8))).astype(np.float32)
    features = tmp_path / "f.npz"
    np.savez(features, x_train=x, y_train=y, x_test=xt, y_test=np.array([1, 0, 2, 3, 2]))
    assert main(["eval", "real", "--features", str(features), "--real-labels", str(_real_file(tmp_path)),
                 "--num-l2", "4", "--json"]) == 0
    out = _last_json(capsys)
    res = linear_probe(x, y, xt, np.array([1, 0, 2, 3, 2]), l2_values=np.logspace(-6, 5, 4))
    expected = real_scores(res.model.decision_function(xt).numpy(), REAL)
    assert out["real_top1"] == pytest.approx(expected["real_top1"])
    assert out["real_map"] == pytest.approx(expected["real_map"])


def test_eval_real_needs_as_many_entries_as_images(tmp_path, capsys):
    features = tmp_path / "f.npz"
    np.savez(features, scores=SCORES[:4])
    assert main(["eval", "real", "--features", str(features), "--real-labels", str(_real_file(tmp_path))]) == 2
    assert "4 scored images but 5 entries" in capsys.readouterr().err


def test_eval_real_of_a_classifier_checkpoint_matches_images_by_file_name(tmp_path, capsys):
    """A single-label classifier fine-tuned on an image folder whose test images carry ImageNet
    validation names, stored by class folder (not in file order): each gets its own ReaL list."""
    from PIL import Image

    from tagless.engine.classifier_eval import checkpoint_test_scores, load_classifier
    from tagless.engine.run_config import load_config
    from tagless.engine.trainer import train

    rng = np.random.default_rng(0)
    colours = ((200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40))
    for split, n in (("train", 6), ("test", 2)):
        for c, colour in enumerate(colours):
            folder = tmp_path / "imagenet" / split / f"n0{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(np.array(colour) + rng.normal(0, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
                # class c's test images are validation images c + 1 and c + 5
                name = f"ILSVRC2012_val_{c + 1 + 4 * i:08d}.png" if split == "test" else f"train_{c}_{i}.png"
                Image.fromarray(pixels).save(folder / name)
    real = [[0], [1, 3], [], [3], [0, 2], [1], [2], []]  # entries 1..8 in file order
    real_path = _real_file(tmp_path, real)
    overrides = [f"out_dir={tmp_path}", "name=cls", f"data.root={tmp_path / 'imagenet'}", "data.image_size=16",
                 "data.cache_dir=", "views.global_size=16", "model.backbone=resnet18", "model.stem=cifar",
                 "model.width=0.125", "model.init_checkpoint=", "train.batch_size=8", "train.epochs=1"]
    cfg = load_config("mls_finetune", overrides)
    train(cfg, progress=False)
    ckpt = tmp_path / "cls" / "checkpoints" / "last.pt"
    assert main(["eval", "real", "--checkpoint", str(ckpt), "--real-labels", str(real_path), "--json"]) == 0
    out = _last_json(capsys)
    assert out["results"][0]["scores"] == "the checkpoint's classifier"
    loaded, model = load_classifier(ckpt)
    test, scores = checkpoint_test_scores(model, loaded, cfg.data)
    numbers = [int(p[-12:-4]) for p in test.paths]
    assert numbers == [1, 5, 2, 6, 3, 7, 4, 8]  # class-folder order, not file order
    expected = real_scores(scores.numpy(), [real[k - 1] for k in numbers])
    assert out["real_top1"] == pytest.approx(expected["real_top1"])
    assert out["real_map"] == pytest.approx(expected["real_map"])
    assert out["left_out"] == 2
