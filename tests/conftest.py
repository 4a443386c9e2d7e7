"""Shared test set-up: offline hub, few threads, markers that skip cleanly."""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# The tests work on 64 px images: thread start-up costs more than it saves there, and on a busy 2-core
# machine two OpenMP threads per process were measured 7-10x slower than one.
torch.set_num_threads(1)

# Slow tests opt-in, --run-slow, --cpu-durations=N: tests/_suite_policy.py.
pytest_plugins = ["_suite_policy"]


def pytest_collection_modifyitems(config, items):
    has_gpu = torch.cuda.is_available()
    has_slurm = shutil.which("sbatch") is not None
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)"))
        if "slurm" in item.keywords and not has_slurm:
            item.add_marker(pytest.mark.skip(reason="needs a local Slurm: sbatch not on PATH (see tests/slurm/)"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module on one thread, restored afterwards (a test may raise it, e.g. ``dwgf testbed-compare --threads``).

    Why: the test-bed tensors are tiny (256-d latents), and on the shared 2-core machine two threads made each solve
    7-10x slower (measured 13.4 s vs 1.3 s for 30 steps under load), so threading only adds contention here.
    Use: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory):
    """A tiny random-weight SD-style diffusers folder (dwgf.testing.tiny_sd), built once per session (~7 MB)."""
    from dwgf.testing.tiny_sd import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"), seed=0, sample_size=64)
