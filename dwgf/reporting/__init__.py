"""Tables, plots and the qualitative grid of the workflow (``dwgf tables``, ``dwgf plots``, ``dwgf qualitative``).

They read only the workflow's artifacts (``metrics.parquet``, ``set_metrics.parquet``, the solve records and
PNGs), never the solvers, so a report can be rebuilt from results alone.
"""
