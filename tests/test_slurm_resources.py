"""dwgf.pipeline.slurm_resources: the Slurm profile's site values (no cluster needed)."""

from __future__ import annotations

import pytest

from dwgf.pipeline.slurm_resources import INT_DEFAULTS, load_site


def site_file(tmp_path, text: str) -> dict[str, str]:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return {"DWGF_SLURM_SITE": str(path)}


def test_defaults_and_partition_fallback(tmp_path):
    site = load_site(site_file(tmp_path, "partition: cpu\n"))
    assert site == {**INT_DEFAULTS, "partition": "cpu", "gpu_partition": "cpu"}


def test_environment_wins_over_the_file_and_is_converted(tmp_path):
    env = {**site_file(tmp_path, "partition: cpu\nmem_mb: 1000\n"), "DWGF_SLURM_MEM_MB": "2500"}
    env["DWGF_SLURM_GPU_MODEL"] = " a100 "
    site = load_site(env)
    assert site["mem_mb"] == 2500 and site["gpu_model"] == "a100"


def test_missing_explicit_file_names_the_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match="DWGF_SLURM_SITE"):
        load_site({"DWGF_SLURM_SITE": str(tmp_path / "absent.yaml")})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("partiton: cpu\n", r"unknown key\(s\) \['partiton'\]"),
        ("mem_mb: lots\n", "mem_mb='lots' is not an integer"),
        ("cpus_per_gpu: 0\n", "cpus_per_gpu=0 is out of range"),
        ("solve_gpus: -1\n", "solve_gpus=-1 is out of range"),
        ("solve_gpus: 0\ngpu_model: a100\n", "gpu_model is set but solve_gpus is 0"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_bad_site_values_name_the_key(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        load_site(site_file(tmp_path, text))


def test_cpu_only_site_is_allowed(tmp_path):
    assert load_site(site_file(tmp_path, "solve_gpus: 0\n"))["solve_gpus"] == 0


def test_without_a_site_file_everything_is_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no workflow/profiles/slurm/site.yaml here
    assert load_site({}) == INT_DEFAULTS
