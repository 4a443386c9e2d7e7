"""MaskedAdam runs torch.optim.Adam's update through its functional form: bitwise the class's values, and no
``torch._dynamo`` import (the class imports it on construction: ~1.7 CPU s per solve process)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dwgf.solvers.base import MaskedAdam, keep_rows


def _reference_run(param0, grads, keeps, lr, betas, eps, lrs):
    """The pre-change MaskedAdam, on torch.optim.Adam itself."""
    param = param0.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([param], lr=lr, betas=betas, eps=eps)
    for grad, keep, step_lr in zip(grads, keeps, lrs):
        optimiser.param_groups[0]["lr"] = step_lr
        state = optimiser.state.get(param, {})
        previous = {key: state[key].clone() for key in ("exp_avg", "exp_avg_sq") if key in state}
        previous["param"] = param.detach().clone()
        param.grad = keep_rows(keep, grad, torch.zeros_like(grad))
        optimiser.step()
        state = optimiser.state[param]
        with torch.no_grad():
            param.copy_(keep_rows(keep, param, previous["param"]))
            for key in ("exp_avg", "exp_avg_sq"):
                before = previous.get(key, torch.zeros_like(state[key]))
                state[key].copy_(keep_rows(keep, state[key], before))
    state = optimiser.state[param]
    return param.detach(), state["exp_avg"], state["exp_avg_sq"], state["step"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.9, 0.99)])
def test_masked_adam_is_bitwise_torch_adam(dtype, betas):
    generator = torch.Generator().manual_seed(3)
    rows, steps = 8, 40
    param0 = torch.randn(rows, 4, 8, 8, generator=generator, dtype=dtype)
    grads = [torch.randn(rows, 4, 8, 8, generator=generator, dtype=dtype) * 10 ** (k % 5 - 2) for k in range(steps)]
    keeps = [torch.ones(rows, dtype=torch.bool) for _ in range(steps)]
    for k in range(25, steps):  # rows 2-3 frozen from step 25 on, as a diverged image's particles
        keeps[k][2:4] = False
    lrs = [0.1 * (1 - k / steps) for k in range(steps)]  # a schedule: param_groups[0]["lr"] changed per step

    expected = _reference_run(param0, grads, keeps, 0.1, betas, 1e-8, lrs)
    param = param0.clone().requires_grad_(True)
    masked = MaskedAdam(param, lr=0.1, betas=betas, eps=1e-8)
    for grad, keep, step_lr in zip(grads, keeps, lrs):
        masked.optimiser.param_groups[0]["lr"] = step_lr
        masked.step(grad, keep)
    state = masked.optimiser.state[param]
    got = (param.detach(), state["exp_avg"], state["exp_avg_sq"], state["step"])
    for name, a, b in zip(("param", "exp_avg", "exp_avg_sq", "step"), got, expected):
        assert a.dtype == b.dtype, name
        assert torch.equal(a, b), f"{name} differs from torch.optim.Adam's (max {float((a - b).abs().max())})"
    assert not torch.equal(param.detach()[2:4], param0[2:4])  # the frozen rows moved before step 25


def test_masked_adam_rejects_what_torch_adam_rejects():
    param = torch.zeros(2, requires_grad=True)
    for kwargs in ({"lr": -1.0}, {"eps": -1.0}, {"betas": (1.0, 0.9)}, {"betas": (0, 0.9)}):
        arguments = {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, **kwargs}
        with pytest.raises(ValueError):
            torch.optim.Adam([param], **arguments)
        with pytest.raises(ValueError):
            MaskedAdam(param, **arguments)


def test_masked_adam_does_not_import_dynamo():
    code = (
        "import sys, torch\n"
        "from dwgf.solvers.base import MaskedAdam\n"
        "p = torch.zeros(4, 3, requires_grad=True)\n"
        "m = MaskedAdam(p, lr=0.1, betas=(0.9, 0.999), eps=1e-8)\n"
        "m.step(torch.ones(4, 3), torch.ones(4, dtype=torch.bool))\n"
        "assert float(p[0, 0]) != 0.0\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
