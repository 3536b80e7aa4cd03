"""Placeholders for every torchvision name that MultiVae imports at module level.

MultiVae imports torchvision for its dataset downloaders, image grids and FID networks; its
models and training step use no torchvision operator. A placeholder can be constructed (MultiVae
builds ``ToTensor()`` as a default argument) and subclassed (its FID networks), but calling an
instance or reading any of its attributes raises.
"""

from __future__ import annotations

from collections.abc import Callable


def stub_getattr(module: str) -> Callable[[str], type]:
    """A module-level ``__getattr__`` turning any public name into a placeholder class."""

    def __getattr__(name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        message = f"{module}.{name}: torchvision is a stand-in here (benchmarks/torchvision_stub)"

        def unavailable(self: object, *args: object, **kwargs: object) -> None:
            raise RuntimeError(message)

        def __init__(self: object, *args: object, **kwargs: object) -> None:
            pass

        return type(name, (), {"__init__": __init__, "__call__": unavailable, "__getattr__": unavailable})

    return __getattr__
