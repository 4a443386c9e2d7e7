"""The workflow's Python side: config loading/validation (:mod:`.config`), the suite plan and artifact layout
(:mod:`.plan`), and one module per pipeline step, called by the ``dwgf`` verbs in :mod:`dwgf.cli.pipeline`.

Nothing here imports torch at module level: the Snakefile imports :mod:`.plan` at parse time.
"""
