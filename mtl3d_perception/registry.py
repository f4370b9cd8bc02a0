"""Name -> implementation tables (timm's ``_registry`` idea): encoders, refiners and loss terms register here.

Each table is a :class:`Registry`; the modules that own a kind of part wrap it in their public
``register_*`` / ``build_*`` functions, so a config names a part and one lookup finds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A table of ``kind`` implementations by name; lookups of unknown names raise ``error`` naming the known ones."""

    def __init__(self, kind: str, error: type[Exception] = ValueError) -> None:
        self.kind = kind
        self.error = error
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering the decorated class or function under ``name`` (re-registering it is a no-op)."""

        def wrap(item: T) -> T:
            existing = self._items.get(name)
            if existing is not None and existing is not item:
                msg = f"{self.kind} {name!r} is already registered by {getattr(existing, '__qualname__', existing)!s}"
                raise ValueError(msg)
            self._items[name] = item
            return item

        return wrap

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            msg = f"unknown {self.kind} {name!r}; registered: {', '.join(self.names()) or 'none'}"
            raise self.error(msg) from None

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
