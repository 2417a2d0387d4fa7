"""Decoding the encoded images of ImageNet records to uint8 RGB.

ImageNet's "JPEG" files are not all RGB JPEGs: a few are CMYK JPEGs, one is
a PNG under a ``.JPEG`` name and some are grayscale. ``tf.io.decode_image``
sniffs the real format from the bytes and, with ``channels=3``, expands
grayscale and converts CMYK (Adobe-inverted, as ImageNet's are) to RGB, so a
single call handles all of them; the tests compare its CMYK conversion with
pillow's.
"""

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


def empty_image():
  """A [0, 0, 3] uint8 placeholder for elements that carry no image."""
  return tf.zeros([0, 0, 3], tf.uint8)
