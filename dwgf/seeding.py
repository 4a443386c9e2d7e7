"""Deterministic per-item seeds and generators.

Every random draw in dwgf comes from an explicit :class:`torch.Generator` seeded by
:func:`derive_seed` from the run's base seed and the item's identity (task, image id, method, ...), so
an image's result does not depend on which other images ran before it or in which shard.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(base_seed: int, *keys: object) -> int:
    """A 63-bit seed from ``base_seed`` and any keys (stable across processes and platforms).

    >>> derive_seed(0, "box", "00001") == derive_seed(0, "box", "00001")
    True
    >>> derive_seed(0, "box", "00001") != derive_seed(0, "box", "00002")
    True
    """
    text = "\x1f".join([str(int(base_seed)), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") & ((1 << 63) - 1)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator
