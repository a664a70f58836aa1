"""Training throughput: tagless's on-device pipeline against a conventional one, same model.

Both run MoCo-v2 steps (forward, backward, SGD, momentum update, enqueue) of the same
backbone on the same images at the same batch size:
- tagless: uint8 images resident on the device, views made by batched tensor ops
  (``tagless.augment``), one process;
- conventional: a ``torch.utils.data.DataLoader`` with worker processes that augment each
  image with PIL (random resized crop, colour jitter, grayscale, blur, flip: the MoCo-v2
  recipe, as torchvision's transforms do it), collate to float, then the same model step.

Prints device, sizes, images/s of each and the ratio. Run:
    python benchmarks/train_bench.py [--device cuda] [--width 1.0] [--steps 30]
"""

from __future__ import annotations

import argparse
import random
import time
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from tagless.augment import ViewsConfig, build_views
from tagless.engine.runinfo import device_name
from tagless.methods import MocoConfig, MoCo
from tagless.models import build_backbone

MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def pil_view(img: Image.Image, size: int, rng: random.Random) -> np.ndarray:
    """One MoCo-v2 view of one image, per-image on the CPU (the conventional pipeline)."""
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(0.2, 1.0)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
            break
    else:
        cw, ch, x0, y0 = w, h, 0, 0
    img = img.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.8:
        for enhance in rng.sample([ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color], 3):
            img = enhance(img).enhance(rng.uniform(0.6, 1.4))
    if rng.random() < 0.2:
        img = img.convert("L").convert("RGB")
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.1, 2.0)))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return ((np.asarray(img, np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


class PilTwoViews(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, size: int):
        self.images, self.size = images, size

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        rng = random.Random(i * 7919 + int(torch.randint(0, 2**30, ()).item()))
        img = Image.fromarray(self.images[i])
        return torch.from_numpy(pil_view(img, self.size, rng)), torch.from_numpy(pil_view(img, self.size, rng))


def make_method(width: float, device: torch.device, views) -> MoCo:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", stem="cifar", width=width)
    return MoCo(backbone, views, MocoConfig(queue_size=4096, momentum=0.99, symmetric=True)).to(device)


def train_steps(method: MoCo, batches, steps: int, device: torch.device, amp: bool) -> float:
    opt = torch.optim.SGD(method.param_groups(), lr=0.03, momentum=0.9)
    gen = torch.Generator(device=device).manual_seed(0)
    it = iter(batches)
    for i in range(steps + 3):  # 3 warm-up steps
        if i == 3:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        batch = next(it)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = method({"images": batch, "generator": gen})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.after_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def augmentation_only(images: np.ndarray, size: int, batch: int, device: torch.device, views) -> tuple[float, float]:
    """Two MoCo-v2 views per image, no model: (tagless images/s, PIL images/s in one process)."""
    resident = torch.from_numpy(images[:batch]).permute(0, 3, 1, 2).contiguous().to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    views(resident, gen)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, reps = time.perf_counter(), 5
    for _ in range(reps):
        views(resident, gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate_tagless = reps * batch / (time.perf_counter() - start)
    data, rng = PilTwoViews(images[:batch], size), random.Random(0)
    start = time.perf_counter()
    for i in range(batch):
        img = Image.fromarray(data.images[i])
        pil_view(img, size, rng), pil_view(img, size, rng)
    return rate_tagless, batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--width", type=float, default=0.25, help="ResNet-18 width multiplier")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--images", type=int, default=4096)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-conventional", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    amp = device.type == "cuda"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)

    views = build_views(ViewsConfig(recipe="two_views", global_size=args.size))
    method = make_method(args.width, device, views)
    if device.type == "cuda":
        method = method.to(memory_format=torch.channels_last)
    resident = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)

    def tagless_batches():
        g = torch.Generator().manual_seed(0)
        while True:
            yield resident[torch.randint(0, len(resident), (args.batch,), generator=g).to(device)]

    t_tagless = train_steps(method, tagless_batches(), args.steps, device, amp)
    rate_tagless = args.steps * args.batch / t_tagless

    rate_conv = None
    if not args.skip_conventional:
        loader = torch.utils.data.DataLoader(PilTwoViews(images, args.size), batch_size=args.batch, shuffle=True,
                                             num_workers=args.workers, drop_last=True, persistent_workers=True,
                                             pin_memory=device.type == "cuda")
        passthrough = lambda crops, generator: SimpleNamespace(crops=list(crops), kinds=["global", "global"])
        method_conv = make_method(args.width, device, passthrough)

        def conv_batches():
            while True:
                for v1, v2 in loader:
                    yield (v1.to(device, non_blocking=True), v2.to(device, non_blocking=True))

        t_conv = train_steps(method_conv, conv_batches(), args.steps, device, amp)
        rate_conv = args.steps * args.batch / t_conv

    aug_tagless, aug_pil = augmentation_only(images, args.size, args.batch, device, views)
    print(f"device: {device_name(device)}; torch {torch.__version__}")
    print(f"augmentation only (two MoCo-v2 views per image, batch {args.batch}, {args.size}px):")
    print(f"  tagless batched on {device.type}: {aug_tagless:.0f} images/s; PIL per image, one process: "
          f"{aug_pil:.0f} images/s; ratio {aug_tagless / aug_pil:.1f}x")
    print(f"MoCo-v2 (symmetric), ResNet-18 CIFAR stem width {args.width}, {args.size}px, batch {args.batch}, "
          f"{args.steps} timed steps, amp={'bf16' if amp else 'off'}")
    print(f"{'pipeline':<44}{'images/s':>10}")
    print(f"{'tagless (uint8 on device, batched views)':<44}{rate_tagless:>10.1f}")
    if rate_conv:
        print(f"{f'PIL per-image + DataLoader ({args.workers} workers)':<44}{rate_conv:>10.1f}")
        print(f"ratio tagless / conventional: {rate_tagless / rate_conv:.2f}x")


if __name__ == "__main__":
    main()
