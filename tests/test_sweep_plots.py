"""The figures of a sampler sweep (cdm_tf.sweeps.plots): Pareto fronts and
plot views. The figures themselves are drawn in tests/test_sweep.py."""

import numpy as np
import pytest

from cdm_tf.sweeps import plots


def test_pareto_front_and_views():
  # Lower FID and higher IS are better: (IS 5, FID 3) is beaten by (6, 2).
  mask = plots.pareto_mask([5, 6, 7, 4, np.nan], [3, 2, 4, 1, 0],
                           x_higher_is_better=True, y_higher_is_better=False)
  assert mask.tolist() == [False, True, True, True, False]
  assert plots.resolve_views(["logvar_coeff", "guidance_weight"
                             ]) == [("guidance_weight", "logvar_coeff")]
  assert plots.resolve_views(["aug_level"]) == [("aug_level", None)]
  with pytest.raises(ValueError, match="is not swept"):
    plots.resolve_views(["aug_level"], [["guidance_weight"]])
