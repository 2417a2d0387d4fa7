"""Metric values that always say which feature network produced them.

An FID on Inception-v3 features and one on a Fashion-MNIST classifier's
features are different quantities; so is FID@10K against FID@50K, and FID
against training statistics against FID against validation statistics.
``MetricValue.label`` spells all of it out, e.g.
"FID@50K vs train (Inception-v3 pool3)", and ``MetricsReport`` writes the
values as JSON (atomically) and as a text table, with notes on what was
not reported and why (e.g. no Inception Score without logits).
"""

import dataclasses
import math

from cdm_tf import files


def count_label(count):
  """10000 -> "10K", 50000 -> "50K", 1234 -> "1234"."""
  count = int(count)
  if count >= 1000 and count % 1000 == 0:
    return f"{count // 1000}K"
  return str(count)


@dataclasses.dataclass(frozen=True)
class MetricValue:
  """One metric value and what it was computed on.

  Attributes:
    metric: "FID", "IS", "KID", "precision" or "recall".
    value: the value (KID: mean over subsets; IS: mean over splits).
    network: the feature network's name, e.g. "Inception-v3 pool3".
    num_samples: generated images it was computed on.
    reference: the real split compared against ("train", "validation"), or
      None for metrics of the samples alone (IS).
    std: standard deviation over splits / subsets, if the metric has one.
    details: anything else worth keeping (e.g. the covariance offset FID
      needed, subset sizes).
  """
  metric: str
  value: float
  network: str
  num_samples: int
  reference: str | None = None
  std: float | None = None
  details: dict = dataclasses.field(default_factory=dict)

  @property
  def label(self):
    text = f"{self.metric}@{count_label(self.num_samples)}"
    if self.reference:
      text += f" vs {self.reference}"
    return f"{text} ({self.network})"

  def as_dict(self):
    return {
        "label": self.label, "metric": self.metric,
        "value": _json_number(self.value), "std": _json_number(self.std),
        "network": self.network, "num_samples": self.num_samples,
        "reference": self.reference, "details": self.details
    }


def _json_number(value):
  if value is None:
    return None
  value = float(value)
  return value if math.isfinite(value) else str(value)


@dataclasses.dataclass
class MetricsReport:
  """An ordered collection of ``MetricValue``s.

  Attributes:
    values: the ``MetricValue``s.
    notes: sentences on metrics left out and why, printed and written with
      the values.
  """
  values: list = dataclasses.field(default_factory=list)
  notes: list = dataclasses.field(default_factory=list)

  def add(self, value):
    self.values.append(value)

  def extend(self, values):
    self.values.extend(values)

  def get(self, label):
    for value in self.values:
      if value.label == label:
        return value
    raise KeyError(f"no metric {label!r}; have "
                   f"{[v.label for v in self.values]}")

  def as_dict(self):
    return {
        "metrics": [v.as_dict() for v in self.values], "notes": list(self.notes)
    }

  def write_json(self, path):
    files.atomic_write_json(path, self.as_dict())

  def format_table(self):
    """One line per value: label, value (+- std); then the notes."""
    width = max((len(v.label) for v in self.values), default=0)
    lines = []
    for v in self.values:
      text = f"{v.value:.4f}" if v.std is None else (
          f"{v.value:.4f} +- {v.std:.4f}")
      lines.append(f"{v.label:<{width}}  {text}")
    lines.extend(f"note: {note}" for note in self.notes)
    return "\n".join(lines)
