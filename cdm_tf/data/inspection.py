"""What a dataset holds, as a cascade will see it.

Reads a split through the same reader and diffusion preprocessing that
training uses, counts images per class, and gathers a few examples per class
at every cascade resolution for a contact sheet.
"""

import numpy as np

from cdm_tf.data import class_counts
from cdm_tf.data import class_names
from cdm_tf.data import diffusion_preprocessing
from cdm_tf.data import imagenet_reader
from cdm_tf.data import schema

# Largest side a contact sheet is drawn at: far above any cascade stage, and
# a mistyped 100000 would otherwise try to allocate terabytes.
MAX_RESOLUTION = 1024
# What tools/inspect_data.py writes for a split, after the split's name.
CONTACT_SHEET_SUFFIX = "_contact_sheet.png"
SUMMARY_SUFFIX = "_summary.json"


def parse_resolutions(values, flag="--resolutions"):
  """The cascade resolutions named by ``values`` (strings such as a list
  flag's, or ints), as ints in the given order.

  Larger than the stored images is allowed: the diffusion preprocessing
  upsamples small photos, as training does.

  Raises:
    ValueError: an empty list, a value that is not an integer, not in
      1..MAX_RESOLUTION, or given twice; the message names the value and
      ``flag``.
  """
  given = ",".join(str(v) for v in values)
  fix = (f"give distinct image sides from 1 to {MAX_RESOLUTION}, separated "
         f"by commas, e.g. {flag}=16,32")
  if not values:
    raise ValueError(f"no resolutions given ({flag}={given}); {fix}")
  resolutions = []
  for value in values:
    try:
      if isinstance(value, (bool, float)):
        raise ValueError(value)  # int() would accept and truncate them
      resolution = int(str(value).strip())
    except ValueError:
      raise ValueError(f"resolution {str(value)!r} is not an integer "
                       f"({flag}={given}); {fix}") from None
    if not 1 <= resolution <= MAX_RESOLUTION:
      raise ValueError(f"resolution {resolution} is outside 1.."
                       f"{MAX_RESOLUTION} ({flag}={given}); {fix}")
    if resolution in resolutions:
      raise ValueError(f"resolution {resolution} is given twice "
                       f"({flag}={given}); {fix}")
    resolutions.append(resolution)
  return resolutions


def inspect_split(data_dir, split, resolutions, per_class=4, max_classes=20,
                  num_classes=None, seed=0):
  """Summary and contact-sheet rows of one split.

  Args:
    data_dir: directory of ImageNet-format TFRecords (either format).
    split: split name, e.g. "train".
    resolutions: cascade resolutions to preprocess to, e.g. (16, 32).
    per_class: examples shown per class.
    max_classes: classes shown (the first ones by label that have images).
    num_classes: size of the label space; defaults to the class table's.
    seed: shuffling seed.

  Returns:
    (summary dict, rows): rows is one list per shown class holding, for each
    example, its image at every resolution (uint8), low to high.

  Raises:
    ValueError: bad ``resolutions`` (see ``parse_resolutions``).
  """
  resolutions = parse_resolutions(resolutions, flag="resolutions")
  classes = class_names.load_classes(data_dir)
  num_classes = num_classes or len(classes)
  files = imagenet_reader.list_files(data_dir, split=split)
  record_format = imagenet_reader.detect_format(files[0])
  counts = class_counts.count_per_class(files, record_format=record_format,
                                        num_classes=num_classes)
  # label -> examples, each a list of its images from low to high resolution
  wanted = {int(c): [] for c in np.nonzero(counts)[0][:max_classes]}
  dataset = imagenet_reader.read_dataset(files, record_format=record_format,
                                         num_classes=num_classes, seed=seed,
                                         shuffle_buffer=1000)
  for example in dataset:
    label = int(example[schema.LABEL])
    if label in wanted and len(wanted[label]) < per_class:
      images = diffusion_preprocessing.cascade_images(example[schema.IMAGE],
                                                      resolutions)
      wanted[label].append([
          diffusion_preprocessing.to_uint8(
              images[diffusion_preprocessing.image_key(r)]).numpy()
          for r in sorted(resolutions)
      ])
    if all(len(v) >= min(per_class, counts[c]) for c, v in wanted.items()):
      break
  summary = {
      "data_dir": data_dir,
      "split": split,
      "format": record_format,
      "num_files": len(files),
      "num_images": int(np.sum(counts)),
      "num_classes": num_classes,
      "class_counts": [int(c) for c in counts],
      "classes_shown": [f"{c}: {classes[c].name}" for c in wanted],
      "resolutions": sorted(int(r) for r in resolutions),
  }
  rows = [[image for example in wanted[c] for image in example] for c in wanted]
  return summary, rows
