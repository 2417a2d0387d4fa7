"""Every function of the package stays short enough to read at once."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_LINES = 80  # from ``def`` to the last line, docstring included


def test_every_function_in_the_package_is_under_80_lines():
  long = []
  for path in sorted((ROOT / "cdm_tf").rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines >= MAX_LINES:
          long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                      f"({lines} lines)")
  assert not long, "split these functions: " + "; ".join(long)
