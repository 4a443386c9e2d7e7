"""dwgf: auditable reproduction of Diffusion-regularized Wasserstein Gradient Flow (arXiv 2509.19276).

Sub-packages, with dependencies pointing one way:

* :mod:`dwgf.operators` -- forward operators A (physics); import nothing else from dwgf.
* :mod:`dwgf.priors` -- latent priors (Stable Diffusion, exact-posterior test bed); import nothing else.
* :mod:`dwgf.solvers` -- DWGF and baselines; use priors and operators.
* :mod:`dwgf.metrics`, :mod:`dwgf.provenance` -- evaluation and audit records.
* :mod:`dwgf.cli` -- the ``dwgf`` command that the Snakemake rules call.
"""

__version__ = "0.1.0"
