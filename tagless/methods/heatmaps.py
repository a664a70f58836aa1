"""The per-image, per-class heatmap store of the spatial consistency loss (SCL), Verelst et al.
WACV 2023, supp. G (notes 4.2 item 5).

Each training image n keeps, per class, a running-average map H_n in [0, 1] covering the WHOLE
source image ([0, source_size]^2 in source pixels) at ``size`` x ``size`` (the paper: 2x the
feature-map side, uint8). Pixel i spans [i, i + 1] * source_size / size; between pixel centres
the map is bilinear and beyond the outer centres it is constant (grid_sample, align_corners
False, border padding: torchvision's ``roi_align(aligned=True)`` convention).

- ``sample`` reads the target of a view: H over the view's crop box at out x out pixel centres,
  flipped where the view was flipped.
- ``update`` writes a view back: the store pixels whose centres lie in the closed crop box get
  H <- m * H + (1 - m) * sample of the view's (un-flipped) sigmoid CAMs; others keep their
  bytes. ``first_visit=True`` (default): the first update of a store pixel writes the sample
  itself (a ``visited`` flag per image pixel), so maps are not biased towards their initial 0.
  ``bias_correction=True`` instead keeps each pixel's number of visits v (``visits``, int16)
  and stores the bias-corrected EMA from 0, h <- h + (1 - m) / (1 - m^v) (sample - h) (Adam's
  correction of a zero start): the first visit writes the sample, and the v visits so far are
  averaged with the EMA's weights renormalised to sum to 1. ``restart()`` forgets every
  pixel's visits (the values stay until each pixel's next visit overwrites them).
- uint8 stores round(255 h) with stochastic rounding floor(255 h + u), u ~ U[0, 1) from the
  caller's generator: unbiased, so updates smaller than half a level still move the map on
  average. float16 stores h.
- ``top_k > 0`` keeps only k classes per image (``kept``, N x k; the value ``num_classes``
  means an empty slot); other classes read as 0 (the paper's ImageNet setting, top-10 by EMA
  score after the warm-up; ``select_classes``).
Duplicate image indices in one batch: one of the rows wins (as for ``index_put_``; on CPU the
last). Everything stays on the store's device; no host sync.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tagless.errors import TaglessError

_DTYPES = {"uint8": torch.uint8, "float16": torch.float16}


class HeatmapStore(nn.Module):
    """Running-average class heatmaps per image (SCL, supp. G); state in registered buffers."""

    def __init__(self, num_images: int, num_classes: int, size: int, source_size: int,
                 dtype: str = "uint8", top_k: int = 0, momentum: float = 0.9, first_visit: bool = True,
                 bias_correction: bool = False):
        super().__init__()
        if dtype not in _DTYPES:
            raise TaglessError(f"heatmaps: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        if min(num_images, num_classes, size, source_size) < 1:
            raise TaglessError(f"heatmaps: images, classes, size and source_size must be >= 1, got "
                               f"{(num_images, num_classes, size, source_size)}")
        if not 0 <= top_k <= num_classes:
            raise TaglessError(f"heatmaps: top_k must lie in [0, {num_classes}], got {top_k}")
        if not 0 <= momentum < 1:
            raise TaglessError(f"heatmaps: momentum must lie in [0, 1), got {momentum}")
        self.num_classes, self.size, self.source_size = num_classes, size, source_size
        self.top_k, self.momentum, self.first_visit = top_k, momentum, first_visit
        self.bias_correction = bias_correction
        channels = top_k or num_classes
        self.register_buffer("maps", torch.zeros(num_images, channels, size, size, dtype=_DTYPES[dtype]))
        self.register_buffer("visited", torch.zeros(num_images, size, size, dtype=torch.bool))
        if bias_correction:
            self.register_buffer("visits", torch.zeros(num_images, size, size, dtype=torch.int16))
            self.register_load_state_dict_pre_hook(_visits_from_visited)
        if top_k:  # every slot empty until select_classes
            self.register_buffer("kept", torch.full((num_images, top_k), num_classes, dtype=torch.long))

    def memory_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def _decode(self, raw: torch.Tensor) -> torch.Tensor:
        return raw.float() / 255 if raw.dtype == torch.uint8 else raw.float()

    def _encode(self, values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.maps.dtype == torch.uint8:  # stochastic rounding: E[floor(255 h + u)] = 255 h
            u = torch.rand(values.shape, generator=generator, device=values.device)
            values = (values.clamp(0, 1) * 255 + u).floor_().clamp_(0, 255)
        return values.to(self.maps.dtype)

    def sample(self, index: torch.Tensor, boxes: torch.Tensor, flipped: torch.Tensor,
               out_size: int) -> torch.Tensor:
        """float32 B x C x out x out in [0, 1]: each image's map over its crop box (x0, y0, x1, y1,
        source pixels), resized to out x out at pixel centres, then flipped where ``flipped``.
        One affine ``grid_sample`` (notes 4.2 item 5), with s = source_size and w, h the box sides:
        theta = [[+-w/s, 0, (x0 + x1)/s - 1], [0, h/s, (y0 + y1)/s - 1]]."""
        boxes = boxes.float()
        b, s = boxes.shape[0], float(self.source_size)
        theta = boxes.new_zeros(b, 2, 3)
        sign = 1.0 - 2.0 * flipped.to(boxes.dtype)
        theta[:, 0, 0] = sign * (boxes[:, 2] - boxes[:, 0]) / s
        theta[:, 0, 2] = (boxes[:, 0] + boxes[:, 2]) / s - 1
        theta[:, 1, 1] = (boxes[:, 3] - boxes[:, 1]) / s
        theta[:, 1, 2] = (boxes[:, 1] + boxes[:, 3]) / s - 1
        maps = self._decode(self.maps[index])
        grid = F.affine_grid(theta, [b, 1, out_size, out_size], align_corners=False)
        out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if not self.top_k:
            return out
        full = out.new_zeros(b, self.num_classes + 1, out_size, out_size)  # + the empty-slot channel
        slots = self.kept[index][:, :, None, None].expand_as(out)
        return full.scatter_(1, slots, out)[:, : self.num_classes]

    @torch.no_grad()
    def update(self, index: torch.Tensor, boxes: torch.Tensor, flipped: torch.Tensor,
               probs: torch.Tensor, generator: torch.Generator) -> None:
        """Average the view's CAM probabilities ``probs`` (B x C x h x w, detached) into the store
        pixels whose centres lie in the closed crop box; H <- m H + (1 - m) sample there only.
        ``generator`` (on the store's device) draws the uint8 stochastic rounding."""
        boxes, probs = boxes.float(), probs.detach().float()
        b, _, h, w = probs.shape
        n, s = self.size, float(self.source_size)
        if self.top_k:  # the kept classes only; an empty slot reads a zero channel
            padded = torch.cat([probs, probs.new_zeros(b, 1, h, w)], dim=1)
            probs = padded.gather(1, self.kept[index][:, :, None, None].expand(b, self.top_k, h, w))
        x0, y0, x1, y1 = boxes.unbind(1)
        bw, bh = (x1 - x0).clamp_min(1e-6), (y1 - y0).clamp_min(1e-6)
        # Inverse affine map: store-normalised coords -> view-normalised coords (mirrored if flipped).
        theta = boxes.new_zeros(b, 2, 3)
        sign = 1.0 - 2.0 * flipped.to(boxes.dtype)
        theta[:, 0, 0] = sign * s / bw
        theta[:, 0, 2] = sign * ((s - x0 - x1) / bw)
        theta[:, 1, 1] = s / bh
        theta[:, 1, 2] = (s - y0 - y1) / bh
        grid = F.affine_grid(theta, [b, 1, n, n], align_corners=False)
        fresh = F.grid_sample(probs, grid, mode="bilinear", padding_mode="border", align_corners=False)
        centres = (torch.arange(n, device=boxes.device, dtype=torch.float32) + 0.5) * (s / n)
        inside_x = (centres >= x0[:, None]) & (centres <= x1[:, None])  # B x n
        inside_y = (centres >= y0[:, None]) & (centres <= y1[:, None])
        inside = inside_y[:, :, None] & inside_x[:, None, :]  # B x n x n
        raw, visited = self.maps[index], self.visited[index]
        m, old = self.momentum, self._decode(raw)
        if self.bias_correction:
            visits = self.visits[index]
            v = visits.float() + 1  # this visit included
            rate = torch.where(visits == 0, torch.ones_like(v), (1 - m) / (1 - m ** v))
            new = old + rate[:, None] * (fresh - old)
            self.visits[index] = torch.where(inside, (visits + 1).clamp_(max=torch.iinfo(torch.int16).max), visits)
        else:
            new = m * old + (1 - m) * fresh
            if self.first_visit:  # a pixel's first update writes the sample itself
                new = torch.where(visited[:, None], new, fresh)
        # Pixels outside the crop keep their stored bytes exactly.
        self.maps[index] = torch.where(inside[:, None], self._encode(new, generator), raw)
        self.visited[index] = visited | inside

    @torch.no_grad()
    def restart(self) -> None:
        """Forget every pixel's visits: its next visit writes the sample itself (the EMA's
        restart at the end of the warm-up); the stored values stay until then."""
        self.visited.zero_()
        if self.bias_correction:
            self.visits.zero_()

    @torch.no_grad()
    def select_classes(self, index: torch.Tensor, scores: torch.Tensor) -> None:
        """top_k stores: keep each image's ``top_k`` classes by ``scores`` (B x C, e.g. the EMA
        scores after the warm-up). Classes kept before keep their maps; classes newly entering
        start at 0. An image's first selection also clears its ``visited`` flags (maps written
        into empty slots before it are meaningless), so its next visits write afresh."""
        if not self.top_k:
            raise TaglessError("heatmaps: select_classes needs a store built with top_k > 0")
        new = scores.float().topk(self.top_k, dim=1).indices  # B x k
        old = self.kept[index]
        match = new[:, :, None] == old[:, None, :]  # B x k(new) x k(old)
        source = match.to(torch.uint8).argmax(dim=2)  # the old slot holding the class, if any
        maps = self.maps[index]
        moved = maps.gather(1, source[:, :, None, None].expand_as(maps))
        self.maps[index] = torch.where(match.any(dim=2)[:, :, None, None], moved, torch.zeros_like(moved))
        first = (old == self.num_classes).all(dim=1)
        self.visited[index] = self.visited[index] & ~first[:, None, None]
        if self.bias_correction:
            self.visits[index] = torch.where(first[:, None, None], torch.zeros_like(self.visits[index]),
                                             self.visits[index])
        self.kept[index] = new


def _visits_from_visited(module, state_dict, prefix, *args) -> None:
    """A checkpoint from before the visit counts: one visit for every visited pixel."""
    if prefix + "visits" not in state_dict and prefix + "visited" in state_dict:
        state_dict[prefix + "visits"] = state_dict[prefix + "visited"].to(torch.int16)
