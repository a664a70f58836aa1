"""The one place that touches ``torch.distributed``.

Every function works without a process group (one process): ``rank() == 0``,
``world_size() == 1`` and the collectives return their input. Methods and losses call these
helpers and never ``torch.distributed`` directly, so one code path serves CPU, one GPU and
many processes under ``torchrun``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when the environment of ``torchrun`` (or any env:// launcher) is present."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_from_env(device: torch.device) -> None:
    """Join the process group described by torchrun's environment (gloo on CPU, NCCL on CUDA)."""
    if is_initialized() or not launched_by_torchrun():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)


def barrier() -> None:
    if is_initialized():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns each rank the gradient of its own slice, summed over
    ranks: the gradient a single process would get on the concatenated batch."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        n = grad.shape[0] // world_size()
        return grad[rank() * n : (rank() + 1) * n]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, keeping the gradient path.

    Each rank must pass a tensor of the same shape. Identity in one process.
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0. NOTE: all_gather has no gradient."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, 0)


@torch.no_grad()
def gather_uneven(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0 when ranks hold different numbers of rows
    (the other dims must agree): sizes are exchanged, rows padded to the largest, gathered and
    trimmed. No gradient. Identity in one process."""
    if world_size() == 1:
        return x
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    sizes = [int(s) for s in sizes]
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes)], 0)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place on a copy). Not differentiable: use for statistics only."""
    if world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(x) / world_size()


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over ranks (a copy). Not differentiable."""
    return _reduce(x, dist.ReduceOp.MAX)


def all_reduce_min(x: torch.Tensor) -> torch.Tensor:
    """Element-wise minimum over ranks (a copy). Not differentiable."""
    return _reduce(x, dist.ReduceOp.MIN)


def _reduce(x: torch.Tensor, op) -> torch.Tensor:
    if world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x, op=op)
    return x


def broadcast(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    if world_size() > 1:
        dist.broadcast(x, src)
    return x


class _AllReduceSumWithGrad(torch.autograd.Function):
    """Sum over ranks whose backward sums the incoming gradients over ranks too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks (identity in one process)."""
    if world_size() == 1:
        return x
    return _AllReduceSumWithGrad.apply(x)


class SyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """Batch norm with statistics over the global batch of all ranks, on any device.

    ``torch.nn.SyncBatchNorm`` refuses CPU tensors, so the gloo (CPU) path and the tests use
    this one; with one process it is exactly ``BatchNorm``. Mean and variance come from the
    all-reduced sums of x and x^2 (fp32), differentiable through the reduction.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        dims = [0, *list(range(2, x.dim()))]
        xf = x.float()
        count = torch.tensor([xf.numel() / xf.shape[1]], device=x.device, dtype=torch.float32)
        stats = all_reduce_sum_with_grad(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c : 2 * c] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp(min=1))
                self.num_batches_tracked.add_(1)
        shape = [1, c] + [1] * (x.dim() - 2)
        out = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def convert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every BatchNorm by a global-batch one (torch's on CUDA, ours elsewhere)."""
    converted = module
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (SyncBatchNorm, torch.nn.SyncBatchNorm)
    ):
        converted = SyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            converted.weight = module.weight
            converted.bias = module.bias
        if module.track_running_stats:
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
    for name, child in module.named_children():
        converted.add_module(name, convert_sync_batchnorm(child))
    return converted
