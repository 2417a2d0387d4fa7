"""Decoding the encoded images of ImageNet records to uint8 RGB.

ImageNet's "JPEG" files are not all RGB JPEGs: a few are CMYK JPEGs, one is
a PNG under a ``.JPEG`` name and some are grayscale. ``tf.io.decode_image``
sniffs the real format from the bytes and, with ``channels=3``, expands
grayscale and converts CMYK (Adobe-inverted, as ImageNet's are) to RGB, so a
single call handles all of them; the tests compare its CMYK conversion with
pillow's.
"""

import struct

import tensorflow as tf

# Leading bytes of the formats tf.io.decode_image understands.
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_GIF_MAGIC = b"GIF8"
_BMP_MAGIC = b"BM"
_RIFF_MAGIC = b"RIFF"  # WebP: "RIFF", 4 size bytes, then "WEBP".
_WEBP_MAGIC = b"WEBP"
_HEADER_BYTES = 12

SUPPORTED_FORMATS = "JPEG, PNG, GIF, BMP or WebP"

# A 1x1 black 24-bit BMP: file header, BITMAPINFOHEADER, one padded pixel
# row. Decoding it costs next to nothing (see decode_rgb_or_placeholder).
PLACEHOLDER_IMAGE = (
    b"BM" + struct.pack("<IHHI", 14 + 40 + 4, 0, 0, 14 + 40)
    + struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, 4, 2835, 2835, 0, 0)
    + b"\0" * 4)


def _starts_with(header, magic, position=0):
  return tf.equal(tf.strings.substr(header, position, len(magic)), magic)


def is_supported_image(encoded):
  """Whether scalar string ``encoded`` starts like an image TF can decode.

  A cheap header check, so that bytes that are no image at all get a precise
  error instead of a decoder failure; it does not prove the image is intact.
  """
  # Padding makes every substr position valid, even for short strings.
  header = tf.strings.join(
      [tf.strings.substr(encoded, 0, _HEADER_BYTES), b"\0" * _HEADER_BYTES])
  return tf.reduce_any(tf.stack([
      _starts_with(header, _JPEG_MAGIC),
      _starts_with(header, _PNG_MAGIC),
      _starts_with(header, _GIF_MAGIC),
      _starts_with(header, _BMP_MAGIC),
      _starts_with(header, _RIFF_MAGIC) & _starts_with(header, _WEBP_MAGIC, 8),
  ]))


def decode_rgb(encoded):
  """Decodes scalar string ``encoded`` to a uint8 [H, W, 3] RGB image.

  Raises (at run time) TensorFlow's InvalidArgumentError if the decoder
  rejects the bytes; callers that need to name the record catch that in the
  data pipeline (see imagenet_reader).
  """
  image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8,
                             expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def decode_rgb_or_placeholder(encoded, use_encoded):
  """``decode_rgb(encoded)`` if ``use_encoded``, else a 1x1 black image.

  Branch-free: a tf.cond around the decoder runs it as a separate function
  call, which in tf.data costs time and serializes decoding. Instead the
  decoder is always run, on the placeholder when the bytes must not be
  touched (e.g. they failed a check and would make the decoder raise).
  """
  return decode_rgb(tf.where(use_encoded, encoded, PLACEHOLDER_IMAGE))


def empty_image():
  """A [0, 0, 3] uint8 placeholder for elements that carry no image."""
  return tf.zeros([0, 0, 3], tf.uint8)
