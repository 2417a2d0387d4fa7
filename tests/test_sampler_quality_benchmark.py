"""benchmarks/sampler_quality.py's tables: FID ratios to DDPM 250 per seed
and over seeds, and the cheapest setting within the tolerance."""

import csv
import os
import sys

import pytest

sys.path.insert(
    0,
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                 "benchmarks"))
import sampler_quality  # pylint: disable=g-import-not-at-top,wrong-import-position

FID = "FID@100 vs train (features)"


def _sweep_csv(path, fids):
  """A sweep.csv of DDPM 250 and DPM-Solver++ 2M at 10 and 20 steps."""
  points = [("ddpm", "250", "", 250), ("dpmpp_2m", "", "10", 10),
            ("dpmpp_2m", "", "20", 20)]
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow([
        "point", "sampler", "timestep_respacing", "steps", FID,
        "precision@100 vs train (features)", "recall@100 vs train (features)",
        "network_evaluations_per_image", "generation_images_per_second"
    ])
    for (sampler, respacing, steps, evaluations), fid in zip(points, fids):
      writer.writerow([
          f"{sampler}{respacing}{steps}", sampler, respacing, steps, fid, 0.7,
          0.6, evaluations, 1.0
      ])
  return path


def test_one_seed_ratios_and_cheapest(tmp_path):
  label, table, cheapest = sampler_quality.summarize(
      _sweep_csv(tmp_path / "a.csv", [10.0, 10.4, 9.0]), 0.05)
  assert label == FID
  assert [(t["setting"], t["evaluations"], t["fid_ratio"]) for t in table
         ] == [("ddpm 250", 250, 1.0), ("dpmpp_2m 10", 10, pytest.approx(1.04)),
               ("dpmpp_2m 20", 20, pytest.approx(0.9))]
  assert cheapest["setting"] == "dpmpp_2m 10"
  _, _, cheapest = sampler_quality.summarize(
      _sweep_csv(tmp_path / "b.csv", [10.0, 10.6, 9.0]), 0.05)
  assert cheapest["setting"] == "dpmpp_2m 20"


def test_over_seeds_certifies_only_whole_intervals(tmp_path):
  tables = [
      sampler_quality.summarize(_sweep_csv(tmp_path / f"{i}.csv", fids),
                                0.05)[1]
      for i, fids in enumerate([[10.0, 10.4, 9.0], [10.0, 9.6, 9.2],
                                [10.0, 10.0, 9.1]])
  ]
  rows, certified = sampler_quality.over_seeds(tables, 0.05)
  by_setting = {setting: summary for setting, _, summary in rows}
  # 2M 10: ratios 1.04, 0.96, 1.00, mean 1.0, sd 0.04,
  # half-width 4.302653 * 0.04 / sqrt(3) = 0.099365.
  assert by_setting["dpmpp_2m 10"].mean == pytest.approx(1.0)
  assert by_setting["dpmpp_2m 10"].high == pytest.approx(1.099365, abs=1e-5)
  # Its interval reaches past 1.05; 2M 20's (0.90-0.92) does not.
  assert certified[0] == "dpmpp_2m 20"
  rows, certified = sampler_quality.over_seeds(tables[:1], 0.05)
  assert certified is None  # one seed has no interval
