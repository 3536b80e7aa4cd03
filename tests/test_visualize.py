"""Image grids and generation grids."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn

from crmvae.config import ModalityConfig, ModelConfig
from crmvae.data import Batch
from crmvae.errors import ConfigError
from crmvae.model import MultimodalVAE
from crmvae.nets import register_network
from crmvae.seeding import private_rng
from crmvae.visualize import (
    BACKGROUND,
    MIN_TEXT_WIDTH,
    image_grid,
    save_generation_grids,
    text_lines,
    text_panel,
    wrap_text,
)


class TinyEncoder(nn.Module):
    def __init__(self, size: int, latent_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(size, 2 * latent_dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.net(x).chunk(2, dim=-1)
        return mu, logvar


@register_network("test_tiny_mlp")
def tiny_mlp(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    size = math.prod(modality.shape)
    decoder = nn.Sequential(nn.Linear(latent_dim, size), nn.Sigmoid(), nn.Unflatten(1, tuple(modality.shape)))
    return TinyEncoder(size, latent_dim), decoder


VOCAB, LENGTH = 7, 5


@register_network("test_tiny_tokens")
def tiny_tokens(modality: ModalityConfig, latent_dim: int) -> tuple[nn.Module, nn.Module]:
    """One-hot ids -> linear encoder; linear decoder -> logits ``[L, V]``."""
    (length,) = modality.shape
    v = modality.vocab_size
    encoder = TinyEncoder(length * v, latent_dim)
    encoder.net.insert(0, OneHot(v))
    return encoder, nn.Sequential(nn.Linear(latent_dim, length * v), nn.Unflatten(1, (length, v)))


class OneHot(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, x: Tensor) -> Tensor:
        return F.one_hot(x, self.vocab_size).float()


@pytest.fixture
def model() -> MultimodalVAE:
    torch.manual_seed(0)
    return MultimodalVAE(ModelConfig(
        modalities=[
            ModalityConfig("grey", [1, 6, 5], "test_tiny_mlp", "laplace"),
            ModalityConfig("colour", [3, 6, 5], "test_tiny_mlp", "laplace"),
            ModalityConfig("vec", [4], "test_tiny_mlp", "normal"),
        ],
        latent_dim=3,
    ))


@pytest.fixture
def batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    data = {"grey": torch.rand(4, 1, 6, 5, generator=g), "colour": torch.rand(4, 3, 6, 5, generator=g),
            "vec": torch.randn(4, 4, generator=g)}
    return Batch(data, torch.ones(4, 3, dtype=torch.bool))


def test_image_grid_layout_clamping_and_greyscale() -> None:
    grey = torch.full((3, 1, 4, 5), 2.0)  # clamped to white
    colour = torch.zeros(2, 3, 4, 5)
    colour[:, 0] = -1.0  # clamped to black
    grid = image_grid([grey, colour], gap=2, group_gaps={0: 3})
    assert grid.mode == "RGB" and grid.size == (3 * 5 + 2 * 2, 2 * 4 + 2 + 3)
    pixels = np.asarray(grid)
    assert (pixels[:4, :5] == 255).all()  # greyscale shown as RGB white
    assert (pixels[9:, :5] == 0).all()  # second row starts after the widened gap
    assert (pixels[:, 5:7] == BACKGROUND).all()  # gap between columns
    assert (pixels[9:, 2 * 7 :] == BACKGROUND).all()  # the short row leaves its last cell empty


def test_generation_grids(model: MultimodalVAE, batch: Batch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = torch.get_rng_state()
    with caplog.at_level(logging.WARNING):
        paths = save_generation_grids(model, batch, tmp_path, subsets=[["grey"], ["grey", "vec"]], seed=3)
    assert "['vec'] are not images" in caplog.text
    assert [p.name for p in paths] == ["from_grey.png", "from_grey+vec.png", "prior_samples.png"]
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is untouched
    with Image.open(paths[0]) as image:  # 2 input rows, a wider gap, 2 generated rows; 4 columns
        assert image.size == (4 * 7 - 2, 4 * 8 - 2 + 6)
    with Image.open(paths[-1]) as image:
        assert image.size == (4 * 7 - 2, 2 * 8 - 2)
    first = [p.read_bytes() for p in paths]
    again = save_generation_grids(model, batch, tmp_path / "again", subsets=[["grey"], ["grey", "vec"]], seed=3)
    assert [p.read_bytes() for p in again] == first  # deterministic given the seed
    other = save_generation_grids(model, batch, tmp_path / "other", subsets=[["grey"]], seed=4)
    assert other[0].read_bytes() != first[0]


def test_generation_grids_default_subsets_and_errors(model: MultimodalVAE, batch: Batch, tmp_path: Path) -> None:
    paths = save_generation_grids(model, batch.data, tmp_path)
    assert [p.name for p in paths] == ["from_grey.png", "from_colour.png", "from_vec.png", "prior_samples.png"]
    with pytest.raises(ConfigError, match="nope"):
        save_generation_grids(model, batch, tmp_path, subsets=[["nope"]])


def test_image_grid_centres_smaller_images_in_the_largest_cell() -> None:
    small = torch.full((2, 1, 2, 2), 0.5)  # grey 2x2, e.g. MNIST beside SVHN
    large = torch.zeros(2, 3, 4, 6)
    pixels = np.asarray(image_grid([small, large], gap=1))
    assert pixels.shape == (4 + 1 + 4, 2 * 6 + 1, 3)
    assert (pixels[1:3, 2:4] == 128).all()  # centred: offsets (4-2)//2 = 1 and (6-2)//2 = 2
    assert (pixels[0, :6] == BACKGROUND).all() and (pixels[1:3, :2] == BACKGROUND).all()
    assert (pixels[1:3, 9:11] == 128).all()  # second column: 6 + 1 + 2
    assert (pixels[5:, :6] == 0).all()
    with pytest.raises(ValueError, match="1\\|3"):
        image_grid([torch.zeros(1, 2, 4, 4)])


def test_wrap_text_fits_the_width_and_keeps_every_character() -> None:
    font, draw = ImageFont.load_default(), ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text = "a small red circle on the left " * 6 + "x" * 80
    lines = wrap_text(text.strip(), 120, draw, font)
    assert len(lines) > 3 and all(draw.textlength(line, font=font) <= 120 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # words kept, the long one cut
    assert wrap_text("", 120, draw, font) == [""]


def test_generation_grids_write_the_decoded_text_below_the_images(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MultimodalVAE(ModelConfig(
        modalities=[
            ModalityConfig("grey", [1, 6, 5], "test_tiny_mlp", "laplace"),
            ModalityConfig("tok", [LENGTH], "test_tiny_tokens", "categorical", vocab_size=VOCAB),
        ],
        latent_dim=3,
    ))  # fmt: skip
    g = torch.Generator().manual_seed(2)
    data = {"grey": torch.rand(4, 1, 6, 5, generator=g), "tok": torch.randint(0, VOCAB, (4, LENGTH), generator=g)}
    batch = Batch(data, torch.ones(4, 2, dtype=torch.bool))
    calls: list[Tensor] = []

    def decode(tokens: Tensor) -> list[str]:
        calls.append(tokens)
        return ["w" + "".join(map(str, row)) for row in tokens.tolist()]

    paths = save_generation_grids(model, batch, tmp_path, subsets=[["grey"]], seed=3, decode_text={"tok": decode})
    assert [p.name for p in paths] == ["from_grey.png", "prior_samples.png"]
    # called on the input ids, then on the argmax of the generation from 'grey' (same seed, same z)
    with private_rng(3, torch.device("cpu")):
        expected = model.generate(data, subset=["grey"], targets=["grey", "tok"], mask=batch.mask)["tok"]
    assert len(calls) == 3 and torch.equal(calls[0], data["tok"]) and torch.equal(calls[1], expected)
    assert calls[2].shape == (4, LENGTH) and calls[2].dtype == torch.int64
    plain = save_generation_grids(model, batch, tmp_path / "plain", subsets=[["grey"]], seed=3)
    with Image.open(paths[0]) as grid, Image.open(plain[0]) as images_only:
        pixels, top = np.asarray(grid), np.asarray(images_only)
    height, width = top.shape[:2]
    assert pixels.shape[1] == MIN_TEXT_WIDTH and (pixels[:height, :width] == top).all()
    texts = {"tok, input": decode(data["tok"]), "tok, from grey": decode(expected)}
    panel = np.asarray(text_panel(text_lines(texts), MIN_TEXT_WIDTH))
    assert (panel < 100).any() and np.array_equal(pixels[height:], panel)
    assert text_lines(texts)[:2] == ["tok, input", f"0: {decode(data['tok'][:1])[0]}"]
    with pytest.raises(ConfigError, match=r"text decoders for \['nope'\]"):
        save_generation_grids(model, batch, tmp_path, decode_text={"nope": decode})
