"""Replacing attributes of stdlib modules and classes so that the replacement can be undone.

Each patch module records what it replaces in one ``Patcher``; ``undo`` puts back the originals in
reverse order, so patching twice and undoing once is not a concern of the modules themselves.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Patcher"]

_MISSING = object()


class Patcher:
    """The attributes one patch module replaced, and their originals."""

    __slots__ = ("_saved",)

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    @property
    def active(self) -> bool:
        return bool(self._saved)

    def install(self, replacements: list[tuple[Any, str, Any]]) -> None:
        """Make each (target, name, value) replacement, unless this patcher's are in place already."""
        if self.active:
            return
        for target, name, value in replacements:
            self.replace(target, name, value)

    def replace(self, target: Any, name: str, value: Any) -> None:
        """Set ``target.name = value``, remembering the original (or its absence)."""
        # A class's own attribute as stored (a classmethod stays one, so undo restores it exactly);
        # an inherited one is missing here, and undo deletes the override.
        original = vars(target).get(name, _MISSING) if isinstance(target, type) else getattr(target, name, _MISSING)
        self._saved.append((target, name, original))
        setattr(target, name, value)

    def replaced(self) -> list[tuple[Any, str, Any]]:
        """(target, name, original) for each replacement, oldest first (the original may be missing)."""
        return [(target, name, value) for target, name, value in self._saved if value is not _MISSING]

    def original(self, target: Any, name: str) -> Any:
        """What ``target.name`` was before this patcher first replaced it (the current value if it never did;
        for a class that inherited it, what the bases give)."""
        for saved_target, saved_name, value in self._saved:
            if saved_target is target and saved_name == name:
                if value is not _MISSING:
                    return value
                if isinstance(target, type):
                    return getattr(super(target, target), name)
        return getattr(target, name)

    def undo(self) -> None:
        while self._saved:
            target, name, value = self._saved.pop()
            if value is _MISSING:
                delattr(target, name)
            else:
                setattr(target, name, value)
