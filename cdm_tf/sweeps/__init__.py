"""Sampler-parameter sweeps of one cascade stage, scored point by point.

``sweep`` runs one (the ``Sweep`` class); its pieces: ``grid`` (the points
and their names), ``earlier_stages`` (the earlier stages' outputs,
generated once and reused by every point), ``scoring`` (a point's metrics
through ``metrics.sample_scores``), ``records`` (``sweep.json``, the
points' metrics and ``sweep.csv``) and ``plots`` (the figures).
"""
