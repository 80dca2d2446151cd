"""One small registry type for the axes users extend (timm's ``register_model`` / ``list_models`` pattern):
quantization formats (``shrink.formats``) and ship objectives (``shrink.ship``). Torch-free."""
from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries in the order they were added.

    Args:
        what: what an entry is, for the messages (e.g. ``"quantization format"``).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` (after the others); a name already taken is a ValueError."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        """Every name, in registration order."""
        return list(self._entries)

    def get(self, name: str) -> T:
        """The entry ``name``; a KeyError naming the known ones otherwise."""
        if name not in self._entries:
            raise KeyError(f"unknown {self.what} {name!r} (known: {', '.join(self._entries)})")
        return self._entries[name]

    def remove(self, name: str) -> T:
        """Take ``name`` out again (a test's temporary entry)."""
        return self._entries.pop(name)
