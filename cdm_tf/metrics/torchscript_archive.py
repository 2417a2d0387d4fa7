"""Reads the tensors of a TorchScript archive (``torch.jit.save``), no torch.

Such an archive is a zip file: ``<top>/data.pkl`` pickles the module tree,
and every tensor's bytes sit raw in ``<top>/data/<key>``. In the pickle:

* a module is an object of a class named ``__torch__.<module path>.<Class>``,
  built with NEWOBJ and given its attributes as a dict (BUILD);
* a tensor is ``torch._utils._rebuild_tensor_v2(storage, offset, size,
  stride, requires_grad, backward_hooks[, metadata])``, where ``storage`` is
  a persistent id ``("storage", torch.<Type>Storage, key, location, numel)``
  naming the ``data/<key>`` entry; offset and strides count elements;
* int lists are ``torch.jit._pickle.build_intlist([...])``.

This module unpickles exactly these: module classes become
``TorchScriptObject`` with their attributes, tensors become numpy arrays
read from the zip (little-endian unless the archive says otherwise), and
any other global is refused, so a pickle cannot run code on load. Only the
weights are read; the TorchScript code in ``<top>/code/`` is not executed.
"""

import collections
import io
import pickle
import zipfile

import numpy as np

# Storage class name -> numpy dtype of its elements.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,  # widened to float32 in _read_storage
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_MODULE_PREFIX = "__torch__"


class TorchScriptObject:
  """A scripted module (or object) of the pickle: its class and attributes.

  Attributes:
    type_name: the TorchScript class, e.g.
      ``__torch__.inceptionv3.Conv2dLayer``.
    attributes: dict of its attributes in the order they were pickled
      (submodules, parameters as numpy arrays, plain values).
  """
  type_name = ""

  def __init__(self):
    self.attributes = {}

  def __setstate__(self, state):
    if not isinstance(state, dict):
      raise pickle.UnpicklingError(
          f"{self.type_name}: expected a dict of attributes, got "
          f"{type(state).__name__}")
    self.attributes = dict(state)

  def __repr__(self):
    return f"TorchScriptObject({self.type_name}, {list(self.attributes)})"


class _StorageType:
  """Stands for ``torch.<Name>Storage`` in a persistent id."""

  def __init__(self, name):
    self.name = name


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  """``_rebuild_tensor_v2`` on a numpy storage: a strided view, copied."""
  del unused  # requires_grad, backward hooks, metadata
  size = tuple(int(s) for s in size)
  if not size:
    return np.array(storage[storage_offset])
  itemsize = storage.itemsize
  last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
  if min(size) > 0 and last >= storage.size:
    raise pickle.UnpicklingError(
        f"tensor of size {size}, stride {tuple(stride)} at offset "
        f"{storage_offset} runs past its storage of {storage.size} elements")
  view = np.lib.stride_tricks.as_strided(
      storage[storage_offset:], shape=size,
      strides=tuple(int(s) * itemsize for s in stride), writeable=False)
  return np.array(view)


class _ArchiveUnpickler(pickle.Unpickler):
  """Unpickles ``data.pkl`` with tensors read from the same zip."""

  def __init__(self, data, archive, prefix, byteorder):
    super().__init__(io.BytesIO(data))
    self._archive = archive
    self._prefix = prefix
    self._byteorder = byteorder
    self._storages = {}
    self._module_classes = {}

  def find_class(self, module, name):
    if module.startswith(_MODULE_PREFIX):
      qualified = f"{module}.{name}"
      if qualified not in self._module_classes:
        self._module_classes[qualified] = type(
            name, (TorchScriptObject,), {"type_name": qualified})
      return self._module_classes[qualified]
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("torch.jit._pickle", "build_intlist"):
      return list
    if (module, name) == ("torch.jit._pickle", "build_doublelist"):
      return list
    if (module, name) == ("torch.jit._pickle", "build_boollist"):
      return list
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise pickle.UnpicklingError(
        f"unsupported global {module}.{name} in a TorchScript archive")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
    _, storage_type, key, _, numel = pid
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
    if key not in self._storages:
      self._storages[key] = self._read_storage(storage_type.name, key, numel)
    return self._storages[key]

  def _read_storage(self, type_name, key, numel):
    entry = f"{self._prefix}data/{key}"
    data = self._archive.read(entry)
    dtype = np.dtype(_STORAGE_DTYPES[type_name]).newbyteorder(
        "<" if self._byteorder == "little" else ">")
    if len(data) != numel * dtype.itemsize:
      raise pickle.UnpicklingError(
          f"{entry}: {len(data)} bytes, expected {numel} x {dtype.itemsize}")
    values = np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="))
    if type_name == "BFloat16Storage":
      # bfloat16 is the upper half of a float32.
      values = (values.astype(np.uint32) << 16).view(np.float32)
    return values


def _top_folder(archive, path):
  tops = [n[:-len("data.pkl")] for n in archive.namelist()
          if n.endswith("/data.pkl") and n.count("/") == 1]
  if len(tops) != 1:
    raise ValueError(f"{path}: not a TorchScript archive (found "
                     f"{len(tops)} top-level data.pkl entries)")
  return tops[0]


def load(path):
  """The root object of the TorchScript archive at ``path``.

  Args:
    path: a file written by ``torch.jit.save``.

  Returns:
    The root ``TorchScriptObject``; tensors are numpy arrays.

  Raises:
    ValueError: not a zip with one ``<top>/data.pkl``, or its pickle uses
      something other than modules, tensors and plain values.
  """
  try:
    archive = zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise ValueError(f"{path}: not a TorchScript archive ({e})") from e
  with archive:
    prefix = _top_folder(archive, path)
    byteorder = "little"
    if f"{prefix}byteorder" in archive.namelist():
      byteorder = archive.read(f"{prefix}byteorder").decode().strip()
    unpickler = _ArchiveUnpickler(archive.read(f"{prefix}data.pkl"), archive,
                                  prefix, byteorder)
    try:
      return unpickler.load()
    except (pickle.UnpicklingError, KeyError, EOFError) as e:
      raise ValueError(f"{path}: cannot read its data.pkl: {e}") from e


def find_objects(root, has_attributes):
  """Objects of the tree holding all of ``has_attributes``, in pickle order.

  Depth-first over attributes in their pickled order (the order a module
  declares its submodules), without descending into a match.

  Returns:
    List of (dotted path from the root, ``TorchScriptObject``).
  """
  wanted = set(has_attributes)
  found = []

  def visit(path, obj):
    if wanted <= set(obj.attributes):
      found.append((path, obj))
      return
    for name, value in obj.attributes.items():
      if isinstance(value, TorchScriptObject):
        visit(f"{path}.{name}" if path else name, value)

  visit("", root)
  return found
