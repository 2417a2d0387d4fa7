"""The pipeline report from real-format step outputs: a Fashion-MNIST subset,
a synthetic set, run directories written by the writers the trainers use;
and a report of a job whose steps did not all run."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from cdm_tf.classifiers import cas
from cdm_tf.classifiers import evaluation
from cdm_tf.data import contact_sheet
from cdm_tf.data_preparation import fashion_mnist
from cdm_tf.metrics import report as metrics_report
from cdm_tf.pipeline import report
from cdm_tf.pipeline import report_figures
from cdm_tf.pipeline import run_outputs
from cdm_tf.synthetic_set import reader
from cdm_tf.synthetic_set import split_manifest
from tests import fashion_mnist_subset
from tests import synthetic_records

NUM_CLASSES = fashion_mnist.NUM_CLASSES
VALIDATION_PER_CLASS = 2
PER_CLASS = 3  # one more than the real validation split has: a grey cell
SIDE = 32
NETWORK = "Fashion-MNIST classifier features: tiny ResNet pool"
DIFFUSION_LOSS = [(10, 0.91), (20, 0.52), (30, 0.33)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline_report")
  real = fashion_mnist_subset.prepared(
      str(root / "real"), per_class=(PER_CLASS, VALIDATION_PER_CLASS))
  synthetic = str(root / "synthetic")
  synthetic_records.write(real, synthetic, PER_CLASS)
  return root, real, synthetic


def _write_events(log_dir, series):
  """{tag: [(step, value)]} as TF2 scalar summaries, like the trainers."""
  writer = tf.summary.create_file_writer(log_dir)
  with writer.as_default():
    for tag, points in series.items():
      for step, value in points:
        tf.summary.scalar(tag, value, step=step)
  writer.close()


def _diffusion_run(model_dir):
  _write_events(
      os.path.join(model_dir, "tensorboard"), {
          "train/loss": DIFFUSION_LOSS, "train/grad_norm": [(10, 5.0),
                                                            (20, 4.0),
                                                            (30, 3.0)]
      })
  for step, value in ((10, 0), (30, 200)):
    contact_sheet.write_png(
        os.path.join(model_dir, "samples", f"step_{step:08d}.png"),
        np.full((40, 60, 3), value, np.uint8))
  tf.io.gfile.makedirs(os.path.join(model_dir, "export"))
  return model_dir


def _classifier_run(model_dir, data, top1_correct, real, synthetic,
                    is_cas=False, num_steps=40):
  """A finished run: run.json, events, and eval/ by ``write_reports``."""
  _write_events(
      os.path.join(model_dir, "tensorboard"), {
          "train/loss": [(20, 2.5), (40, 1.75)],
          "eval/top1": [(40, float(np.sum(top1_correct)) / 20)]
      })
  tf.io.gfile.makedirs(model_dir)
  with open(os.path.join(model_dir, "run.json"), "w") as f:
    json.dump(
        {
            "model": "resnet_tiny", "parameters": 1234, "num_steps": num_steps,
            "training_data": {
                "data": data, "real_examples_per_epoch": real,
                "synthetic_examples_per_epoch": synthetic
            }
        }, f)
  examples = np.full(NUM_CLASSES, VALIDATION_PER_CLASS, np.float64)
  top1 = np.asarray(top1_correct, np.float64)
  result = evaluation.EvalResult(examples, top1, np.minimum(top1 + 1, 2),
                                 step=num_steps)
  evaluation.write_reports(os.path.join(model_dir, "eval"), result,
                           classes=fashion_mnist.CLASSES)
  if is_cas:
    with open(os.path.join(model_dir, cas.REPORT_FILE), "w") as f:
      json.dump({"cas_top1": result.top1, "cas_top5": result.top5}, f)
  return result


def _metrics_file(path):
  metrics = metrics_report.MetricsReport()
  metrics.add(
      metrics_report.MetricValue("FID", 123.456, NETWORK, 30,
                                 reference="validation"))
  metrics.add(metrics_report.MetricValue("IS", 2.5, NETWORK, 30, std=0.125))
  metrics.notes.append("KID not reported: too few images.")
  metrics.write_json(path)
  return metrics


def _png(path):
  with open(path, "rb") as f:
    return tf.io.decode_png(f.read(), channels=3).numpy()


def _upscaled(image, factor):
  return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def _links(markdown):
  return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_full_report(data):
  root, real, synthetic = data
  runs = root / "runs"
  diffusion = {
      "base": _diffusion_run(str(runs / "base")),
      "super-resolution": _diffusion_run(str(runs / "sr"))
  }
  real_result = _classifier_run(str(runs / "real"), "real",
                                [2, 2, 1, 2, 0, 2, 2, 1, 2, 2], 30, 0)
  cas_result = _classifier_run(str(runs / "cas"), "synthetic",
                               [1, 2, 0, 1, 0, 2, 0, 1, 2, 0], 0, 30,
                               is_cas=True)
  reference_result = _classifier_run(str(runs / "reference"), "real",
                                     [2, 2, 1, 1, 0, 2, 1, 1, 2, 2], 30, 0,
                                     is_cas=True)
  mixed_result = _classifier_run(str(runs / "mixed"), "real+synthetic",
                                 [2, 2, 2, 2, 0, 2, 1, 1, 2, 2], 30, 30,
                                 num_steps=60)
  metrics = _metrics_file(str(root / "metrics.json"))
  report_dir = str(root / "report")

  path = report.write_report(
      report_dir, title="Fashion-MNIST end to end", real_data_dir=real,
      synthetic_dir=synthetic, diffusion_runs=diffusion, classifier_runs={
          "real": str(runs / "real"), "synthetic only (CAS)": str(runs / "cas"),
          "CAS reference": str(runs / "reference"),
          "real + synthetic": str(runs / "mixed")
      }, metrics_file=str(root / "metrics.json"),
      settings={"real data": real, "diffusion": {"steps": 30, "lr": 1e-4}},
      step_seconds={"prepare data": 3.2, "train base": 125.0},
      samples_per_class=PER_CLASS, notes=["a tiny run on CPU"])

  assert path == os.path.join(report_dir, "report.md")
  with open(path) as f:
    text = f.read()
  assert text.startswith("# Fashion-MNIST end to end\n")
  assert "- a tiny run on CPU" in text
  # Accuracy rows: label, model, real + synthetic images, steps, top-1 %,
  # top-5 %, and the CAS marked.
  for label, result, images, note in (("real", real_result, "| 30 | 0 | 40 |",
                                       ""), ("synthetic only (CAS)", cas_result,
                                             "| 0 | 30 | 40 |", "CAS"),
                                      ("CAS reference", reference_result,
                                       "| 30 | 0 | 40 |",
                                       "CAS protocol, real images"),
                                      ("real + synthetic", mixed_result,
                                       "| 30 | 30 | 60 |", "")):
    row = (f"| {label} | resnet_tiny {images} {100 * result.top1:.2f} | "
           f"{100 * result.top5:.2f} | {note} |")
    assert row in text
  assert f"{100 * real_result.top1:.2f}" == "80.00"
  # CAS over its reference, by hand: (9 / 20) / (14 / 20) = 0.642857.
  assert ("CAS / the same protocol on real images: 0.4500 / 0.7000 = "
          "**0.643** (one run each; trained on 30 generated and 30 real "
          "images;") in text
  for value in metrics.values:
    assert value.label in text
  assert "- KID not reported: too few images.\n" in text
  assert "| FID@30 vs validation (" + NETWORK + ") | 123.5 | 30 |" in text
  assert "| IS@30 (" + NETWORK + ") | 2.5 ± 0.125 | 30 |" in text
  for info in fashion_mnist.CLASSES:
    assert info.name in text
  assert "| diffusion.lr | 0.0001 |" in text
  assert "| train base | 2 min 05 s |" in text
  assert "| base | 30 | 0.33 | finished, exported |" in text

  # Every image is linked relatively and exists in the folder.
  links = _links(text)
  assert set(links) >= {
      "samples_per_class.png", "accuracy.png", "loss_curves.png",
      "samples_base.png", "samples_super_resolution.png", "per_class_real.png",
      "per_class_synthetic_only_cas.png", "per_class_real_synthetic.png"
  }
  for link in links:
    assert not os.path.isabs(link) and "/" not in link
    assert _png(os.path.join(report_dir, link)).size > 0

  # The last sample sheet and the per-class plots are copied unchanged.
  with open(os.path.join(report_dir, "samples_base.png"), "rb") as f:
    copied = f.read()
  with open(str(runs / "base" / "samples" / "step_00000030.png"), "rb") as f:
    assert copied == f.read()
  with open(os.path.join(report_dir, "per_class_real.png"), "rb") as f:
    copied = f.read()
  with open(str(runs / "real" / "eval" / "per_class_accuracy.png"), "rb") as f:
    assert copied == f.read()

  # One row per class: generated | real, each cell the image upscaled x2.
  grid = _png(os.path.join(report_dir, "samples_per_class.png"))
  cell = report_figures.cell_size(SIDE)
  assert cell == 64
  step = cell + report_figures.GAP
  block = PER_CLASS * step + report_figures.GAP
  assert grid.shape == (report_figures.HEADER_HEIGHT + NUM_CLASSES * step +
                        report_figures.GAP, report_figures.LABEL_WIDTH +
                        2 * block + report_figures.SEPARATOR_WIDTH, 3)
  generated = {}
  for element in reader.read(
      split_manifest.read(synthetic,
                          "train").shard_paths(synthetic)).as_numpy_iterator():
    generated.setdefault(int(element["label"]), []).append(element["image"])
  validation = synthetic_records.real_images_by_class(real, "validation")
  real_left = (report_figures.LABEL_WIDTH + block +
               report_figures.SEPARATOR_WIDTH + report_figures.GAP)
  for c in range(NUM_CLASSES):
    top = report_figures.HEADER_HEIGHT + report_figures.GAP + c * step
    for k in range(PER_CLASS):
      # The first images of the class in shard (record) order.
      left = report_figures.LABEL_WIDTH + report_figures.GAP + k * step
      np.testing.assert_array_equal(grid[top:top + cell, left:left + cell],
                                    _upscaled(generated[c][k], 2))
      cells = grid[top:top + cell,
                   real_left + k * step:real_left + k * step + cell]
      if k < VALIDATION_PER_CLASS:
        np.testing.assert_array_equal(cells, _upscaled(validation[c][k], 2))
      else:
        assert np.all(cells == report_figures.PLACEHOLDER)


def test_scalars_read_back_as_written(tmp_path):
  log_dir = str(tmp_path / "tensorboard")
  _write_events(log_dir,
                {"train/loss": DIFFUSION_LOSS, "eval/top1": [(30, 0.5)]})
  scalars = run_outputs.read_scalars(log_dir, "train/loss")
  np.testing.assert_array_equal(scalars.steps, [s for s, _ in DIFFUSION_LOSS])
  np.testing.assert_array_equal(scalars.values,
                                np.float32([v for _, v in DIFFUSION_LOSS]))
  assert not len(run_outputs.read_scalars(log_dir, "train/absent"))
  assert not len(run_outputs.read_scalars(str(tmp_path / "none"), "train/loss"))


def test_missing_steps_say_not_run(data, tmp_path):
  _, real, _ = data
  finished = _classifier_run(str(tmp_path / "real"), "real", [2] * NUM_CLASSES,
                             30, 0)
  # Stopped before the end: only a periodic evaluation in its events.
  stopped = str(tmp_path / "mixed")
  _write_events(
      os.path.join(stopped, "tensorboard"), {
          "train/loss": [(10, 2.0)], "eval/top1": [(10, 0.25)],
          "eval/top5": [(10, 0.75)]
      })
  # A file cut short: that run is reported unreadable, the rest as usual.
  broken = str(tmp_path / "broken")
  tf.io.gfile.makedirs(os.path.join(broken, "eval"))
  with open(os.path.join(broken, "eval", "eval.json"), "w") as f:
    f.write('{"top1": 0.')
  report_dir = str(tmp_path / "report")

  path = report.write_report(
      report_dir, title="partial", real_data_dir=real,
      synthetic_dir=str(tmp_path / "no_synthetic"),
      diffusion_runs={"base": str(tmp_path / "no_base")}, classifier_runs={
          "real": str(tmp_path / "real"),
          "synthetic only (CAS)": str(tmp_path / "no_cas"),
          "real + synthetic": stopped, "broken": broken
      }, metrics_file=str(tmp_path / "no_metrics.json"))

  with open(path) as f:
    text = f.read()
  assert f"| real | resnet_tiny | 30 | 0 | 40 | {100 * finished.top1:.2f} |" \
      in text
  assert "| synthetic only (CAS) | - | - | - | - | - | - | not run |" in text
  assert ("| real + synthetic | - | - | - | 10 | 25.00 | 75.00 | "
          f"{run_outputs.PERIODIC} |") in text
  assert "| broken | - | - | - | - | - | - | unreadable: ValueError: " in text
  assert "is not valid JSON" in text
  assert "Sample-quality metrics not run." in text
  assert "Generation not run" in text
  assert "| base | - | - | not run |" in text
  assert not os.path.exists(os.path.join(report_dir, "samples_per_class.png"))
  for link in _links(text):
    assert os.path.exists(os.path.join(report_dir, link))
  assert "accuracy.png" in _links(text) and "loss_curves.png" in _links(text)
