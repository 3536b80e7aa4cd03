"""Layers shared by the networks. :func:`relu` is ``nn.ReLU(inplace=True)``. The others compute a
convolution as the matmul it is when its kernel spans the whole input (or, transposed, the whole
output): same parameters and state dict as the ``torch.nn`` layer, same outputs up to float
rounding, and on CPU faster forward and backward, because oneDNN runs such convolutions far
below matmul speed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def relu() -> nn.ReLU:
    """``nn.ReLU(inplace=True)``: the same function, written over its input instead of a new tensor
    (one allocation and one memory pass fewer per activation; about 2.5% of a PolyMNIST CRMVAE
    step). Use it only where the overwritten pre-activation is not needed again: after a
    convolution, linear layer or GroupNorm (they save their inputs for backward, not their outputs),
    never on a tensor that a skip connection reuses."""
    return nn.ReLU(inplace=True)


class WholeInputConv2d(nn.Conv2d):
    """A ``Conv2d`` (no padding) whose kernel covers its whole input, computed as the matmul it is::

        y[b, o, 0, 0] = sum_{c, h, w} W[o, c, h, w] x[b, c, h, w] + bias[o]

    Same parameters and state dict as ``nn.Conv2d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != self.kernel_size or self.padding != (0, 0):
            raise ValueError(
                f"WholeInputConv2d with kernel {self.kernel_size} and padding {self.padding} got an input "
                f"of spatial size {tuple(x.shape[-2:])}: the kernel must cover the whole unpadded input"
            )
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            order = (0, 2, 3, 1)  # NHWC in memory: flatten (h, w, c) on both sides, no copy
            flat, weight = x.permute(order).flatten(1), self.weight.permute(order).flatten(1)
        else:
            flat, weight = x.flatten(1), self.weight.flatten(1)
        return F.linear(flat, weight, self.bias)[:, :, None, None]


class WholeOutputConvTranspose2d(nn.ConvTranspose2d):
    """A ``ConvTranspose2d`` (no padding) applied to a 1x1 input, so that its kernel is the whole
    output, computed as the matmul it is::

        y[b, o, h, w] = sum_c x[b, c, 0, 0] W[c, o, h, w] + bias[o]

    Same parameters and state dict as ``nn.ConvTranspose2d``.
    """

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if output_size is not None and tuple(output_size[-2:]) != self.kernel_size:
            raise ValueError(f"WholeOutputConvTranspose2d makes {self.kernel_size} outputs, not {tuple(output_size[-2:])}")
        if tuple(x.shape[-2:]) != (1, 1) or self.padding != (0, 0) or self.output_padding != (0, 0):
            raise ValueError(
                f"WholeOutputConvTranspose2d with padding {self.padding} and output padding "
                f"{self.output_padding} got an input of spatial size {tuple(x.shape[-2:])}: it takes 1x1 "
                "inputs without padding"
            )
        out = x.flatten(1) @ self.weight.flatten(1)  # [B, O * kh * kw]
        bias = 0.0 if self.bias is None else self.bias[:, None, None]
        return out.view(x.shape[0], self.out_channels, *self.kernel_size) + bias
