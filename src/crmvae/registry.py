"""The one registry idiom: objectives, networks, datasets, likelihoods and classifiers by name.

A :class:`Registry` is a read-only mapping that refuses a second entry under a name and answers
an unknown name with a :class:`ConfigError` listing the known ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Entries of one ``kind`` (e.g. ``"network"``) by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; a name can be registered once."""
        if name in self._entries:
            raise ConfigError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def lookup(self, name: str, where: str = "") -> T:
        """The entry ``name``; a :class:`ConfigError` (prefixed with ``where``) lists the known names."""
        if name not in self._entries:
            raise ConfigError(f"{where}{': ' if where else ''}unknown {self.kind} {name!r}; available: {sorted(self._entries)}")
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
