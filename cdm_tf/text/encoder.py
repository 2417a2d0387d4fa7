"""One interface for the frozen text encoders that condition the cascade.

A text-to-image cascade reads two things from its text encoder (Imagen):
the per-token embeddings, attended to by cross-attention, and one pooled
vector per prompt, added to the diffusion time-step embedding. Every encoder
here (all-MiniLM-L6-v2, T5) therefore turns a list of prompts into
``TextEmbeddings``: tokens [B, L, D] float32, mask [B, L] bool and
pooled [B, D] float32, with L = the encoder's fixed ``max_length`` so that
embeddings of different prompt sets stack and cache alike.

Encoders also expose a ``fingerprint`` (weights, vocabulary, settings) so
that cached embeddings are reused only for the encoder that made them.
"""

import abc
import dataclasses

import numpy as np

from cdm_tf import fingerprints


@dataclasses.dataclass(frozen=True)
class TextEmbeddings:
  """What the cascade is conditioned on, for B prompts.

  Attributes:
    tokens: [B, L, D] float32 last-layer token embeddings; zero where
      ``mask`` is False.
    mask: [B, L] bool, True for real tokens (incl. special tokens such as
      [CLS]/[SEP] or </s>), False for padding.
    pooled: [B, D] float32, one vector per prompt (see each encoder).
  """
  tokens: np.ndarray
  mask: np.ndarray
  pooled: np.ndarray

  def __post_init__(self):
    b, length, d = self.tokens.shape
    if self.mask.shape != (b, length) or self.pooled.shape != (b, d):
      raise ValueError(f"inconsistent shapes: tokens {self.tokens.shape}, "
                       f"mask {self.mask.shape}, pooled {self.pooled.shape}")

  def __len__(self):
    return self.tokens.shape[0]

  def gather(self, indices):
    """Embeddings of the given rows, e.g. of a batch of class labels."""
    indices = np.asarray(indices)
    return TextEmbeddings(tokens=self.tokens[indices], mask=self.mask[indices],
                          pooled=self.pooled[indices])


def masked_mean(tokens, mask):
  """Mean of ``tokens`` [B, L, D] over the positions where ``mask`` is True."""
  weights = mask.astype(np.float64)[..., None]
  total = (tokens.astype(np.float64) * weights).sum(axis=1)
  # A row without tokens cannot occur (special tokens are always there);
  # the floor only keeps the division defined.
  count = np.maximum(weights.sum(axis=1), 1e-9)
  return (total / count).astype(np.float32)


def l2_normalize(vectors, epsilon=1e-12):
  norms = np.linalg.norm(vectors.astype(np.float64), axis=-1, keepdims=True)
  return (vectors / np.maximum(norms, epsilon)).astype(np.float32)


def fingerprint(kind, settings, paths):
  """A stable id of an encoder: its kind, settings and files' contents.

  Files over ``fingerprints.FULL_HASH_MAX_BYTES`` (a T5-XXL checkpoint is
  tens of GB) are hashed by their size and evenly spaced samples, so that
  computing a cache key takes seconds, not minutes.
  """
  files = sorted(
      fingerprints.of_file(p, sampled_above=fingerprints.FULL_HASH_MAX_BYTES)
      for p in paths)
  return fingerprints.of_json(
      {"kind": kind, "settings": settings, "files": files})


def check_prompts(prompts):
  """A list of prompt strings; rejects a bare string (a common slip)."""
  if isinstance(prompts, (str, bytes)):
    raise TypeError("prompts must be a list of strings, not one string")
  prompts = list(prompts)
  for prompt in prompts:
    if not isinstance(prompt, str):
      raise TypeError(f"prompts must be strings, got {type(prompt)}")
  return prompts


class TextEncoder(abc.ABC):
  """A frozen text encoder: prompts -> ``TextEmbeddings``.

  Subclasses tokenize (keras-hub tokenizers, i.e. tensorflow-text ops), run
  their frozen Keras model and choose how to pool.
  """

  def __init__(self, max_length):
    if max_length < 2:
      raise ValueError(f"max_length must be at least 2, got {max_length}")
    self._max_length = int(max_length)
    self._fingerprint = None

  @property
  def max_length(self):
    """L: tokens per prompt including special tokens, padded or truncated."""
    return self._max_length

  @property
  @abc.abstractmethod
  def embed_dim(self):
    """D: width of token and pooled embeddings."""

  @property
  @abc.abstractmethod
  def name(self):
    """A short human-readable name, e.g. "all-MiniLM-L6-v2"."""

  @property
  @abc.abstractmethod
  def model(self):
    """The frozen Keras model that maps token ids to token embeddings."""

  @abc.abstractmethod
  def _compute_fingerprint(self):
    """The fingerprint; computed once per encoder (it may hash weights)."""

  @abc.abstractmethod
  def tokenize(self, prompts):
    """Token ids [B, L] int32 and mask [B, L] bool of ``prompts``."""

  @abc.abstractmethod
  def _token_embeddings(self, token_ids, mask):
    """Last-layer embeddings [B, L, D] float32 of one batch."""

  def pool(self, tokens, mask):
    """Pooled embedding [B, D]; the mean over valid tokens by default."""
    return masked_mean(tokens, mask)

  @property
  def fingerprint(self):
    """Identifies weights, vocabulary and settings (cache keys use it)."""
    if self._fingerprint is None:
      self._fingerprint = self._compute_fingerprint()
    return self._fingerprint

  def encode(self, prompts, batch_size=64):
    """Encodes prompts (a list of str) into ``TextEmbeddings``."""
    prompts = check_prompts(prompts)
    if not prompts:
      return TextEmbeddings(
          tokens=np.zeros((0, self.max_length, self.embed_dim), np.float32),
          mask=np.zeros((0, self.max_length), bool), pooled=np.zeros(
              (0, self.embed_dim), np.float32))
    token_ids, mask = self.tokenize(prompts)
    outputs = []
    for start in range(0, len(prompts), batch_size):
      end = start + batch_size
      outputs.append(
          self._token_embeddings(token_ids[start:end], mask[start:end]))
    tokens = np.concatenate(outputs).astype(np.float32)
    # Padding positions carry no meaning; zeros keep caches deterministic.
    tokens *= mask[..., None]
    return TextEmbeddings(tokens=tokens, mask=mask,
                          pooled=self.pool(tokens, mask))

  def __repr__(self):
    return (f"{type(self).__name__}(name={self.name!r}, "
            f"max_length={self.max_length}, embed_dim={self.embed_dim})")
