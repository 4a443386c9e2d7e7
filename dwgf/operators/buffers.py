"""Per-(device, dtype) copies of an operator's constant tensors.

Operators build their constants (masks, 1-D matrices, Cholesky factors) once, on the CPU, in float64 or
bool. The first call with an input on a new device or in a new dtype casts them to that device and
dtype and keeps the copy, so later calls cost nothing and float32 / float64 / CUDA inputs all work.
"""

from __future__ import annotations

import torch


class BufferCache:
    """Holds master tensors (CPU) and hands out copies that match a reference tensor's device and dtype."""

    def __init__(self) -> None:
        self._master: dict[str, torch.Tensor] = {}
        self._copies: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    def set(self, name: str, tensor: torch.Tensor) -> None:
        """Register (or replace) the master copy of ``name``; drops its cached device copies."""
        self._master[name] = tensor.detach().cpu()
        for key in [k for k in self._copies if k[0] == name]:
            del self._copies[key]

    def has(self, name: str) -> bool:
        return name in self._master

    def master(self, name: str) -> torch.Tensor:
        """The CPU master copy (float64 or bool)."""
        return self._master[name]

    def get(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """``name`` on ``like.device`` in ``like.dtype`` (bool masks become 0/1 in that dtype)."""
        key = (name, like.device, like.dtype)
        copy = self._copies.get(key)
        if copy is None:
            copy = self._master[name].to(device=like.device, dtype=like.dtype)
            self._copies[key] = copy
        return copy
