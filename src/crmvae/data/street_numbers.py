"""Synthetic street numbers: an offline, SVHN-like ``uint8 [N, 3, 32, 32]`` digit modality.

A substitute for SVHN's cropped house-number photos, built from what the installed packages
ship. Every image shows its label's digit in the centre, with parts of neighbouring digits at
the sides, as SVHN's 32x32 crops do:

1. a glyph bank, rendered once: every digit of every usable TrueType font that matplotlib
   bundles, an alpha mask scaled to :data:`GLYPH_HEIGHT` px and centred in a
   :data:`GLYPH` x :data:`GLYPH` canvas (fonts with a blank or duplicated digit are dropped);
2. per image, drawn from the seed: font, digit height (:data:`HEIGHT_RANGE` px), horizontal
   stretch, rotation, offset, and a left and a right neighbour (each present with probability
   :data:`NEIGHBOUR_PROB`, same font, at the font's width plus a gap);
3. background: a random square crop (32..96 px, resized to 32) of a scikit-image photo, blended
   with a random, partly desaturated plate colour; foreground: a random colour whose luminance
   differs from the background's mean by at least :data:`MIN_CONTRAST` (before clipping);
4. ``image = background * (1 - alpha) + colour * alpha``, then a Gaussian blur
   (sigma in [0, :data:`MAX_BLUR`]), Gaussian noise (sd in [0, :data:`MAX_NOISE`]), rounding.

All compositing is batched tensor work (``grid_sample`` for the glyphs and crops, grouped
convolutions for the blur) in chunks of :data:`CHUNK` images; the result depends only on the
seed, the labels, the photos and the glyph bank.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ..errors import DataError

GENERATOR_VERSION = 1
SIZE = 32
IMAGE_SHAPE = (3, SIZE, SIZE)
#: Fonts without usable digits: blank glyphs (Display) or maths symbols (cmex, cmsy, cmmi).
SKIPPED_FONTS = ("DejaVuSansDisplay.ttf", "DejaVuSerifDisplay.ttf", "cmex10.ttf", "cmsy10.ttf", "cmmi10.ttf")
GLYPH = 48
GLYPH_HEIGHT = 28
RENDER_SIZE = 96
HEIGHT_RANGE = (15.0, 26.0)
STRETCH_RANGE = (0.8, 1.25)
MAX_ROTATION = 12.0  # degrees
MAX_OFFSET = 2.0  # pixels, per axis
GAP_RANGE = (1.0, 5.0)  # pixels between neighbouring digits, in the glyph bank
NEIGHBOUR_PROB = 0.75
CROP_RANGE = (32.0, 96.0)
PLATE_RANGE = (0.1, 0.8)
MAX_SATURATION = 0.7
MIN_CONTRAST = 0.3
MAX_BLUR = 1.2
MAX_NOISE = 0.04
CHUNK = 4096
_LUMA = torch.tensor([0.299, 0.587, 0.114])


# --------------------------------------------------------------------------------------------
# the glyph bank


def font_dir() -> Path:
    """matplotlib's bundled TrueType folder."""
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def font_files() -> list[Path]:
    """The candidate fonts: every bundled ``.ttf`` except :data:`SKIPPED_FONTS`, sorted."""
    return sorted(p for p in font_dir().glob("*.ttf") if p.name not in SKIPPED_FONTS)


def render_glyph(font: ImageFont.FreeTypeFont, digit: int) -> np.ndarray:
    """``float32 [GLYPH, GLYPH]`` alpha in [0, 1] of ``digit``: its ink box scaled to
    :data:`GLYPH_HEIGHT` rows (width by the same factor, at most :data:`GLYPH`), centred.
    All zeros when the font draws nothing."""
    canvas = Image.new("L", (2 * RENDER_SIZE, 2 * RENDER_SIZE), 0)
    ImageDraw.Draw(canvas).text((RENDER_SIZE, RENDER_SIZE), str(digit), fill=255, font=font, anchor="mm")
    box = canvas.getbbox()
    out = np.zeros((GLYPH, GLYPH), dtype=np.float32)
    if box is None:
        return out
    ink = canvas.crop(box)
    width = min(GLYPH, max(1, round(ink.width * GLYPH_HEIGHT / ink.height)))
    ink = np.asarray(ink.resize((width, GLYPH_HEIGHT), Image.Resampling.LANCZOS), dtype=np.float32)
    top, left = (GLYPH - GLYPH_HEIGHT) // 2, (GLYPH - width) // 2
    out[top : top + GLYPH_HEIGHT, left : left + width] = ink / 255.0
    return out


@cache
def glyph_bank() -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """``(alpha float32 [F, 10, GLYPH, GLYPH], widths float32 [F, 10] in bank pixels, font
    names)`` over the fonts of :func:`font_files` whose ten digits are all drawn and distinct."""
    glyphs, names = [], []
    for path in font_files():
        try:
            font = ImageFont.truetype(str(path), RENDER_SIZE)
        except OSError:
            continue  # not a loadable font: not a candidate
        digits = np.stack([render_glyph(font, d) for d in range(10)])
        ink = (digits > 0.5).reshape(10, -1)
        if ink.sum(1).min() > 0 and len({row.tobytes() for row in ink}) == 10:
            glyphs.append(digits)
            names.append(path.name)
    if not glyphs:
        raise DataError(f"{font_dir()}: no TrueType font draws the ten digits (is matplotlib intact?)")
    alpha = torch.from_numpy(np.stack(glyphs))
    columns = (alpha > 0.05).any(dim=2)  # [F, 10, GLYPH]: columns holding ink
    widths = columns.sum(-1).float()
    return alpha, widths, tuple(names)


def glyph_bank_sha256() -> str:
    """sha256 of the glyph bank's bytes (it depends on the installed matplotlib and Pillow)."""
    alpha, _, names = glyph_bank()
    digest = hashlib.sha256(alpha.numpy().tobytes())
    digest.update("\n".join(names).encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# random parameters


def sample_params(
    labels: np.ndarray, num_fonts: int, num_backgrounds: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Every per-image random choice, as arrays of length N (neighbour digits -1 when absent;
    ``crop`` is (side, centre row, centre column) as fractions, resolved per photo later)."""
    n = len(labels)

    def uniform(lo_hi: tuple[float, float], *shape: int) -> np.ndarray:
        return rng.uniform(*lo_hi, size=(n, *shape)).astype(np.float32)

    neighbours = rng.integers(0, 10, size=(n, 2))
    neighbours[rng.random((n, 2)) >= NEIGHBOUR_PROB] = -1
    return {
        "label": np.asarray(labels, dtype=np.int64),
        "font": rng.integers(0, num_fonts, size=n),
        "neighbours": neighbours,
        "height": uniform(HEIGHT_RANGE),
        "stretch": uniform(STRETCH_RANGE),
        "rotation": uniform((-MAX_ROTATION, MAX_ROTATION)),
        "offset": uniform((-MAX_OFFSET, MAX_OFFSET), 2),
        "gap": uniform(GAP_RANGE, 2),
        "background": rng.integers(0, num_backgrounds, size=n),
        "crop": uniform((0.0, 1.0), 3),
        "plate": uniform((0.0, 1.0), 3),
        "plate_saturation": uniform((0.0, MAX_SATURATION)),
        "plate_weight": uniform(PLATE_RANGE),
        "colour": uniform((0.0, 1.0), 3),
        "colour_saturation": uniform((0.0, MAX_SATURATION)),
        "contrast": uniform((MIN_CONTRAST, MIN_CONTRAST + 0.4)),
        "blur": uniform((0.0, MAX_BLUR)),
        "noise": uniform((0.0, MAX_NOISE)),
    }


# --------------------------------------------------------------------------------------------
# compositing


def affine_grid(theta: Tensor) -> Tensor:
    """``F.affine_grid(theta, [N, C, 32, 32], align_corners=False)`` by broadcasting (the same
    values; much faster for many tiny batches): ``grid[n, i, j] = theta[n] @ (u_j, u_i, 1)``
    with pixel centres ``u_k = (2k + 1) / 32 - 1``."""
    u = (2 * torch.arange(SIZE, dtype=theta.dtype) + 1) / SIZE - 1
    x, y = u[None, None, :], u[None, :, None]
    t = theta[:, :, :, None, None]  # [N, 2, 3, 1, 1]
    return (t[:, :, 0] * x + t[:, :, 1] * y + t[:, :, 2]).permute(0, 2, 3, 1)


def glyph_affines(params: dict[str, Tensor], widths: Tensor) -> Tensor:
    """``[N, 3, 2, 3]`` affine maps (``grid_sample`` convention, ``align_corners=False``) from
    output coordinates to the glyph canvas of the centre, left and right digit.

    Output offset ``p`` (px from the image centre) maps to bank offset
    ``q = K R(-angle) (p - offset)`` with ``K = diag(GLYPH_HEIGHT / (height * stretch),
    GLYPH_HEIGHT / height)``; a neighbour's canvas is shifted by ``+-(w_c/2 + w_n/2 + gap)``.
    """
    angle = torch.deg2rad(params["rotation"])
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # R(-angle)
    k = GLYPH_HEIGHT / params["height"]
    scale = torch.stack([k / params["stretch"], k], -1)  # [N, 2]
    a = scale[:, :, None] * rot  # bank px per output px
    linear = a * (SIZE / GLYPH)  # normalised output -> normalised bank
    shift = -(a @ params["offset"][:, :, None]).squeeze(-1) * (2.0 / GLYPH)
    centre_w = widths[params["font"], params["label"]]
    side_w = widths[params["font"][:, None], params["neighbours"].clamp_min(0)]  # [N, 2]
    advance = (centre_w[:, None] + side_w) / 2 + params["gap"]  # [N, 2] bank px
    shifts = [shift, shift.clone(), shift.clone()]
    shifts[1][:, 0] += advance[:, 0] * (2.0 / GLYPH)  # the left digit lies at -advance
    shifts[2][:, 0] -= advance[:, 1] * (2.0 / GLYPH)
    theta = [torch.cat([linear, s[:, :, None]], -1) for s in shifts]
    return torch.stack(theta, 1)


def glyph_alpha(params: dict[str, Tensor], alpha_bank: Tensor, widths: Tensor) -> Tensor:
    """``float [N, 1, 32, 32]``: the union ``1 - prod_k (1 - a_k)`` of the placed digits."""
    n = params["label"].shape[0]
    grid = affine_grid(glyph_affines(params, widths).reshape(n * 3, 2, 3))
    digits = torch.cat([params["label"][:, None], params["neighbours"]], 1)  # [N, 3]
    present = (digits >= 0).float().reshape(n * 3, 1, 1, 1)
    fonts = params["font"][:, None].expand(-1, 3).reshape(-1)
    glyphs = alpha_bank[fonts, digits.clamp_min(0).reshape(-1)][:, None]  # [3N, 1, G, G]
    placed = F.grid_sample(glyphs, grid, align_corners=False) * present
    return 1 - (1 - placed.reshape(n, 3, SIZE, SIZE)).prod(1, keepdim=True)


def background_crops(params: dict[str, Tensor], photos: Sequence[Tensor]) -> Tensor:
    """``float [N, 3, 32, 32]``: square crops (side in :data:`CROP_RANGE`, clipped to the photo)
    of each example's photo, resized bilinearly to 32x32."""
    n = params["label"].shape[0]
    out = torch.empty(n, 3, SIZE, SIZE)
    side_frac, row_frac, col_frac = params["crop"].unbind(1)
    for b, photo in enumerate(photos):  # photo: float [1, 3, H, W]
        rows = (params["background"] == b).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        h, w = photo.shape[-2:]
        side = (CROP_RANGE[0] + side_frac[rows] * (CROP_RANGE[1] - CROP_RANGE[0])).clamp(max=min(h, w))
        cy = side / 2 + row_frac[rows] * (h - side)
        cx = side / 2 + col_frac[rows] * (w - side)
        zero = torch.zeros_like(side)
        theta = torch.stack([
            torch.stack([side / w, zero, 2 * cx / w - 1], -1),
            torch.stack([zero, side / h, 2 * cy / h - 1], -1),
        ], 1)  # fmt: skip
        tall = affine_grid(theta).reshape(1, len(rows) * SIZE, SIZE, 2)  # crops stacked: 1 input
        crops = F.grid_sample(photo, tall, align_corners=False)  # [1, 3, n_b * 32, 32]
        out[rows] = crops.reshape(3, len(rows), SIZE, SIZE).transpose(0, 1)
    return out


def desaturate(colour: Tensor, saturation: Tensor) -> Tensor:
    """``grey + saturation * (colour - grey)`` per row of ``colour [N, 3]``, grey = its luminance."""
    grey = (colour @ _LUMA)[:, None]
    return grey + saturation[:, None] * (colour - grey)


def contrasting_colour(colour: Tensor, background_luma: Tensor, contrast: Tensor) -> Tensor:
    """Shift ``colour [N, 3]`` so its luminance is ``background_luma -+ contrast`` (away from
    the background: darker on light backgrounds, lighter on dark ones), clipped to [0, 1]."""
    sign = torch.where(background_luma > 0.5, -1.0, 1.0)
    target = (background_luma + sign * contrast).clamp(0.0, 1.0)
    return (colour + (target - colour @ _LUMA)[:, None]).clamp(0.0, 1.0)


def gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur of ``[N, C, S, S]`` with a per-image ``sigma [N]``:
    ``B X B^T`` with ``B[i, j] = sum_k w_k [clip(i + k, 0, S - 1) == j]``, 5 taps
    ``w_k ~ exp(-k^2 / (2 sigma^2))``, k = -2..2, normalised (replicate padding)."""
    size = images.shape[-1]
    taps = torch.arange(-2, 3)
    weights = torch.exp(-(taps.to(images.dtype) ** 2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    weights = weights / weights.sum(1, keepdim=True)  # [N, 5]
    source = (torch.arange(size)[:, None] + taps).clamp(0, size - 1)  # [S, 5]
    shifts = F.one_hot(source, size).permute(1, 0, 2).to(images.dtype)  # [5, S, S]
    blur = torch.einsum("nk,kij->nij", weights, shifts)[:, None]  # [N, 1, S, S]
    return blur @ images @ blur.transpose(-1, -2)


def composite(
    params: dict[str, Tensor],
    photos: Sequence[Tensor],
    alpha_bank: Tensor,
    widths: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Render ``params`` (:func:`sample_params` as tensors) as ``uint8 [N, 3, 32, 32]``; the
    pixel noise is drawn from ``generator``."""
    alpha = glyph_alpha(params, alpha_bank, widths)
    weight = params["plate_weight"][:, None, None, None]
    plate = desaturate(params["plate"], params["plate_saturation"])[:, :, None, None]
    background = background_crops(params, photos) * (1 - weight) + plate * weight
    luma = torch.einsum("nchw,c->n", background, _LUMA) / (SIZE * SIZE)
    colour = desaturate(params["colour"], params["colour_saturation"])
    colour = contrasting_colour(colour, luma, params["contrast"])[:, :, None, None]
    image = gaussian_blur(background * (1 - alpha) + colour * alpha, params["blur"])
    noise = torch.randn(image.shape, generator=generator)
    image = image + params["noise"][:, None, None, None] * noise
    return image.mul(255).round_().clamp_(0, 255).to(torch.uint8)


def photo_tensor(photo: np.ndarray) -> Tensor:
    """``uint8 [H, W, 3]`` -> ``float [1, 3, H, W]`` in [0, 1]."""
    return torch.tensor(photo, dtype=torch.float32).permute(2, 0, 1)[None].div_(255).contiguous()


def render_street_numbers(
    labels: np.ndarray, photos: Sequence[np.ndarray], rng: np.random.Generator
) -> tuple[Tensor, dict[str, Tensor]]:
    """Street-number images ``uint8 [N, 3, 32, 32]`` whose centre digit is ``labels[i]``, on
    crops of ``photos`` (``uint8 [H, W, 3]`` each), and the parameters that made them.

    Rendered in chunks of :data:`CHUNK`; the noise comes from one torch generator seeded from
    ``rng``, consumed chunk by chunk.
    """
    alpha_bank, widths, names = glyph_bank()
    params = {
        k: torch.from_numpy(v)
        for k, v in sample_params(labels, len(names), len(photos), rng).items()
    }
    generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    tensors = [photo_tensor(p) for p in photos]
    images = torch.empty(len(labels), *IMAGE_SHAPE, dtype=torch.uint8)
    for start in range(0, len(labels), CHUNK):
        part = {k: v[start : start + CHUNK] for k, v in params.items()}
        images[start : start + CHUNK] = composite(part, tensors, alpha_bank, widths, generator)
    return images, params
