"""Pipeline steps 5-6a: per-shard metric rows (``dwgf evaluate``) and set-level metrics (``dwgf set-metrics``).

Rows follow the long-format schema of :mod:`dwgf.metrics.schema` and are written with
:func:`dwgf.metrics.schema.write_metrics` (validated, atomic).

``evaluate`` -- for every image of a shard (particles from ``solve/.../images/<id>.npz``, ground truth from
``data/images/<id>.png``):

* :meth:`dwgf.metrics.evaluate.ImageMetrics.rows`: PSNR/SSIM/LPIPS per particle and for the particle-mean
  image, under the ``standard`` and ``repo`` protocols, plus particle diversity (LPIPS is null with a status
  when its backbone is not in ``metrics.weights.torch_home``);
* test-bed prior only (``metrics.posterior``): :func:`dwgf.metrics.evaluate.posterior_rows` against the exact
  posterior p(z | y) of :meth:`~dwgf.priors.gaussian_mixture.GaussianMixturePrior.posterior` (sigma_dec = 0,
  the prior's deterministic decoder), in image space and in latent space, with 256 exact posterior samples
  drawn from ``derive_seed(seed, "posterior", task, id)``; the posterior's component-weight entropy and the mode
  coverage (:func:`dwgf.metrics.evaluate.mixture_rows`); the calibration ratio of the ground truth under the
  particle spread, in both spaces (:func:`dwgf.metrics.evaluate.calibration_rows`);
* :func:`dwgf.metrics.runtime.solve_record_rows`: ``runtime_s`` and ``peak_memory_bytes`` from the solve
  record (status ``solve_<status>`` when the solve did not succeed; an image whose solve raised has only these
  rows).

``set-metrics`` -- FID and KID (:func:`dwgf.metrics.evaluate.set_rows`) of each sample policy
(``all_particles``: every particle of every image, the official FID's fake set; ``first_particle``) against
the suite's ground-truth images, with the Inception named by ``metrics.fid_network``.

``evaluate-batch`` -- every ``evaluate`` and ``set-metrics`` unit of one task in one process
(``metrics.jobs: per_task``), sharing one :class:`EvaluationContext`: the torch import, the LPIPS nets, the
prior, the exact posterior of each observation (it depends on the task and image, not on the method) and the
Inception features of the ground truth are paid once instead of once per unit. Each unit writes the same Parquet
file and provenance record as its own ``evaluate`` / ``set-metrics`` call would (a test compares the bytes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dwgf.io import sha256_file
from dwgf.pipeline.images import display_uint8, load_image
from dwgf.pipeline.observe import build_operator, load_observation
from dwgf.pipeline.records import read_step_record, require, resolve
from dwgf.provenance import Recorder
from dwgf.seeding import derive_seed, make_generator

POSTERIOR_SAMPLES = 256
POSTERIOR_SIGMA_DEC = 0.0


def _image_keys(spec: dict[str, Any], record: dict[str, Any]):
    from dwgf.metrics.schema import RowKeys

    hyper = record.get("hyper") or dict(spec.get("hyper") or {})
    hyper = {k: v for k, v in hyper.items() if k not in ("n_particles", "n_steps")}
    return RowKeys(
        suite=spec["suite"],
        task=spec["task"]["name"],
        method=spec["method"],
        variant=spec["variant"],
        hyper=hyper,
        n_particles=int(spec["n_particles"]),
    )


def _posterior_reference(prior, operator, sigma_y: float, y, seed: int) -> dict[str, Any]:
    """The exact posterior p(z | y) of one observation, reduced to what :func:`_posterior_rows` needs."""
    import torch

    from dwgf.metrics.testbed import SlicedReference

    posterior = prior.posterior(y, operator, sigma_y, sigma_dec=POSTERIOR_SIGMA_DEC)
    samples_z = posterior.sample(POSTERIOR_SAMPLES, make_generator(seed), dtype=torch.float64)
    samples_x = prior.decode(samples_z.to(prior.dtype)).to(torch.float64)
    return {
        "image": (posterior.mean_image[0], posterior.std_image[0], SlicedReference(samples_x)),
        "latent": (posterior.mean_latent, posterior.std_latent, SlicedReference(samples_z.flatten(1))),
        "weights": posterior.weights,
        "prior_components": prior.mixture_components(),
    }


def _posterior_rows(reference: dict[str, Any], particles, latents, keys, gt=None, prior=None) -> list[dict[str, Any]]:
    """Exact-posterior rows; with the ground truth ``gt`` (and the prior, to encode it) also calibration rows."""
    import torch

    from dwgf.metrics.evaluate import calibration_rows, exact_mean_rows, mixture_rows, posterior_rows

    rows = []
    spaces = (("image", particles.to(torch.float64)), ("latent", latents.to(torch.float64).flatten(1)))
    for space, values in spaces:
        mean, std, sliced = reference[space]
        rows += posterior_rows(values, mean, std, sliced, keys, space=space)
    rows += mixture_rows(spaces[1][1], reference["weights"], reference["prior_components"], keys)
    if gt is not None:
        gt64 = gt.to(torch.float64)
        rows += exact_mean_rows(reference["image"][0], gt64, keys)
        rows += calibration_rows(spaces[0][1], gt64, keys, space="image")
        gt_latent = prior.encode(gt64.to(prior.dtype), sample=False).to(torch.float64).flatten(1)
        rows += calibration_rows(spaces[1][1], gt_latent, keys, space="latent")
    for row in rows:
        row["protocol"] += f";sigma_dec={POSTERIOR_SIGMA_DEC:g}"
    return rows


class EvaluationContext:
    """What an evaluation process loads or computes once and reuses across the units it evaluates.

    ``dwgf evaluate`` and ``dwgf set-metrics`` use a fresh context per call; ``dwgf evaluate-batch`` shares one
    across all units of a task. Every cache is keyed by everything its value depends on, so sharing changes no
    number: the LPIPS nets by (torch_home, nets); the prior by its record; the exact posterior by (prior record,
    task spec, image id, observation sha256, seed); the feature store by (network, torch_home), which memoises
    features by image content.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple, Any] = {}

    def _get(self, key: tuple, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def image_metrics(self, torch_home: str, nets: tuple[str, ...]):
        from dwgf.metrics.evaluate import ImageMetrics

        return self._get(("lpips", str(torch_home), nets), lambda: ImageMetrics.from_cache(torch_home, nets=nets))

    def prior(self, root: Path, prior_record: str | os.PathLike):
        from dwgf.pipeline.solve import load_pipeline_prior

        key = ("prior", str(Path(prior_record).resolve()))
        return self._get(key, lambda: load_pipeline_prior(root, prior_record, "cpu", "float64")[0])

    def posterior(self, root: Path, prior_record, task: dict[str, Any], image_size: int, image_id: str,
                  obs_sha: str, seed: int, load_y):  # fmt: skip
        """The exact-posterior reference of one observation (``load_y()`` gives y when it must be computed)."""
        import json

        key = ("posterior", str(Path(prior_record).resolve()), json.dumps(task, sort_keys=True), image_size,
               image_id, obs_sha, seed)  # fmt: skip

        def build():
            operator = build_operator(task, image_size)
            prior = self.prior(root, prior_record)
            return _posterior_reference(prior, operator, float(task["sigma_y"]), load_y(), seed)

        return self._get(key, build)

    def reference_stats(self, path: Path, network: str):
        """:class:`~dwgf.metrics.fid.ReferenceStats` of ``path``, refused unless made by ``network``."""
        from dwgf.metrics.fid import ReferenceStats

        return self._get(("reference", str(path.resolve()), network), lambda: ReferenceStats.load(path, network))

    def feature_store(self, network_name: str, torch_home: str):
        from dwgf.metrics.fid import FeatureStore, load_feature_network

        key = ("features", network_name, str(torch_home))
        return self._get(key, lambda: FeatureStore(load_feature_network(network_name, torch_home)))


def evaluate_shard(
    spec: dict[str, Any],
    root: str | os.PathLike,
    shard_record: str | os.PathLike,
    images_record: str | os.PathLike,
    observations_record: str | os.PathLike,
    prior_record: str | os.PathLike,
    out: str | os.PathLike,
    context: EvaluationContext | None = None,
) -> dict[str, Any]:
    import torch

    from dwgf.metrics.runtime import solve_record_rows
    from dwgf.metrics.schema import write_metrics

    require(spec, "suite", "method", "task", "variant", "metrics", "prior_kind", "n_particles")
    context = context or EvaluationContext()
    recorder = Recorder("evaluate", root=root, config=spec)
    root = Path(root)
    shard = read_step_record(shard_record, "solve")
    images_extra = read_step_record(images_record, "acquire-images")["extra"]
    images, image_sets = images_extra["images"], images_extra["image_sets"]
    observations = read_step_record(observations_record, "observe")
    metrics_spec = spec["metrics"]
    torch_home = (metrics_spec.get("weights") or {}).get("torch_home", "cache/torch")
    nets = tuple((metrics_spec.get("lpips") or {}).get("nets", ["alex"]))
    if "alex" not in nets:
        raise ValueError("config key 'metrics.lpips.nets' must include 'alex' (the repo protocol and diversity use it)")
    image_metrics = context.image_metrics(torch_home, nets)
    use_posterior = bool(metrics_spec.get("posterior")) and spec["prior_kind"] == "gaussian_mixture"

    rows: list[dict[str, Any]] = []
    inputs = [Path(shard_record), Path(images_record), Path(observations_record), Path(prior_record)]
    seeds = {}
    from tqdm.auto import tqdm

    for image_id, entry in tqdm(shard["extra"]["images"].items(), desc="evaluate", dynamic_ncols=True):
        record = _read_json(resolve(root, entry["record"]))
        keys = _image_keys(spec, record)
        obs_path = resolve(root, observations["extra"]["images"][image_id]["npz"])
        run_path = resolve(root, entry["files"]["npz"]) if "npz" in entry["files"] else None
        keys = keys.for_image(
            image_id, sha256_file(obs_path), sha256_file(run_path) if run_path else None, image_sets[image_id]
        )
        rows += solve_record_rows(record, keys, device=shard.get("device"))
        if run_path is None:
            continue  # the solve raised: only its runtime rows (status solve_error) exist
        with np.load(run_path) as data:
            particles = torch.from_numpy(data["particles"])
            latents = torch.from_numpy(data["latents"])
        gt_path = resolve(root, images[image_id])
        gt = load_image(gt_path, image_size=int(spec["image_size"])).unsqueeze(0)
        rows += image_metrics.rows(particles, gt, keys)
        if use_posterior:
            seeds[image_id] = derive_seed(spec["seed"], "posterior", spec["task"]["name"], image_id)

            def load_y(image_id=image_id):
                return torch.from_numpy(load_observation(root, observations, image_id)["y"]).to(torch.float64)

            reference = context.posterior(root, prior_record, spec["task"], int(spec["image_size"]), image_id,
                                          keys.observation_sha256, seeds[image_id], load_y)  # fmt: skip
            prior = context.prior(root, prior_record)
            rows += _posterior_rows(reference, particles, latents, keys, gt=gt, prior=prior)
        inputs += [run_path, gt_path, obs_path]
    recorder.seeds = seeds
    write_metrics(rows, out)
    recorder.extra["rows"] = len(rows)
    recorder.write(f"{out}.prov.json", outputs=[out], inputs=inputs)
    return {"rows": len(rows)}


def set_metrics(
    spec: dict[str, Any],
    root: str | os.PathLike,
    shard_records: list[str],
    images_record: str | os.PathLike,
    out: str | os.PathLike,
    context: EvaluationContext | None = None,
) -> dict[str, Any]:
    from dwgf.metrics.evaluate import policy_images, set_rows
    from dwgf.metrics.schema import RowKeys, write_metrics

    require(spec, "suite", "method", "task", "variant", "set_level", "fid_network", "torch_home", "n_particles")
    context = context or EvaluationContext()
    recorder = Recorder("set-metrics", root=root, config=spec, seeds={"kid": int(spec["seed"])})
    root = Path(root)
    images = read_step_record(images_record, "acquire-images")["extra"]["images"]
    particle_pngs: dict[str, list[Path]] = {}
    hyper: dict[str, Any] = {}
    for path in shard_records:
        shard = read_step_record(path, "solve")
        for image_id, entry in shard["extra"]["images"].items():
            files = entry["files"]
            names = sorted((k for k in files if k.startswith("p")), key=lambda k: int(k[1:]))
            if names:  # an image whose solve raised has no particles: it is absent from the fake set
                particle_pngs[image_id] = [resolve(root, files[k]) for k in names]
                hyper = hyper or _read_json(resolve(root, entry["record"])).get("hyper") or {}
    level = spec["set_level"]
    store = context.feature_store(spec["fid_network"], spec["torch_home"])
    network = store.network
    real_paths = [resolve(root, images[i]) for i in sorted(images)]
    # prior samples are float .npy ground truths: the feature network sees them as 8-bit RGB like every image
    real = store.features([display_uint8(p) if p.suffix == ".npy" else p for p in real_paths])
    keys = RowKeys(
        suite=spec["suite"],
        task=spec["task"],
        method=spec["method"],
        variant=spec["variant"],
        hyper={k: v for k, v in hyper.items() if k not in ("n_particles", "n_steps")},
        n_particles=int(spec["n_particles"]),
    )
    # the ground truth, then the extra reference set when the suite names one (dwgf.pipeline.reference)
    references = [(f"gt:{spec['suite']}:{len(real_paths)}", real)]
    extra_inputs = []
    if spec.get("reference"):
        stats_path = Path(spec["reference"]["stats"])
        stats = context.reference_stats(stats_path, network.network)
        references.append((stats.name, stats))
        extra_inputs += [stats_path, Path(f"{stats_path}.prov.json")]  # the stats and the record that made them
    rows = []
    for policy in level["policies"]:
        fakes = policy_images(particle_pngs, policy)
        for reference_name, reference in references:
            if len(fakes) < 2:
                status = f"too_few_images: {len(fakes)} < 2"
                rows += _null_set_rows(keys, policy, network.network, level, status, reference_name)
                continue
            rows += set_rows(
                store.features(fakes),
                reference,
                keys,
                sample_policy=policy,
                reference_name=reference_name,
                network=network.network,
                fid=bool(level["fid"]),
                kid=bool(level["kid"]),
                kid_seed=int(spec["seed"]),
            )
    write_metrics(rows, out)
    inputs = [Path(p) for p in shard_records] + [Path(images_record)] + real_paths
    inputs += [p for ps in particle_pngs.values() for p in ps]
    inputs += extra_inputs
    recorder.write(f"{out}.prov.json", outputs=[out], inputs=inputs)
    return {"rows": len(rows)}


def evaluate_batch(batch: dict[str, Any], root: str | os.PathLike) -> dict[str, Any]:
    """Run every unit of ``batch`` in this process with one shared :class:`EvaluationContext`.

    ``batch`` (built by :meth:`dwgf.pipeline.plan.Plan.evaluate_batch_spec`)::

        {"images": <images record>, "observations": <observe record>, "prior": <prior record>,
         "units": [{"step": "evaluate", "spec": {...}, "shard": <solve record>, "out": <parquet>},
                   {"step": "set-metrics", "spec": {...}, "shards": [<solve record>, ...], "out": <parquet>}, ...]}

    Each unit writes exactly what ``dwgf evaluate`` / ``dwgf set-metrics`` would write for it.
    """
    from tqdm.auto import tqdm

    require(batch, "images", "observations", "prior", "units")
    context = EvaluationContext()
    rows = 0
    for unit in tqdm(batch["units"], desc="evaluate-batch", unit="unit", dynamic_ncols=True):
        require(unit, "step", "spec", "out")
        if unit["step"] == "evaluate":
            require(unit, "shard")
            done = evaluate_shard(unit["spec"], root, unit["shard"], batch["images"], batch["observations"],
                                  batch["prior"], unit["out"], context=context)  # fmt: skip
        elif unit["step"] == "set-metrics":
            require(unit, "shards")
            done = set_metrics(unit["spec"], root, unit["shards"], batch["images"], unit["out"], context=context)
        else:
            raise ValueError(f"batch unit 'step' must be 'evaluate' or 'set-metrics', got {unit['step']!r}")
        rows += done["rows"]
    return {"units": len(batch["units"]), "rows": rows}


def _null_set_rows(
    keys, policy: str, network: str, level: dict[str, Any], status: str, reference: str
) -> list[dict[str, Any]]:
    from dwgf.metrics.fid import FID_PROTOCOL

    names = [("fid", FID_PROTOCOL)] if level["fid"] else []
    names += [("kid", "kid")] if level["kid"] else []
    return [
        keys.row(metric=m, protocol=p, value=None, status=status, sample_policy=policy, network=network, n_samples=0,
                 reference=reference)
        for m, p in names
    ]  # fmt: skip


def _read_json(path: Path) -> dict[str, Any]:
    import json

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; it is written by `dwgf solve` (re-run the shard)")
    return json.loads(path.read_text(encoding="utf-8"))
