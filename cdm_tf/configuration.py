"""Flag and gin parsing shared by the binaries, with errors that name what
is wrong and exit status 2."""

import os
import sys
import tokenize

from absl import flags
import gin
import tensorflow as tf


# ``include "gin/..."`` lines resolve from the working directory or from
# the source tree's root.
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_search_path_added = False


EXIT_BAD_CONFIG = 2


class ConfigError(ValueError):
  """A gin file or binding could not be used."""


def parse_gin(gin_files, gin_bindings):
  """Parses gin files then bindings (bindings win), or raises ConfigError."""
  for path in gin_files or ():
    if not tf.io.gfile.exists(path):
      raise ConfigError(f"gin file not found: {path}")
  global _search_path_added
  if not _search_path_added:
    gin.add_config_file_search_path(_SOURCE_ROOT)
    _search_path_added = True
  try:
    gin.parse_config_files_and_bindings(list(gin_files or ()),
                                        list(gin_bindings or ()),
                                        finalize_config=True)
  except (ValueError, SyntaxError, ImportError, KeyError, TypeError,
          tokenize.TokenError) as e:
    raise ConfigError(f"bad gin configuration ({', '.join(gin_files or ())}"
                      f"; bindings {list(gin_bindings or ())}): {e}") from e


def parse_gin_or_exit(gin_files, gin_bindings):
  """For binaries: parse, or exit with the error (no traceback) and status 2."""
  try:
    parse_gin(gin_files, gin_bindings)
  except ConfigError as e:
    exit_with_error(e)


def exit_with_error(message, status=EXIT_BAD_CONFIG):
  """For binaries: print "error: <message>" (no traceback) and exit."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(status)


def parse_flags_or_exit(argv):
  """absl's flag parser for ``app.run(main, flags_parser=...)``, but a bad
  or unknown flag exits with status 2 like a bad configuration."""
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as e:
    exit_with_error(f"{e} (see --helpfull)")
  if len(remaining) > 1:
    exit_with_error(f"unexpected arguments {remaining[1:]}")
  return remaining
