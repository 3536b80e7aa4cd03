"""Image grids of conditional generations and prior samples.

``save_generation_grids`` writes, for every conditioning subset S, ``from_<m0+m1>.png``: the
inputs of every image modality (one row each), a wider gap, then every image modality generated
from ``q(z | X_S)`` (one row each; the rows of the modalities in S are reconstructions, the
others cross-generations). ``prior_samples.png`` holds one row per modality of decodings of
``z ~ N(0, I)``. Columns are examples. Non-image modalities can condition but are not drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .data.base import Batch
from .errors import ConfigError
from .model import MultimodalVAE
from .seeding import private_rng

log = logging.getLogger(__name__)

#: Colour of the gaps between cells.
BACKGROUND = (255, 255, 255)


def image_grid(rows: Sequence[Tensor], gap: int = 2, group_gaps: Mapping[int, int] | None = None) -> Image.Image:
    """One RGB image of ``rows`` (each ``[N, C, H, W]``, C = 1 or 3) laid out row by row.

    Values are clamped to [0, 1]; greyscale is repeated to RGB. Rows may differ in size (MNIST
    28x28 beside SVHN 32x32): every cell is as large as the largest image and smaller images are
    centred in it. Cells are separated by ``gap`` pixels; ``group_gaps[i]`` widens the gap after
    row ``i`` (to separate blocks of rows).
    """
    if not rows:
        raise ValueError("image_grid needs at least one row")
    shapes = {tuple(r.shape[1:]) for r in rows}
    if any(len(s) != 3 or s[0] not in (1, 3) for s in shapes):
        raise ValueError(f"rows must hold [N, 1|3, H, W] images, got {sorted(shapes)}")
    h = max(s[1] for s in shapes)
    w = max(s[2] for s in shapes)
    cols = max(r.shape[0] for r in rows)
    extra = group_gaps or {}
    tops = np.cumsum([0] + [h + gap + extra.get(i, 0) for i in range(len(rows) - 1)])
    canvas = np.empty((int(tops[-1]) + h, cols * (w + gap) - gap, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    for top, row in zip(tops, rows):
        pixels = row.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
        pixels = pixels.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()  # [N, H, W, 3]
        dy, dx = (h - pixels.shape[1]) // 2, (w - pixels.shape[2]) // 2
        for j, cell in enumerate(pixels):
            left = j * (w + gap) + dx
            canvas[top + dy : top + dy + cell.shape[0], left : left + cell.shape[1]] = cell
    return Image.fromarray(canvas)


def image_modalities(model: MultimodalVAE) -> list[str]:
    """The model's modalities whose examples are images ``[C, H, W]`` with C = 1 or 3."""
    return [name for name, shape in model.shapes.items() if len(shape) == 3 and shape[0] in (1, 3)]


def subset_filename(subset: Sequence[str]) -> str:
    """``from_<m0+m1>.png`` for the conditioning subset ``["m0", "m1"]``."""
    return f"from_{'+'.join(subset)}.png"


@torch.no_grad()
def save_generation_grids(
    model: MultimodalVAE,
    batch: Batch | Mapping[str, Tensor],
    out_dir: str | Path,
    subsets: Sequence[Sequence[str]] | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write ``from_<subset>.png`` for each subset (default: each single modality) and
    ``prior_samples.png`` into ``out_dir``; return their paths.

    ``batch`` supplies the conditioning examples (one column each). Latents are sampled with
    a private RNG seeded by ``seed``, so the images are deterministic and the global RNG is
    left untouched.
    """
    data, mask = (batch.data, batch.mask) if isinstance(batch, Batch) else (dict(batch), None)
    shown = image_modalities(model)
    skipped = sorted(set(model.modality_names) - set(shown))
    if skipped:
        log.warning("generation grids: modalities %s are not images and are not drawn", skipped)
    if not shown:
        return []
    subsets = [[name] for name in model.modality_names] if subsets is None else [list(s) for s in subsets]
    for subset in subsets:
        unknown = sorted(set(subset) - set(data))
        if not subset or unknown:
            raise ConfigError(
                f"conditioning subset {subset} is empty or names modalities {unknown} that are not in "
                f"the data; available: {sorted(data)}"
            )
    device = next(model.parameters()).device
    data = {k: v.to(device) for k, v in data.items()}
    mask = None if mask is None else mask.to(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    paths = []
    try:
        with private_rng(seed, device):
            inputs = [data[name] for name in shown]
            for subset in subsets:
                generated = model.generate(data, subset=subset, targets=shown, mask=mask)
                grid = image_grid(inputs + [generated[name] for name in shown], group_gaps={len(shown) - 1: 6})
                paths.append(_save(grid, out_dir / subset_filename(subset)))
            n = next(iter(data.values())).shape[0]
            generator = torch.Generator(device).manual_seed(seed)
            samples = model.sample(n, targets=shown, generator=generator)
            paths.append(_save(image_grid([samples[name] for name in shown]), out_dir / "prior_samples.png"))
    finally:
        model.train(was_training)
    return paths


def _save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path
