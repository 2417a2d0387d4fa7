"""Decoding the encoded images of ImageNet records to uint8 RGB.

ImageNet's "JPEG" files are not all RGB JPEGs: a few are CMYK JPEGs, one is
a PNG under a ``.JPEG`` name and some are grayscale. ``tf.io.decode_image``
sniffs the real format from the bytes and, with ``channels=3``, expands
grayscale and converts CMYK (Adobe-inverted, as ImageNet's are) to RGB, so a
single call handles all of them; the tests compare its CMYK conversion with
pillow's.
"""

import re
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
    b"BM" + struct.pack("<IHHI", 14 + 40 + 4, 0, 0, 14 + 40) +
    struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, 4, 2835, 2835, 0, 0) +
    b"\0" * 4)

# What each format's header must hold: (byte offset, bytes) pairs.
_SIGNATURES = (
    ((0, _JPEG_MAGIC),),
    ((0, _PNG_MAGIC),),
    ((0, _GIF_MAGIC),),
    ((0, _BMP_MAGIC),),
    ((0, _RIFF_MAGIC), (8, _WEBP_MAGIC)),
)
# The alphabet of tf.io.encode_base64 (web-safe), in digit order.
_BASE64_DIGITS = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                  "0123456789-_")


def _base64_pattern(signature):
  """A regex for the base64 text of any bytes that match ``signature``.

  Base64 digit i carries bits 6i..6i+5 of the bytes, so each digit that
  overlaps fixed bits becomes a class of the digits those bits allow. Bytes
  too short to hold every fixed bit encode to fewer digits, and fail.
  """
  fixed = {}  # bit position -> bit
  for offset, magic in signature:
    for i, byte in enumerate(magic):
      for bit in range(8):
        fixed[8 * (offset + i) + bit] = (byte >> (7 - bit)) & 1
  digits = []
  for digit in range(max(fixed) // 6 + 1):
    allowed = [
        _BASE64_DIGITS[value] for value in range(64) if all(
            fixed.get(6 * digit + bit, (value >> (5 - bit)) &
                      1) == (value >> (5 - bit)) & 1 for bit in range(6))
    ]
    digits.append("." if len(allowed) == 64 else "[" +
                  "".join(re.escape(d) for d in allowed) + "]")
  return "".join(digits)


# Regexes cannot match raw bytes (RE2 reads UTF-8), so the header is matched
# as base64: 3 ops for all formats instead of ~20 string ops, which cost as
# much per record as parsing it.
_HEADER_PATTERN = "(?:{}).*".format("|".join(
    _base64_pattern(s) for s in _SIGNATURES))


def is_supported_image(encoded):
  """Whether string tensor ``encoded`` starts like an image TF can decode.

  A cheap header check, so that bytes that are no image at all get a precise
  error instead of a decoder failure; it does not prove the image is intact.
  Works elementwise on any shape.
  """
  header = tf.strings.substr(encoded, 0, _HEADER_BYTES)
  return tf.strings.regex_full_match(tf.io.encode_base64(header),
                                     _HEADER_PATTERN)


def header_sizes(encoded):
  """[N, 2] (height, width) of a vector of PNGs or of JPEGs, from headers.

  For knowing, before decoding, whether a group of images has one size. A
  PNG states its size at bytes 16..23; JPEG sizes come from their frame
  header. Rows that are neither, and all rows of a mix, get -1. Raises (at
  run time) for a JPEG whose header is corrupt.
  """
  is_png = tf.equal(tf.strings.substr(encoded, 0, len(_PNG_MAGIC)), _PNG_MAGIC)
  is_jpeg = tf.equal(tf.strings.substr(encoded, 0, len(_JPEG_MAGIC)),
                     _JPEG_MAGIC)
  # Width then height, big-endian uint32, after the signature and the IHDR
  # chunk's length and type; padding gives every row 8 bytes.
  ihdr = tf.io.decode_raw(
      tf.strings.substr(
          tf.strings.join([tf.strings.substr(encoded, 0, 24), b"\0" * 24]), 16,
          8), tf.uint8)
  big_endian = tf.cast(tf.reshape(ihdr, [-1, 2, 4]), tf.int64) * tf.constant(
      [2**24, 2**16, 2**8, 1], tf.int64)
  png_sizes = tf.reverse(tf.reduce_sum(big_endian, -1), [-1])
  unknown = -tf.ones_like(png_sizes)

  def jpeg_sizes():
    return tf.map_fn(
        lambda e: tf.cast(tf.image.extract_jpeg_shape(e)[:2], tf.int64),
        encoded, fn_output_signature=tf.TensorSpec([2], tf.int64))

  all_png = tf.reduce_all(is_png)
  return tf.cond(
      all_png, lambda: png_sizes,
      lambda: tf.cond(tf.reduce_all(is_jpeg), jpeg_sizes, lambda: unknown))


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
