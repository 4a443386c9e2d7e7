"""``dwgf restore IMAGE --task TASK --method METHOD [--prior FOLDER] [--out DIR]``: one image, outside the DAG.

Writes the observation, the particles (npz + PNGs), ``grid.png`` and the same provenance records as the workflow's
steps (:mod:`dwgf.pipeline.restore`).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    help_text = "solve one image of your own with one method on one task (outside the DAG) and draw a grid"
    p = subparsers.add_parser("restore", help=help_text, description=__doc__.split("\n\n")[0])
    p.add_argument("image", help="the image (PNG/JPEG, square; resized to the suite's size when it differs)")
    p.add_argument("--task", required=True, help="a task of the suite (e.g. box, sr8)")
    p.add_argument("--method", required=True, help="a method of the suite (dwgf, psld, rlsd, latent_dps)")
    p.add_argument("--prior", default=None, help="test-bed prior folder or Stable Diffusion folder (default: the "
                   "suite's own prior step: fit the test bed, or acquire the locked SD weights)")  # fmt: skip
    p.add_argument("--out", default=None, help="results folder (default restore/<image>-<task>-<method>)")
    p.add_argument("--suite", default=None, help="suite whose task and method settings are used (default: demo for "
                   "the test bed, paper for a Stable Diffusion folder)")  # fmt: skip
    p.add_argument("--config", default=None, help="config.yaml (default: the repository's)")
    p.add_argument("--steps", type=int, default=None, help="override the method's step count")
    p.add_argument("--device", default=None, help="override the suite's device (cpu, cuda)")
    p.add_argument("--no-progress", action="store_true", help="hide the per-step progress bar")
    p.set_defaults(func=_restore)


def _restore(args: argparse.Namespace) -> int:
    from dwgf.pipeline.restore import restore

    grid = restore(args.image, args.task, args.method, out=args.out, prior=args.prior, suite=args.suite,
                   config=args.config, steps=args.steps, device=args.device, progress=not args.no_progress)  # fmt: skip
    print(f"[dwgf restore] wrote {grid} (records: {grid}.prov.json and the step records beside it)")
    return 0
