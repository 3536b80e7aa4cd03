"""A masked autoregressive flow (MAF, Papamakarios et al. 2017) over vectors, for density
estimation of the aggregate posterior.

A MADE block (Germain et al. 2015) is an MLP whose weights are masked so that its outputs
``shift_i`` and ``log_scale_i`` depend only on the inputs before ``i`` in the block's order. It
maps ``x`` to ``u_i = (x_i - shift_i(x_<i)) * exp(-log_scale_i(x_<i))``, whose Jacobian is
triangular with ``log |du/dx| = -sum_i log_scale_i``. The flow standardises ``x`` with fixed
``loc`` and ``scale``, then applies its blocks in turn, each in the reverse order of the one
before, and scores

    log p(x) = sum_i log N(u_i; 0, 1) - sum_i log scale_i - sum_blocks sum_i log_scale_i.

Sampling inverts the blocks, one coordinate at a time in each block's order (D passes per block).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distributions import LOG_2PI


def made_masks(order: Tensor, hidden: int, layers: int) -> list[Tensor]:
    """The masks ``[out, in]`` of a MADE over ``D = len(order)`` inputs taken in ``order`` (a
    permutation of ``0..D-1``), with ``layers`` hidden layers of ``hidden`` units and 2D outputs
    (shifts, then log-scales).

    Input ``i`` has degree ``d_i`` = its position in ``order`` plus 1; hidden units get degrees
    spread evenly over ``1..D-1``. A unit sees a unit below it when its degree is at least the
    other's, and an output of degree ``d`` sees hidden units of degree below ``d``, so output ``i``
    depends on the inputs of lower degree only."""
    dim = order.numel()
    inputs = torch.empty(dim, dtype=torch.long)
    inputs[order] = torch.arange(1, dim + 1)
    units = torch.linspace(1, max(dim - 1, 1), hidden).floor().long()
    degrees = [inputs] + [units] * layers
    masks = [(degrees[k + 1][:, None] >= degrees[k][None, :]).float() for k in range(layers)]
    masks.append((inputs.repeat(2)[:, None] > degrees[-1][None, :]).float())
    return masks


class MaskedLinear(nn.Linear):
    """``y = x (W * mask)^T + b``."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """One autoregressive block: ``x [n, D] -> (shift, log_scale)``, each ``[n, D]``, output ``i``
    a function of the inputs before ``i`` in ``order``. The last layer starts at zero, so a new
    block is the identity."""

    def __init__(self, order: Tensor, hidden: int, layers: int) -> None:
        super().__init__()
        self.register_buffer("order", order.clone())
        masks = made_masks(order, hidden, layers)
        modules: list[nn.Module] = []
        for mask in masks[:-1]:
            modules += [MaskedLinear(mask), nn.ReLU()]
        last = MaskedLinear(masks[-1])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*modules, last)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale = self.net(x).chunk(2, dim=-1)
        return shift, log_scale


class MAF(nn.Module):
    """A stack of ``blocks`` MADEs over ``dim`` coordinates (orders alternately ``0..D-1`` and
    reversed), after the fixed standardisation ``(x - loc) / scale`` (see the module docstring)."""

    def __init__(self, dim: int, blocks: int = 2, hidden: int = 128, layers: int = 3) -> None:
        super().__init__()
        forward_order = torch.arange(dim)
        self.blocks = nn.ModuleList(MADE(forward_order if k % 2 == 0 else forward_order.flip(0), hidden, layers)
                                    for k in range(blocks))
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    @property
    def dim(self) -> int:
        return self.loc.numel()

    def to_base(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(u, log |du/dx|)`` for points ``x`` ``[n, D]``: ``u`` ``[n, D]``, the log-determinant ``[n]``."""
        u = (x - self.loc) / self.scale
        log_det = -self.scale.log().sum().expand(x.shape[0])
        for block in self.blocks:
            shift, log_scale = block(u)
            u = (u - shift) * torch.exp(-log_scale)
            log_det = log_det - log_scale.sum(-1)
        return u, log_det

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` ``[n]`` by the change of variables to ``u ~ N(0, I)``."""
        u, log_det = self.to_base(x)
        return -0.5 * (u.square().sum(-1) + self.dim * LOG_2PI) + log_det

    @torch.no_grad()
    def from_base(self, u: Tensor) -> Tensor:
        """The ``x`` whose :meth:`to_base` is ``u`` ``[n, D]``: each block inverted one coordinate
        at a time, in its order (coordinate ``order[t]`` needs only those before it)."""
        x = u
        for block in reversed(self.blocks):
            target, x = x, torch.zeros_like(x)
            for i in block.order.tolist():
                shift, log_scale = block(x)
                x[:, i] = target[:, i] * torch.exp(log_scale[:, i]) + shift[:, i]
        return x * self.scale + self.loc


def fit_maf(
    points: Tensor, blocks: int, hidden: int, layers: int, epochs: int, lr: float, batch_size: int,
    generator: torch.Generator,
) -> tuple[MAF, list[float]]:
    """A :class:`MAF` fitted to ``points`` ``[n, D]`` by maximum likelihood (Adam, ``epochs``
    shuffled passes in batches of ``batch_size``), standardised by their mean and standard
    deviation, its initial weights and the shuffles drawn from ``generator`` alone; returns it in
    eval mode and the mean negative log-likelihood of each epoch.
    Raises ``FloatingPointError`` when a loss becomes NaN or infinite."""
    with torch.random.fork_rng(devices=[]):  # the initial weights come from ``generator`` too
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        flow = MAF(points.shape[1], blocks, hidden, layers)
    flow.loc.copy_(points.mean(0))
    flow.scale.copy_(points.std(0).clamp_min(1e-6) if len(points) > 1 else torch.ones(points.shape[1]))
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    history = []
    for epoch in range(epochs):
        order = torch.randperm(len(points), generator=generator)
        total = 0.0
        for start in range(0, len(points), batch_size):
            batch = points[order[start:start + batch_size]]
            loss = -flow.log_prob(batch).mean()
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"the flow's negative log-likelihood became {loss.item()} in epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        history.append(total / len(points))
    return flow.eval(), history
