"""BUILD names every module, tool, benchmark and test of the tree."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _value(node):
  """A literal, or Bazel's glob([...]) expanded against the tree."""
  if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "glob":
    patterns = ast.literal_eval(node.args[0])
    matches = sorted({
        p.relative_to(ROOT).as_posix()
        for pattern in patterns
        for p in ROOT.glob(pattern)
    })
    assert matches, f"BUILD glob {patterns} matches nothing"
    return matches
  return ast.literal_eval(node)


def _targets():
  tree = ast.parse((ROOT / "BUILD").read_text(), filename="BUILD")
  targets = {}
  for node in tree.body:
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
      pytest.fail(f"BUILD line {node.lineno}: only rule calls are expected")
    call = node.value
    rule = call.func.id
    if rule in ("load", "package"):
      continue
    kwargs = {kw.arg: _value(kw.value) for kw in call.keywords}
    name = kwargs["name"]
    assert name not in targets, f"BUILD defines {name!r} twice"
    targets[name] = dict(kwargs, rule=rule)
  return targets


TARGETS = _targets()


def _owners(path):
  return [name for name, t in TARGETS.items() if path in t.get("srcs", [])]


def _rel(path):
  return path.relative_to(ROOT).as_posix()


def test_every_package_folder_is_one_py_library_with_all_its_modules():
  for init in sorted((ROOT / "cdm_tf").rglob("__init__.py")):
    folder = init.parent
    name = "cdm_tf" if folder == ROOT / "cdm_tf" else folder.name
    assert TARGETS.get(name, {}).get("rule") == "py_library", (
        f"BUILD needs py_library {name!r} for {_rel(folder)}/")
    for module in sorted(folder.glob("*.py")):
      assert _owners(_rel(module)) == [
          name
      ], (f"{_rel(module)} must be in the srcs of py_library {name!r}")


@pytest.mark.parametrize("folder", ["tools", "benchmarks"])
def test_every_tool_and_benchmark_is_a_py_binary(folder):
  for script in sorted((ROOT / folder).glob("*.py")):
    owners = _owners(_rel(script))
    assert len(owners) == 1 and TARGETS[owners[0]]["rule"] == "py_binary", (
        f"{_rel(script)} needs its own py_binary in BUILD")


def test_every_test_file_is_a_py_test_of_the_same_name():
  for test in sorted((ROOT / "tests").glob("test_*.py")):
    target = TARGETS.get(test.stem, {})
    assert target.get("rule") == "py_test", f"BUILD needs py_test {test.stem!r}"
    assert target["srcs"] == [_rel(test)]
  assert _owners("tests/conftest.py") == ["test_support"]


def test_every_listed_file_exists_and_deps_resolve():
  for name, target in TARGETS.items():
    for key in ("srcs", "data"):
      for path in target.get(key, []):
        assert (ROOT / path).is_file(), f"{name}: {path} does not exist"
    for dep in target.get("deps", []):
      assert dep.startswith(":") and dep[1:] in TARGETS, (
          f"{name}: unknown dep {dep}")


def _imported_packages(path):
  packages = set()
  for node in ast.walk(ast.parse((ROOT / path).read_text())):
    modules = []
    if isinstance(node, ast.Import):
      modules = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    for module in modules:
      parts = module.split(".")
      if parts[0] != "cdm_tf":
        continue
      if len(parts) > 1 and (ROOT / "cdm_tf" / parts[1] /
                             "__init__.py").exists():
        packages.add(parts[1])
      elif len(parts) == 1 or (ROOT / "cdm_tf" / f"{parts[1]}.py").exists():
        packages.add("cdm_tf")
  return packages


def test_deps_cover_the_packages_each_target_imports():
  for name, target in TARGETS.items():
    deps = {d[1:] for d in target.get("deps", [])}
    for path in target.get("srcs", []):
      missing = _imported_packages(path) - deps - {name}
      assert not missing, f"{name}: {path} imports {sorted(missing)} " \
                          "without a BUILD dep"


def test_package_libraries_form_no_cycle():
  """Bazel refuses a cycle of deps: the package folders must layer."""
  deps = {
      name: {d[1:] for d in t.get("deps", [])}
      for name, t in TARGETS.items()
      if t["rule"] == "py_library"
  }

  def reaches(start, goal, seen):
    for dep in deps.get(start, ()):
      if dep == goal or (dep not in seen and reaches(dep, goal, seen | {dep})):
        return True
    return False

  cyclic = sorted(name for name in deps if reaches(name, name, set()))
  assert not cyclic, f"py_library deps form a cycle through {cyclic}"
