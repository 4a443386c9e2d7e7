"""Names of the bundled crops, without torch (the plan checks ``data.ids`` with them at Snakefile parse time).

A crop id ``"<image>-r<row>-c<col>"`` names the size x size crop of bundled scikit-image photograph ``<image>``
whose top-left corner is (row, col), 0-based (e.g. ``"astronaut-r0123-c0456"``); :mod:`dwgf.data.bundled` rebuilds
the pixels from it.
"""

from __future__ import annotations

import re

#: The scikit-image colour images used by the test bed (all load without a network connection).
SOURCE_IMAGES: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "colorwheel",
    "retina",
)

_ID_PATTERN = re.compile(r"^(?P<image>[a-z_]+)-r(?P<row>\d{4,})-c(?P<col>\d{4,})$")


def crop_id(image: str, row: int, col: int) -> str:
    """The id of the crop of ``image`` whose top-left corner is (row, col)."""
    return f"{image}-r{row:04d}-c{col:04d}"


def parse_crop_id(image_id: str) -> tuple[str, int, int]:
    """(image, row, col) from an id made by :func:`crop_id`; ``ValueError`` for anything else."""
    match = _ID_PATTERN.match(image_id) if isinstance(image_id, str) else None
    if match is None or match["image"] not in SOURCE_IMAGES:
        raise ValueError(
            f"image_id {image_id!r} is not a bundled crop id '<image>-r<row>-c<col>' (e.g. 'astronaut-r0123-c0456') "
            f"with <image> one of {list(SOURCE_IMAGES)}"
        )
    return match["image"], int(match["row"]), int(match["col"])
