"""Image grids of conditional generations and prior samples.

``save_generation_grids`` writes, for every conditioning subset S, ``from_<m0+m1>.png``: the
inputs of every image modality (one row each), a wider gap, then every image modality generated
from ``q(z | X_S)`` (one row each; the rows of the modalities in S are reconstructions, the
others cross-generations). ``prior_samples.png`` holds one row per modality of decodings of
``z ~ N(0, I)`` (``<name>_samples.png`` for latents from another sampler of
:mod:`crmvae.samplers`). Columns are examples. Token modalities with a text decoder (``decode_text``,
e.g. :attr:`MultimodalDataset.text_decoders <crmvae.data.MultimodalDataset>`) are written in a
panel below the images: per modality the inputs, then the generations (argmax tokens), one line
``column: text`` each. Other modalities can condition but are not drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .data.base import Batch
from .errors import ConfigError
from .fileio import atomic_write, make_dir
from .model import MultimodalVAE
from .samplers import LatentSampler, PriorSampler
from .seeding import private_rng

log = logging.getLogger(__name__)

#: Colour of the gaps between cells.
BACKGROUND = (255, 255, 255)
#: Text panel: text colour, margin and line spacing (pixels), and the narrowest panel.
TEXT_COLOUR = (0, 0, 0)
TEXT_MARGIN = 4
LINE_SPACING = 2
MIN_TEXT_WIDTH = 360

TextDecoder = Callable[[Tensor], list[str]]


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


def wrap_text(text: str, width: int, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont) -> list[str]:
    """Greedy word wrap of ``text`` into lines at most ``width`` pixels wide; a word wider than a
    line is cut between characters."""
    lines, line = [], ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if draw.textlength(candidate, font=font) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = ""
        for char in word:
            if line and draw.textlength(line + char, font=font) > width:
                lines.append(line)
                line = ""
            line += char
    return [*lines, line]


def text_panel(lines: Sequence[str], width: int) -> Image.Image:
    """A white panel ``width`` pixels wide holding ``lines``, each wrapped to the width, in PIL's
    default font."""
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [part for line in lines for part in wrap_text(line, width - 2 * TEXT_MARGIN, draw, font)]
    height = draw.textbbox((0, 0), "Ayg", font=font)[3] + LINE_SPACING
    panel = Image.new("RGB", (width, 2 * TEXT_MARGIN + height * len(wrapped)), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    for i, line in enumerate(wrapped):
        draw.text((TEXT_MARGIN, TEXT_MARGIN + i * height), line, fill=TEXT_COLOUR, font=font)
    return panel


def text_lines(texts: Mapping[str, Sequence[str]]) -> list[str]:
    """Per heading, the heading then ``"j: text"`` for each column ``j``."""
    return [line for heading, column in texts.items() for line in [heading, *(f"{j}: {t}" for j, t in enumerate(column))]]


def with_text(grid: Image.Image, texts: Mapping[str, Sequence[str]]) -> Image.Image:
    """``grid`` above the :func:`text_panel` of ``texts`` (``grid`` itself when there are none),
    both as wide as the wider of the grid and :data:`MIN_TEXT_WIDTH`."""
    if not texts:
        return grid
    panel = text_panel(text_lines(texts), max(grid.width, MIN_TEXT_WIDTH))
    out = Image.new("RGB", (panel.width, grid.height + panel.height), BACKGROUND)
    out.paste(grid, (0, 0))
    out.paste(panel, (0, grid.height))
    return out


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
    decode_text: Mapping[str, TextDecoder] | None = None,
    sampler: LatentSampler | None = None,
) -> list[Path]:
    """Write ``from_<subset>.png`` for each subset (default: each single modality) and
    ``<sampler>_samples.png`` (latents from ``sampler``, default the prior: ``prior_samples.png``)
    into ``out_dir``; return their paths.

    ``batch`` supplies the conditioning examples (one column each). Latents are sampled with
    a private RNG seeded by ``seed``, so the images are deterministic and the global RNG is
    left untouched. ``decode_text[m]`` turns token ids ``[N, L]`` of modality ``m`` (on the
    CPU) into N strings, written below the images.
    """
    data, mask = (batch.data, batch.mask) if isinstance(batch, Batch) else (dict(batch), None)
    shown = image_modalities(model)
    decoders = dict(decode_text or {})
    unknown = sorted(set(decoders) - set(model.modality_names))
    if unknown:
        raise ConfigError(f"text decoders for {unknown}, which the model lacks; it has {model.modality_names}")
    skipped = sorted(set(model.modality_names) - set(shown) - set(decoders))
    if skipped:
        log.warning("generation grids: modalities %s are not images and have no text decoder; not drawn", skipped)
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
    make_dir(out_dir)
    was_training = model.training
    model.eval()
    paths = []
    try:
        with private_rng(seed, device):
            inputs = [data[name] for name in shown]
            given = {f"{m}, input": decode(data[m].cpu()) for m, decode in decoders.items() if m in data}
            targets = shown + list(decoders)
            for subset in subsets:
                generated = model.generate(data, subset=subset, targets=targets, mask=mask)
                grid = image_grid(inputs + [generated[name] for name in shown], group_gaps={len(shown) - 1: 6})
                texts = {f"{m}, from {'+'.join(subset)}": decode(generated[m].cpu()) for m, decode in decoders.items()}
                paths.append(_save(with_text(grid, given | texts), out_dir / subset_filename(subset)))
            n = next(iter(data.values())).shape[0]
            generator = torch.Generator(device).manual_seed(seed)
            sampler = sampler or PriorSampler(model.latent_dim)
            samples = model.decode(sampler.sample(n, generator=generator, device=device), targets)
            texts = {f"{m}, {sampler.name} sample": decode(samples[m].cpu()) for m, decode in decoders.items()}
            grid = with_text(image_grid([samples[name] for name in shown]), texts)
            paths.append(_save(grid, out_dir / f"{sampler.name}_samples.png"))
    finally:
        model.train(was_training)
    return paths


def _save(image: Image.Image, path: Path) -> Path:
    return atomic_write(path, lambda f: image.save(f, format="PNG"))
