"""``dwgf build-random-sd``: random-weight Stable Diffusion folders plus their weights lock (cost and DAG tests).

    dwgf build-random-sd --arch sd21 --seed 0 --out cache/random-sd/sd21-seed0/model \\
        --lock cache/random-sd/sd21-seed0/weights.lock.yaml

writes a diffusers folder with the SD-2.1-base architecture and random weights
(:func:`dwgf.testing.tiny_sd.build_random_sd`), then a ``dwgf.weights-lock/1`` lock with the sha256 of each of its
files (:func:`dwgf.testing.tiny_sd.write_weights_lock`). A suite with ``prior.source: local`` and
``prior.local_dir`` = that folder then acquires it through the real ``dwgf acquire-weights`` path, which checks
every file against the lock. The Snakemake rule ``build_random_weights`` calls this verb for suites that set
``prior.random_init`` (``gpu_smoke``, ``gpu_smoke_cpu``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    text = "write a random-weight SD folder (SD-2.1-base or tiny architecture) and a lock with its sha256s"
    parser = subparsers.add_parser("build-random-sd", help=text, description=text)
    parser.set_defaults(func=_build_random_sd)
    parser.add_argument("--arch", choices=("sd21", "tiny"), default="sd21", help="architecture (default sd21)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    parser.add_argument("--image-size", type=int, default=64, help="tiny only: image side in px (default 64)")
    parser.add_argument("--out", required=True, type=Path, help="folder to write (replaced if it exists)")
    parser.add_argument("--lock", required=True, type=Path, help="weights lock to write (written last)")


def _build_random_sd(args: argparse.Namespace) -> int:
    from dwgf.testing.tiny_sd import build_random_sd, write_weights_lock

    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    out: Path = args.out
    # Why a sibling temporary folder and a rename: an interrupted build must not leave a half-written folder
    # that a later acquire could mistake for a complete one (the lock, written last, is the completion mark).
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    build_random_sd(staging, arch=args.arch, seed=args.seed, sample_size=args.image_size)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    lock = write_weights_lock(out, args.lock, name=f"random-{args.arch}-seed{args.seed}")
    print(f"wrote {out} and {lock}")
    return 0
