"""Forward operators (physics). See :func:`make_operator`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dwgf.operators.base import LinearOperator, add_measurement_noise

_REGISTRY: dict[str, Callable[..., LinearOperator]] = {}


def register_operator(name: str) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return decorate


def operator_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def make_operator(name: str, image_size: int, **params: Any) -> LinearOperator:
    """Build the operator called ``name`` for square images of side ``image_size``.

    >>> import torch
    >>> A = make_operator("sr_avgpool", 64, factor=8)
    >>> A(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 3, 8, 8])
    """
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown operator {name!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[name](image_size=image_size, **params)


def _load_builtin() -> None:
    # Imported lazily so that the modules can use register_operator without a cycle.
    import dwgf.operators.library  # noqa: F401


__all__ = ["LinearOperator", "add_measurement_noise", "make_operator", "operator_names", "register_operator"]
