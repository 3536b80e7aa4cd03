"""MultimodalDataset: validation of stored tensors and the batch iterator."""

from __future__ import annotations

import pytest
import torch

from crmvae.data import Batch, ModalitySpec, MultimodalDataset
from crmvae.data.base import to_model_input
from crmvae.errors import DataError

IMG = ModalitySpec("img", "image", (3, 4, 4))
TOK = ModalitySpec("tok", "tokens", (5,), vocab_size=7)
VEC = ModalitySpec("vec", "vector", (2,))


def make(n: int = 10, **overrides) -> MultimodalDataset:
    g = torch.Generator().manual_seed(0)
    tensors = {
        "img": torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8),
        "tok": torch.randint(0, 7, (n, 5), generator=g),
        "vec": torch.randn(n, 2, generator=g),
    }
    kwargs = {"labels": torch.arange(n), "name": "toy"}
    tensors.update(overrides.pop("tensors", {}))
    kwargs.update(overrides)
    return MultimodalDataset(tensors, [IMG, TOK, VEC], **kwargs)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"tensors": {"img": torch.zeros(9, 3, 4, 4, dtype=torch.uint8)}},
            "different example counts",
        ),
        ({"tensors": {"img": torch.zeros(10, 1, 4, 4, dtype=torch.uint8)}}, "'img'"),
        ({"tensors": {"img": torch.zeros(10, 3, 4, 4, dtype=torch.int32)}}, "uint8 or float32"),
        ({"tensors": {"img": torch.full((10, 3, 4, 4), 1.5)}}, "[0, 1]"),
        ({"tensors": {"tok": torch.full((10, 5), 7)}}, "token ids"),
        ({"tensors": {"tok": torch.zeros(10, 5, dtype=torch.int32)}}, "int64"),
        ({"tensors": {"vec": torch.zeros(10, 2, dtype=torch.int64)}}, "floating point"),
        ({"labels": torch.arange(9)}, "labels have shape"),
        ({"mask": torch.ones(10, 2, dtype=torch.bool)}, "mask has shape"),
        ({"mask": torch.zeros(10, 3, dtype=torch.bool)}, "no modality present"),
    ],
)
def test_validation_errors_name_the_problem(overrides: dict, message: str) -> None:
    with pytest.raises(DataError, match="toy") as info:
        make(**overrides)
    assert message in str(info.value)


def test_tensor_and_spec_names_must_match() -> None:
    with pytest.raises(DataError, match="specs for"):
        MultimodalDataset({"img": torch.zeros(2, 3, 4, 4, dtype=torch.uint8)}, [IMG, VEC])


def test_batch_converts_images_and_gathers_labels() -> None:
    ds = make()
    batch = ds.batch(torch.tensor([3, 1]))
    assert isinstance(batch, Batch) and len(batch) == 2
    assert batch.data["img"].dtype == torch.float32
    assert torch.equal(batch.data["img"], ds.tensors["img"][[3, 1]].float() / 255)
    assert torch.equal(batch.data["tok"], ds.tensors["tok"][[3, 1]])
    assert batch.labels.tolist() == [3, 1]
    assert batch.mask.shape == (2, 3) and bool(batch.mask.all())
    assert to_model_input(TOK, ds.tensors["tok"]) is ds.tensors["tok"]


def test_batches_order_drop_last_and_start() -> None:
    ds = make(10)
    labels = [b.labels.tolist() for b in ds.batches(4)]
    assert labels == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [b.labels.tolist() for b in ds.batches(4, drop_last=True)] == labels[:2]
    assert [b.labels.tolist() for b in ds.batches(4, start=1)] == labels[1:]
    assert ds.num_batches(4) == 3 and ds.num_batches(4, drop_last=True) == 2


def test_shuffle_is_deterministic_given_a_generator() -> None:
    ds = make(10)

    def order(seed: int, start: int = 0) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        return [
            i
            for b in ds.batches(3, shuffle=True, generator=g, start=start)
            for i in b.labels.tolist()
        ]

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == list(range(10))
    assert order(1, start=2) == order(1)[6:]  # resuming skips whole batches of the same order


def test_subset_keeps_specs_and_mask() -> None:
    mask = torch.ones(10, 3, dtype=torch.bool)
    mask[2, 1] = False
    sub = make(mask=mask).subset(slice(0, 4), name="head")
    assert len(sub) == 4 and sub.name == "head"
    assert sub.mask[2].tolist() == [True, False, True]
    assert list(sub.specs) == ["img", "tok", "vec"]
