"""Class prompts: the short class name that conditions the cascade.

Azizi et al. (Sec. 4) turn the text-to-image model into a class-conditional
one by fixing each class's prompt to "the one or two words class names"
of CLIP (its reference [43]) and fine-tuning; no prompt template, no prompt
tuning. CLIP's list is a hand-edited set of short common names (e.g.
"tench", "great white shark", "construction crane"), not a rule applied to
WordNet, and no package installed here ships it. So:

* By default the prompt name is derived from the shipped class table
  (``cdm_tf.data.class_names``; for ImageNet keras-hub's names, which are
  already WordNet's first synonym): the first of the alternatives separated
  by "," or "/", underscores and brackets turned into spaces, characters
  other than letters, digits, space, ' - . & dropped, whitespace collapsed,
  case kept (T5 is cased). Names are NOT cut to two words: the paper's
  "one or two words" describes CLIP's names, which keep longer species and
  breed names whole ("great white shark", "Old English sheepdog"); 976 of
  the 1000 derived ImageNet names have one or two words anyway.
* Three ImageNet name pairs collide ("crane": bird / machine; "maillot":
  dancer's tights / bathing suit; "Cardigan" the corgi / "cardigan" the
  sweater, the same words to an uncased encoder); a prompt must single out
  its class, so these get their WordNet sense spelled out. Any other
  collision (compared case-insensitively) is an error.
* A curated list, e.g. CLIP's, can be supplied instead with
  ``load_names_file`` (one name per line, or a JSON list, in label order).

``class_prompts`` applies an optional template ("{}" by default, as in the
paper; e.g. "a photo of a {}").
"""

import json
import re

import tensorflow as tf

from cdm_tf.data import class_names

DEFAULT_TEMPLATE = "{}"

# Classes whose first synonym names another class too, keyed by synset:
# (ambiguous name, the name that says which sense is meant).
_IMAGENET_SENSES = {
    "n02012849": ("crane", "crane bird"),  # the wading bird
    "n03126707": ("crane", "construction crane"),  # the lifting machine
    "n03710637": ("maillot", "tights"),  # tights for dancers or gymnasts
    "n03710721": ("maillot", "one-piece bathing suit"),  # tank suit
    # Differs from the sweater (n02963159) only by case; MiniLM is uncased.
    "n02113186": ("Cardigan", "Cardigan Welsh corgi"),
}
_ALTERNATIVES = re.compile(r"[,/]")
_SEPARATORS = re.compile(r"[_()\[\]{}]")


def clean_class_name(name):
  """The prompt form of one class name (see the module docstring)."""
  first = _ALTERNATIVES.split(name, maxsplit=1)[0]
  text = _SEPARATORS.sub(" ", first)
  text = "".join(c for c in text if c.isalnum() or c.isspace() or c in "'-.&")
  text = " ".join(text.split()).strip(" .-")
  if not text:
    raise ValueError(f"class name {name!r} has no usable words")
  return text


def prompt_names(classes):
  """Prompt names of ``ClassInfo``s, in label order; unique or an error."""
  names = []
  for info in classes:
    name = clean_class_name(info.name)
    ambiguous, sense = _IMAGENET_SENSES.get(info.synset, (None, None))
    names.append(sense if name == ambiguous else name)
  seen = {}
  for label, name in enumerate(names):
    seen.setdefault(name.lower(), []).append(label)
  duplicates = {n: labels for n, labels in seen.items() if len(labels) > 1}
  if duplicates:
    raise ValueError(f"classes share a prompt name (label lists): "
                     f"{duplicates}; supply distinct names with "
                     "load_names_file")
  return names


def imagenet_prompt_names():
  """The 1000 ImageNet prompt names in label order (0-based)."""
  return prompt_names(class_names.imagenet_classes())


def dataset_prompt_names(data_dir=None):
  """Prompt names of the dataset in ``data_dir`` (its classes.json), else
  of ImageNet, in label order."""
  return prompt_names(class_names.load_classes(data_dir))


def load_names_file(path, num_classes=None):
  """Curated names in label order: a JSON list, or one name per line."""
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  if text.lstrip().startswith("["):
    names = json.loads(text)
  else:
    names = [line.strip() for line in text.splitlines() if line.strip()]
  if not all(isinstance(n, str) and n.strip() for n in names):
    raise ValueError(f"{path}: every name must be a non-empty string")
  if num_classes is not None and len(names) != num_classes:
    raise ValueError(f"{path}: {len(names)} names for {num_classes} classes")
  return [n.strip() for n in names]


def class_prompts(names, template=DEFAULT_TEMPLATE):
  """One prompt per class: ``template`` with "{}" replaced by the name."""
  if template.count("{}") != 1 or template.replace("{}", "").count("{"):
    raise ValueError(f"template must hold exactly one '{{}}', got "
                     f"{template!r}")
  return [template.replace("{}", name) for name in names]
