"""The peer side of ``throughput.py --peer multivae``: MultiVae 1.0.3's models on the same workload.

MultiVae is never a dependency of crmvae: it lives in a throw-away virtual environment
(``benchmarks/setup_peer.sh``). Its top-level ``import torchvision`` fails beside a CPU-only
torch, so :func:`import_multivae` puts a stand-in ``torchvision`` (``benchmarks/torchvision_stub``)
on ``sys.path`` when, and only when, the real one cannot be imported, and says so.

Settings (MultiVae's names): 5 modalities 3x28x28, latent 512, its ``EncoderConvMMNIST_adapted``
and ``DecoderConvMMNIST`` nets, Laplace likelihood with scale 0.75 (as crmvae), Adam.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import io
import logging
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

STUB_DIR = Path(__file__).resolve().parent / "torchvision_stub"

#: crmvae key -> (MultiVae class name, its config fields). MVAE: joint + unimodal ELBOs, k = 0.
PEER_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "crmvae": ("CRMVAE", {"beta": 0.1}),
    "mvtcae": ("MVTCAE", {"alpha": 5 / 6, "beta": 1.0}),
    "mopoe": ("MoPoE", {"beta": 1.0}),
    "mvae": ("MVAE", {"use_subsampling": True, "k": 0, "beta": 1.0}),
}

#: crmvae's loss (matched settings, a batch of B) / MultiVae's loss: CRMVAE sums over the batch and
#: halves the reconstruction coefficient. MoPoE has no entry: MultiVae puts the prior expert in the
#: full set's PoE only, crmvae in every subset's (or none), so their values differ by design.
LOSS_RATIO = {"crmvae": lambda batch: 2.0 / batch, "mvtcae": lambda batch: 1.0, "mvae": lambda batch: 1.0}


def import_multivae() -> tuple[ModuleType | None, str]:
    """``(multivae, note)``; ``(None, why)`` when it cannot be imported in this interpreter."""
    if importlib.util.find_spec("multivae") is None:
        return None, (
            f"multivae is not installed for {sys.executable}; create its environment with "
            "`bash benchmarks/setup_peer.sh` and run this benchmark with /tmp/peer-venv/bin/python"
        )
    note = "real torchvision"
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError) as err:  # a CUDA torchvision beside a CPU torch raises RuntimeError
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.path.insert(0, str(STUB_DIR))
        note = f"stand-in torchvision from {STUB_DIR} ({type(err).__name__}: {str(err).splitlines()[0]})"
    try:
        multivae = importlib.import_module("multivae")
        for sub in ("multivae.models", "multivae.models.nn.mmnist", "multivae.trainers"):
            importlib.import_module(sub)
    except Exception as err:  # noqa: BLE001  (any import failure only disables the peer)
        return None, f"multivae failed to import: {type(err).__name__}: {err}"
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("multivae")]:
        logging.getLogger(name).setLevel(logging.WARNING)  # its INFO console logs ("Ready for training.")
    return multivae, f"multivae {importlib.metadata.version('multivae')}, {note}"


def build_peer_model(multivae: ModuleType, key: str, names: list[str], latent_dim: int) -> nn.Module:
    """MultiVae's model for crmvae objective ``key`` with its PolyMNIST conv nets."""
    from multivae.models.base.base_config import BaseAEConfig
    from multivae.models.nn.mmnist import DecoderConvMMNIST, EncoderConvMMNIST_adapted

    cls_name, params = PEER_MODELS[key]
    config = getattr(multivae.models, f"{cls_name}Config")(
        n_modalities=len(names),
        latent_dim=latent_dim,
        input_dims={m: (3, 28, 28) for m in names},
        decoders_dist={m: "laplace" for m in names},
        decoder_dist_params={m: {"scale": 0.75} for m in names},
        **params,
    )
    net_config = BaseAEConfig(latent_dim=latent_dim)
    encoders = {m: EncoderConvMMNIST_adapted(net_config) for m in names}
    decoders = {m: DecoderConvMMNIST(net_config) for m in names}
    return getattr(multivae.models, cls_name)(config, encoders=encoders, decoders=decoders)


class PeerRunner:
    """Trains a MultiVae model epoch by epoch on float images ``{name: [N, 3, 28, 28]}``.

    ``step="trainer"`` runs MultiVae's own ``BaseTrainer.train_step`` (its DataLoader with
    per-example ``__getitem__``, 0 workers, shuffle, drop_last; progress bars off); ``"loop"``
    the equivalent loop on pre-sliced batches: ``model(inputs, epoch=...)``, zero_grad,
    backward, Adam step, ``loss.item()``.
    """

    def __init__(self, multivae: ModuleType, model: nn.Module, data: dict[str, Tensor],
                 batch_size: int, lr: float, step: str) -> None:
        from multivae.data.datasets.base import MultimodalBaseDataset
        from multivae.trainers import BaseTrainer, BaseTrainerConfig

        self.model, self.data, self.batch_size, self.step_kind = model, data, batch_size, step
        self.dataset_cls = MultimodalBaseDataset
        self.epoch_index = 0
        self.examples = len(next(iter(data.values()))) // batch_size * batch_size
        self._tmp = tempfile.TemporaryDirectory(prefix="peer-multivae-")
        config = BaseTrainerConfig(
            output_dir=self._tmp.name, per_device_train_batch_size=batch_size, learning_rate=lr,
            drop_last=True, no_cuda=True, num_epochs=1_000,
        )
        with contextlib.redirect_stdout(io.StringIO()):  # its set-up chatter ("Ready for training.")
            self.trainer = BaseTrainer(model, MultimodalBaseDataset(data=data), training_config=config)
            self.trainer.prepare_training()
        self.trainer.callback_handler.callbacks = []  # progress bar / console printer: output only
        self.optimizer = self.trainer.optimizer

    def step(self, inputs: Any, batch_ratio: float = 0.0) -> float:
        """One training step on a batch (the body of MultiVae's ``train_step``)."""
        out = self.model(inputs, epoch=self.epoch_index + 1, batch_ratio=batch_ratio)
        self.optimizer.zero_grad()
        out.loss.backward()
        self.optimizer.step()
        return float(out.loss.item())

    def batch(self, index: Tensor) -> Any:
        return self.dataset_cls(data={m: x[index] for m, x in self.data.items()})

    def epoch(self) -> float:
        """Seconds for one training epoch."""
        self.model.train()
        start = time.perf_counter()
        if self.step_kind == "trainer":
            self.trainer.train_step(self.epoch_index + 1)
        else:
            order = torch.randperm(len(next(iter(self.data.values()))))
            count = self.examples // self.batch_size
            for i in range(count):
                self.step(self.batch(order[i * self.batch_size : (i + 1) * self.batch_size]), i / count)
        self.epoch_index += 1
        return time.perf_counter() - start
