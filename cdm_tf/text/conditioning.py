"""The text a text-conditioned U-Net reads, and the null prompt.

A text-conditioned U-Net (``text_embed_dim``, Imagen's stages) takes a
frozen encoder's embeddings of each example's prompt as three inputs:
``text_pooled`` [B, D], ``text_tokens`` [B, L, D] and ``text_mask`` [B, L].
Batches, class-prompt tables and sampling calls all carry them under these
keys, so they are defined once here, next to the encoders that make them.

The null prompt of classifier-free guidance is NO text: zero token and
pooled embeddings with an all-False mask. Cross-attention then attends to
the image's own positions only (the U-Net's attention concatenates text keys
to pixel keys) and the pooled projection adds only its bias. It is
independent of the encoder, so the unconditional branch needs no encoder
and the null condition learned in pretraining carries over to fine-tuning
unchanged. (The empty prompt "" is a real prompt, encoded like any other.)
"""

import tensorflow as tf

# The U-Net's text inputs: pooled [B, D], tokens [B, L, D], mask [B, L].
TEXT_POOLED, TEXT_TOKENS, TEXT_MASK = "text_pooled", "text_tokens", "text_mask"
TEXT_KEYS = (TEXT_POOLED, TEXT_TOKENS, TEXT_MASK)


def text_inputs(text):
  """The U-Net's text inputs from ``TextEmbeddings`` or a dict of them."""
  if not isinstance(text, dict):
    text = {
        TEXT_POOLED: text.pooled, TEXT_TOKENS: text.tokens, TEXT_MASK: text.mask
    }
  missing = [k for k in TEXT_KEYS if k not in text]
  if missing:
    raise ValueError(f"text conditioning lacks {missing}")
  return {
      TEXT_POOLED: tf.cast(text[TEXT_POOLED], tf.float32),
      TEXT_TOKENS: tf.cast(text[TEXT_TOKENS], tf.float32),
      TEXT_MASK: tf.cast(text[TEXT_MASK], tf.bool)
  }


def null_text(text):
  """The null prompt (no text) shaped like ``text``: zeros, mask False."""
  return {
      TEXT_POOLED: tf.zeros_like(text[TEXT_POOLED]),
      TEXT_TOKENS: tf.zeros_like(text[TEXT_TOKENS]),
      TEXT_MASK: tf.zeros_like(text[TEXT_MASK])
  }


def drop_text(text, drop):
  """``text`` with the rows where ``drop`` [B] is True set to the null
  prompt."""
  null = null_text(text)
  return {
      key: tf.where(tf.reshape(drop, [-1] + [1] * (text[key].shape.rank - 1)),
                    null[key], text[key]) for key in TEXT_KEYS
  }
