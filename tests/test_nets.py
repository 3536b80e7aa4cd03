"""Network shapes and architectures; in-place ReLUs in every registered network."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from crmvae.config import ModalityConfig
from crmvae.errors import ConfigError
from crmvae.nets import NETWORKS, build_networks
from crmvae.nets.layers import WholeInputConv2d, WholeOutputConvTranspose2d

D = 32
MNIST = ModalityConfig("mnist", [1, 28, 28], "mnist_mlp", "laplace")
SVHN = ModalityConfig("svhn", [3, 32, 32], "svhn_conv", "laplace")
TEXT = ModalityConfig("text", [8], "text_conv", "categorical", vocab_size=71)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(c_in: int, c_out: int, k: int) -> int:
    """Parameters of a (transposed) convolution or a linear layer (k = 1): weights + bias."""
    return c_in * c_out * k + c_out


@pytest.mark.parametrize(
    ("modality", "x", "out_shape"),
    [
        (MNIST, torch.rand(5, 1, 28, 28), (5, 1, 28, 28)),
        (SVHN, torch.rand(5, 3, 32, 32), (5, 3, 32, 32)),
        (TEXT, torch.randint(0, 71, (5, 8)), (5, 8, 71)),
    ],
)
def test_shapes(modality: ModalityConfig, x: torch.Tensor, out_shape: tuple[int, ...]) -> None:
    encoder, decoder = build_networks(modality, D)
    mu, logvar = encoder(x)
    assert mu.shape == logvar.shape == (5, D)
    assert decoder(mu).shape == out_shape


def test_parameter_counts_match_the_reference_layers() -> None:
    """Hand counts of the layers of the reference MNIST-SVHN-Text networks (docs/training.md, "Networks"), so a changed layer is noticed."""
    head = 2 * conv(128, D, 1)
    expected = {
        "mnist": (conv(784, 400, 1) + 2 * conv(400, D, 1), conv(D, 400, 1) + conv(400, 784, 1)),
        "svhn": (
            conv(3, 32, 16) + conv(32, 64, 16) + conv(64, 64, 16) + conv(64, 128, 16) + head,
            conv(D, 128, 1) + conv(128, 64, 16) + conv(64, 64, 16) + conv(64, 32, 16) + conv(32, 3, 16),
        ),
        "text": (
            conv(71, 128, 1) + 2 * conv(128, 128, 4) + head,
            conv(D, 128, 1) + 2 * conv(128, 128, 4) + conv(128, 71, 1),
        ),
    }
    for modality in (MNIST, SVHN, TEXT):
        encoder, decoder = build_networks(modality, D)
        assert (n_params(encoder), n_params(decoder)) == expected[modality.name], modality.name


def test_text_encoder_takes_ids_or_one_hot() -> None:
    encoder, _ = build_networks(TEXT, D)
    ids = torch.randint(0, 71, (4, 8))
    one_hot = torch.nn.functional.one_hot(ids, 71).float()
    for a, b in zip(encoder(ids), encoder(one_hot), strict=True):
        assert torch.equal(a, b)


def test_mnist_decoder_sigmoid_only_for_location_likelihoods() -> None:
    z = 10 * torch.randn(64, D)
    torch.manual_seed(0)
    _, laplace = build_networks(MNIST, D)
    torch.manual_seed(0)
    _, bernoulli = build_networks(ModalityConfig("mnist", [1, 28, 28], "mnist_mlp", "bernoulli"), D)
    logits = bernoulli(z)
    assert torch.allclose(laplace(z), torch.sigmoid(logits))  # same weights; logits for Bernoulli
    assert logits.min() < 0 or logits.max() > 1


@pytest.mark.parametrize(
    ("modality", "message"),
    [
        (ModalityConfig("x", [3, 28, 28], "mnist_mlp"), r"'mnist_mlp' takes shape \[1, 28, 28\]"),
        (ModalityConfig("x", [1, 32, 32], "svhn_conv"), r"'svhn_conv' takes shape \[3, 32, 32\]"),
        (ModalityConfig("x", [8], "text_conv", "laplace"), "supports the likelihoods"),
        (ModalityConfig("x", [8], "text_conv", "categorical", vocab_size=30), "vocab_size=30"),
        (ModalityConfig("x", [3, 32, 32], "svhn_conv", "categorical"), "supports the likelihoods"),
    ],
)
def test_config_errors(modality: ModalityConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_networks(modality, D)


def test_registered() -> None:
    assert {"mnist_mlp", "svhn_conv", "text_conv"} <= set(NETWORKS)


# --------------------------------------------------------------------------------------------
# MultiVae's PolyMNIST networks, with the whole-input convolutions computed as matmuls


@pytest.mark.parametrize("channels_last", [False, True])
def test_whole_input_conv_equals_conv2d_in_value_and_gradients(channels_last: bool) -> None:
    torch.manual_seed(0)
    ours = WholeInputConv2d(6, 5, 4, 2, 0)
    reference = nn.Conv2d(6, 5, 4, 2, 0)
    reference.load_state_dict(ours.state_dict())  # same parameters, same state dict keys
    layout = torch.channels_last if channels_last else torch.contiguous_format
    ours.to(memory_format=layout)
    reference.to(memory_format=layout)
    x = torch.randn(7, 6, 4, 4).contiguous(memory_format=layout).requires_grad_()
    y, y_ref = ours(x), reference(x)
    assert y.shape == y_ref.shape == (7, 5, 1, 1)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    g = torch.randn(7, 5, 1, 1)
    grads = torch.autograd.grad(y, [x, ours.weight, ours.bias], g)
    grads_ref = torch.autograd.grad(y_ref, [x, reference.weight, reference.bias], g)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_whole_output_conv_transpose_equals_conv_transpose2d_in_value_and_gradients(bias: bool) -> None:
    torch.manual_seed(0)
    ours = WholeOutputConvTranspose2d(6, 5, 4, 1, 0, bias=bias)
    reference = nn.ConvTranspose2d(6, 5, 4, 1, 0, bias=bias)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(7, 6, 1, 1, requires_grad=True)
    y, y_ref = ours(x), reference(x)
    assert y.shape == y_ref.shape == (7, 5, 4, 4)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    g = torch.randn(7, 5, 4, 4)
    params = [x, ours.weight, *([ours.bias] if bias else [])]
    params_ref = [x, reference.weight, *([reference.bias] if bias else [])]
    for a, b in zip(torch.autograd.grad(y, params, g), torch.autograd.grad(y_ref, params_ref, g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"got an input of spatial size \(2, 2\)"):
        ours(torch.zeros(1, 6, 2, 2))
    with pytest.raises(ValueError, match=r"makes \(4, 4\) outputs, not \(5, 5\)"):
        ours(x, output_size=[5, 5])


def test_whole_input_conv_refuses_an_input_its_kernel_does_not_cover() -> None:
    with pytest.raises(ValueError, match=r"got an input of spatial size \(5, 5\)"):
        WholeInputConv2d(3, 2, 4)(torch.zeros(1, 3, 5, 5))


def test_multivae_polymnist_networks() -> None:
    encoder, decoder = build_networks(ModalityConfig("m0", [3, 28, 28], "polymnist_multivae"), 512)
    mu, logvar = encoder(torch.rand(2, 3, 28, 28))
    assert mu.shape == logvar.shape == (2, 512) and decoder(mu).shape == (2, 3, 28, 28)
    features = conv(3, 32, 9) + conv(32, 64, 9) + conv(64, 128, 9)
    assert n_params(encoder) == features + 2 * conv(128, 512, 16)  # MultiVae's EncoderConvMMNIST_adapted
    with pytest.raises(ConfigError, match=r"'polymnist_multivae' takes shape \[3, 28, 28\]"):
        build_networks(ModalityConfig("m0", [1, 28, 28], "polymnist_multivae"), 8)


# --------------------------------------------------------------------------------------------
# token sequences (captions, CelebA text)

CELEBA_TEXT = ModalityConfig("text", [256], "caption_conv_norm", "categorical", vocab_size=71)


def test_sequence_networks_shapes_and_layers() -> None:
    """Six stages take 256 characters to 4; the plain stack has no norm, the other one per stage."""
    for network, norms in (("caption_conv", 0), ("caption_conv_norm", 6)):
        encoder, decoder = build_networks(ModalityConfig("text", [256], network, "categorical", vocab_size=71), D)
        ids = torch.randint(0, 71, (3, 256))
        mu, logvar = encoder(ids)
        assert mu.shape == logvar.shape == (3, D)
        assert decoder(mu).shape == (3, 256, 71)
        for net in (encoder, decoder):
            assert sum(isinstance(m, nn.GroupNorm) for m in net.modules()) == norms, network


def test_plain_caption_network_keeps_its_parameters() -> None:
    """Hand count for a 32-token caption (3 stages): checkpoints of the plain stack still load."""
    encoder, decoder = build_networks(ModalityConfig("c", [32], "caption_conv", "categorical", vocab_size=55), D)
    down = conv(128, 128, 4) + conv(128, 256, 4) + conv(256, 256, 4)
    up = conv(256, 256, 4) + conv(256, 128, 4) + conv(128, 128, 4)
    assert n_params(encoder) == 55 * 128 + down + conv(1024, 512, 1) + 2 * conv(512, D, 1)
    assert n_params(decoder) == conv(D, 1024, 1) + up + conv(128, 55, 1)


def test_normalised_sequence_encoder_is_invariant_to_a_stage_scale() -> None:
    """GroupNorm undoes any scale a stage's weights grow to: scaling the first conv by 100 leaves
    the output unchanged (the plain stack's output changes), which is what keeps lr 1e-3 stable."""
    torch.manual_seed(0)
    ids = torch.randint(0, 71, (4, 256))
    for network, invariant in (("caption_conv_norm", True), ("caption_conv", False)):
        encoder, _ = build_networks(ModalityConfig("text", [256], network, "categorical", vocab_size=71), D)
        before = encoder(ids)[0]
        first = encoder.features[0]
        with torch.no_grad():
            first.weight.mul_(100.0)
            first.bias.mul_(100.0)
        after = encoder(ids)[0]
        assert torch.allclose(before, after, rtol=1e-4, atol=1e-4) is invariant, network


def test_normalised_sequence_network_keeps_examples_apart() -> None:
    """A per-example norm: one example's output does not depend on the others in the batch (an
    absent modality's row may hold anything), unlike a batch norm."""
    encoder, decoder = build_networks(CELEBA_TEXT, D)
    ids = torch.randint(0, 71, (5, 256))
    other = ids.clone()
    other[1:] = torch.randint(0, 71, (4, 256))
    assert torch.equal(encoder(ids)[0][0], encoder(other)[0][0])
    z = torch.randn(5, D)
    z_other = z.clone()
    z_other[1:] = 1e3 * torch.randn(4, D)
    assert torch.equal(decoder(z)[0], decoder(z_other)[0])


def test_normalised_sequence_network_config_errors_name_it() -> None:
    with pytest.raises(ConfigError, match="'caption_conv_norm' takes token sequences"):
        build_networks(ModalityConfig("t", [3, 8, 8], "caption_conv_norm", "categorical", vocab_size=71), D)


# --------------------------------------------------------------------------------------------
# in-place ReLUs: the same function and gradients as out-of-place ones, in every network

EVERY_NETWORK = [
    ModalityConfig("image", [3, 20, 12], "generic_conv", "laplace"),
    ModalityConfig("vector", [7], "generic_mlp", "normal"),
    ModalityConfig("tokens", [10], "generic_tokens", "categorical", vocab_size=13),
    ModalityConfig("image", [3, 64, 64], "images64_conv", "laplace"),
    MNIST,
    SVHN,
    TEXT,
    ModalityConfig("m0", [3, 28, 28], "polymnist_conv", "laplace"),
    ModalityConfig("m0", [3, 28, 28], "polymnist_multivae", "laplace"),
    ModalityConfig("caption", [32], "caption_conv", "categorical", vocab_size=55),
    ModalityConfig("text", [64], "caption_conv_norm", "categorical", vocab_size=71),
]


def test_every_registered_network_is_covered() -> None:
    """Every network the library registers (other test modules register their own)."""
    library = {name for name, factory in NETWORKS.items() if factory.__module__.startswith("crmvae.")}
    assert {m.network for m in EVERY_NETWORK} == library


@pytest.mark.parametrize("modality", EVERY_NETWORK, ids=lambda m: m.network)
def test_in_place_relus_give_the_out_of_place_values_and_gradients(modality: ModalityConfig) -> None:
    torch.manual_seed(0)
    in_place = build_networks(modality, D)
    out_of_place = copy.deepcopy(in_place)
    relus = [m for net in out_of_place for m in net.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(m.inplace for m in relus), "every network's ReLUs are in place"
    for m in relus:
        m.inplace = False
    if modality.likelihood == "categorical":
        x = torch.randint(0, modality.vocab_size or 2, (4, *modality.shape))
    else:
        x = torch.rand(4, *modality.shape)
    losses = []
    for encoder, decoder in (in_place, out_of_place):
        mu, logvar = encoder(x)
        loss = decoder(mu + logvar.exp()).square().mean()
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
    for net, reference in zip(in_place, out_of_place):
        for (name, p), q in zip(net.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=f"{modality.network}: {name}")
