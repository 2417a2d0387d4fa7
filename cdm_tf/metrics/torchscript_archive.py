"""Reads the tensors of torch files without torch.

Two file formats hold a pickle whose tensors refer to raw storages:

* zip: TorchScript archives (``torch.jit.save``) and ``torch.save`` files
  since torch 1.6. ``<top>/data.pkl`` pickles the object, every tensor's
  bytes sit raw in ``<top>/data/<key>`` (byte order in ``<top>/byteorder``,
  little-endian without it); a storage is the persistent id
  ``("storage", torch.<Type>Storage, key, location, numel)``.
* legacy ``torch.save`` (all torch wrote before 1.6, and later with
  ``_use_new_zipfile_serialization=False``; pytorch-fid's
  ``pt_inception-2015-12-05-6726825d.pth`` dates from 2019): pickles in a
  row, the magic number 0x1950a86a20f9469cfc6c, the protocol version 1001,
  a dict of system information, the object, and the list of storage keys;
  then each storage in that order as its element count (int64) and its
  bytes, both little-endian. A storage is the persistent id
  ``("storage", torch.<Type>Storage, key, location, numel, view)``, where
  ``view`` is None or ``(view key, offset, numel)`` of a slice of it.
  (The older tar layout, which torch.load still tries first, is
  not read.)

In the pickles:

* a module of a TorchScript archive is an object of a class named
  ``__torch__.<module path>.<Class>``, built with NEWOBJ and given its
  attributes as a dict (BUILD);
* a tensor is ``torch._utils._rebuild_tensor_v2(storage, offset, size,
  stride, requires_grad, backward_hooks[, metadata])``; offset and strides
  count elements (``_rebuild_parameter(tensor, ...)`` wraps a parameter);
* a state dict is a ``collections.OrderedDict``; int lists are
  ``torch.jit._pickle.build_intlist([...])``.

This module unpickles exactly these: module classes become
``TorchScriptObject`` with their attributes, tensors become numpy arrays,
and any other global is refused, so a pickle cannot run code on load. Only
the weights are read; the TorchScript code in ``<top>/code/`` is not
executed.
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

# Storage class name -> numpy dtype of its elements.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,  # widened to float32 in _decode_storage
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_MODULE_PREFIX = "__torch__"
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001
# What unpickling damaged or truncated bytes can raise.
_DAMAGED = (pickle.UnpicklingError, EOFError, KeyError, IndexError, TypeError,
            ValueError, OverflowError, struct.error, zipfile.BadZipFile)


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
  """``_rebuild_tensor_v2`` on a numpy storage: a strided view, copied.

  A None storage (a legacy file's first pass, before its storages are
  read) gives None.
  """
  del unused  # requires_grad, backward hooks, metadata
  if storage is None:
    return None
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


def _rebuild_parameter(tensor, *unused):
  """``_rebuild_parameter(tensor, requires_grad, backward_hooks)``."""
  del unused
  return tensor


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles a torch pickle: modules, tensors and plain values only.

  Args:
    file: the pickle's binary stream.
    storage: persistent id -> the storage's numpy array (or None).
  """

  def __init__(self, file, storage):
    super().__init__(file)
    self._storage = storage
    self._module_classes = {}

  def find_class(self, module, name):
    if module.startswith(_MODULE_PREFIX):
      qualified = f"{module}.{name}"
      if qualified not in self._module_classes:
        self._module_classes[qualified] = type(name, (TorchScriptObject,),
                                               {"type_name": qualified})
      return self._module_classes[qualified]
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return _rebuild_parameter
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
        f"unsupported global {module}.{name} in a torch file")

  def persistent_load(self, pid):
    return self._storage(pid)


class _PlainUnpickler(pickle.Unpickler):
  """Unpickles plain values (numbers, strings, lists, dicts), no globals."""

  def find_class(self, module, name):
    raise pickle.UnpicklingError(f"unexpected global {module}.{name}")


def _storage_id(pid, length):
  """(``_StorageType``, key, numel, rest) of a storage's persistent id of
  ``length`` fields."""
  if not (isinstance(pid, tuple) and len(pid) == length and
          pid[0] == "storage"):
    raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
  storage_type, key, numel = pid[1], pid[2], pid[4]
  if not isinstance(storage_type, _StorageType):
    raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
  return storage_type, key, int(numel), pid[5:]


def _decode_storage(data, type_name, numel, byteorder, what):
  """Raw bytes of ``numel`` elements of ``type_name`` -> numpy array."""
  dtype = np.dtype(_STORAGE_DTYPES[type_name]).newbyteorder("<" if byteorder ==
                                                            "little" else ">")
  if len(data) != numel * dtype.itemsize:
    raise pickle.UnpicklingError(
        f"{what}: {len(data)} bytes, expected {numel} x {dtype.itemsize}")
  values = np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="))
  if type_name == "BFloat16Storage":
    # bfloat16 is the upper half of a float32.
    values = (values.astype(np.uint32) << 16).view(np.float32)
  return values


def _top_folder(archive, path):
  tops = [
      n[:-len("data.pkl")]
      for n in archive.namelist()
      if n.endswith("/data.pkl") and n.count("/") == 1
  ]
  if len(tops) != 1:
    raise ValueError(f"{path}: not a TorchScript archive or torch.save zip "
                     f"(found {len(tops)} top-level data.pkl entries)")
  return tops[0]


def _load_zip(path):
  try:
    archive = zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise ValueError(f"{path}: a damaged zip file ({e})") from e
  with archive:
    prefix = _top_folder(archive, path)
    byteorder = "little"
    if f"{prefix}byteorder" in archive.namelist():
      byteorder = archive.read(f"{prefix}byteorder").decode().strip()
    storages = {}

    def storage(pid):
      storage_type, key, numel, _ = _storage_id(pid, 5)
      if key not in storages:
        entry = f"{prefix}data/{key}"
        storages[key] = _decode_storage(archive.read(entry), storage_type.name,
                                        numel, byteorder, entry)
      return storages[key]

    try:
      return _TorchUnpickler(io.BytesIO(archive.read(f"{prefix}data.pkl")),
                             storage).load()
    except _DAMAGED as e:
      raise ValueError(f"{path}: cannot read its data.pkl: {e}") from e


def _load_legacy(path, stream):
  """The object of a legacy ``torch.save`` file, read from ``stream``.

  Its storages follow the object's pickle, so the pickle is read twice:
  first for the storages' types and sizes, then with their values.
  """
  for name, expected in (("magic number", _LEGACY_MAGIC_NUMBER),
                         ("protocol version", _LEGACY_PROTOCOL_VERSION)):
    value = _PlainUnpickler(stream).load()
    if value != expected:
      raise pickle.UnpicklingError(f"{name} {value!r}, expected {expected}")
  _PlainUnpickler(stream).load()  # system information
  start = stream.tell()
  layout = {}  # storage key -> (type name, numel)

  def record(pid):
    storage_type, key, numel, _ = _storage_id(pid, 6)
    layout[key] = (storage_type.name, numel)
    return None

  _TorchUnpickler(stream, record).load()
  storages = {}
  for key in _PlainUnpickler(stream).load():
    if key not in layout:
      raise pickle.UnpicklingError(f"storage {key!r} is listed but no "
                                   "tensor uses it")
    type_name, numel = layout[key]
    header = stream.read(8)
    count = struct.unpack("<q", header)[0] if len(header) == 8 else None
    if count != numel:
      raise pickle.UnpicklingError(
          f"storage {key!r}: expected {numel} elements, the file says "
          f"{count} (truncated or damaged)")
    nbytes = numel * np.dtype(_STORAGE_DTYPES[type_name]).itemsize
    data = stream.read(nbytes)
    if len(data) < nbytes:
      raise pickle.UnpicklingError(
          f"storage {key!r}: the file ends after {len(data)} of its "
          f"{nbytes} bytes (truncated)")
    storages[key] = _decode_storage(data, type_name, numel, "little",
                                    f"storage {key!r}")
  missing = sorted(set(layout) - set(storages))
  if missing:
    raise pickle.UnpicklingError(f"storages {missing} are not in the file")

  def storage(pid):
    _, key, _, (view,) = _storage_id(pid, 6)
    if view is None:
      return storages[key]
    _, offset, numel = view
    return storages[key][int(offset):int(offset) + int(numel)]

  stream.seek(start)
  return _TorchUnpickler(stream, storage).load()


def load(path):
  """The object a torch file holds: the root module of a TorchScript
  archive, or what ``torch.save`` saved (e.g. a state dict), zip or legacy.

  Args:
    path: a file written by ``torch.jit.save`` or ``torch.save``.

  Returns:
    The root ``TorchScriptObject`` or the saved object; tensors are numpy
    arrays.

  Raises:
    ValueError: not a torch file, a damaged or truncated one, or its pickle
      uses something other than modules, tensors and plain values (the
      message names the file).
    OSError: the file cannot be read.
  """
  with open(path, "rb") as f:
    head = f.read(len(_ZIP_MAGIC))
  if head == _ZIP_MAGIC:
    return _load_zip(path)
  if not head.startswith(b"\x80"):  # pickle protocol 2+: a legacy file
    raise ValueError(f"{path}: not a TorchScript archive or torch.save "
                     "file (neither a zip nor a legacy torch pickle)")
  with open(path, "rb") as f:
    stream = io.BytesIO(f.read())
  try:
    return _load_legacy(path, stream)
  except _DAMAGED as e:
    raise ValueError(f"{path}: cannot read it as a legacy torch.save file: "
                     f"{e}") from e


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
