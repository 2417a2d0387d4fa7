"""Gin parsing for the binaries, and the two kinds of expected failure:
a configuration that cannot be used (``ConfigError``) and one that
conflicts with earlier work (``ConflictError``); ``command_line`` gives them
exit statuses 2 and 3."""

import inspect
import os
import tokenize
import typing

import gin
import tensorflow as tf

# ``include "gin/..."`` lines resolve from the working directory or from
# the source tree's root.
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_gin_set_up = False


class ConfigError(ValueError):
  """A gin file or binding could not be used."""


class ConflictError(ValueError):
  """The request disagrees with earlier work in the same place (a run, set
  or sweep made with other settings) or with a live process."""


def parse_gin(gin_files, gin_bindings):
  """Parses gin files then bindings (bindings win), or raises ConfigError."""
  for path in gin_files or ():
    if not tf.io.gfile.exists(path):
      raise ConfigError(f"gin file not found: {path}")
  global _gin_set_up
  if not _gin_set_up:
    gin.add_config_file_search_path(_SOURCE_ROOT)
    gin.config.register_finalize_hook(_check_binding_kinds)
    _gin_set_up = True
  try:
    gin.parse_config_files_and_bindings(list(gin_files or ()),
                                        list(gin_bindings or ()),
                                        finalize_config=True)
  except ConfigError:
    raise
  except (ValueError, SyntaxError, ImportError, KeyError, TypeError,
          tokenize.TokenError) as e:
    raise ConfigError(f"bad gin configuration ({', '.join(gin_files or ())}"
                      f"; bindings {list(gin_bindings or ())}): {e}") from e


_KINDS = ((bool, "a bool"), ((int, float), "a number"), (str, "a string"),
          ((list, tuple), "a sequence"), (dict, "a dict"))


def _kind(value):
  for types, name in _KINDS:
    if isinstance(value, types):
      return name
  return None  # references, macros, other objects: not checked


def _annotated_kind(annotation):
  """The kind a simple annotation (int, Optional[float], tuple...) asks for."""
  arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
  if typing.get_origin(annotation) is typing.Union and len(arguments) == 1:
    annotation = arguments[0]
  annotation = typing.get_origin(annotation) or annotation
  if annotation is float:
    return "a number"
  for types, name in _KINDS:
    if isinstance(annotation, type) and annotation in (types if isinstance(
        types, tuple) else (types,)):
      return name
  return None


def _expected_kinds(target):
  """{parameter: kind} from each parameter's default, else its annotation."""
  function = target.__init__ if inspect.isclass(target) else target
  try:
    parameters = inspect.signature(function).parameters.values()
  except (TypeError, ValueError):
    return {}
  kinds = {}
  for p in parameters:
    has_default = p.default not in (inspect.Parameter.empty, None)
    kind = (_kind(p.default) if has_default else _annotated_kind(p.annotation))
    if kind:
      kinds[p.name] = (kind, p.default if has_default else None)
  return kinds


def _check_binding_kinds(config):
  """Gin finalize hook: a bound value of another kind than its parameter's
  default (a string for a number, a number for a list) is refused while
  parsing, naming the binding, instead of failing deep inside a run."""
  for (scope, selector), bindings in config.items():
    try:
      target = gin.config.get_configurable(selector)
    except ValueError:
      continue
    kinds = _expected_kinds(target)
    for name, value in bindings.items():
      expected, default = kinds.get(name, (None, None))
      got = _kind(value)
      if expected and got and expected != got:
        where = f"{scope}/{selector}" if scope else selector
        takes = f" (default {default!r})" if default is not None else ""
        raise ConfigError(
            f"gin binding {where}.{name} = {value!r} is {got}, but the "
            f"parameter takes {expected}{takes}")
  return None
