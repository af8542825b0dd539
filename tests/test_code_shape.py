"""The library stays readable: no function or method in ``msc/`` longer than 80 lines, no class longer than 250
(an AST walk; the longest of each are printed, ``pytest -s`` shows them)."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FUNCTION_LINES, MAX_CLASS_LINES = 80, 250


def _definitions():
    for folder, _, files in os.walk(os.path.join(ROOT, "msc")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path) as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        yield node.end_lineno - node.lineno + 1, os.path.relpath(path, ROOT), node


def test_no_long_functions_or_classes():
    found = list(_definitions())
    functions = sorted(((n, path, node.name) for n, path, node in found if not isinstance(node, ast.ClassDef)), reverse=True)
    classes = sorted(((n, path, node.name) for n, path, node in found if isinstance(node, ast.ClassDef)), reverse=True)
    print("longest functions:", functions[:3], "longest classes:", classes[:3])
    assert functions and classes
    assert functions[0][0] <= MAX_FUNCTION_LINES, [f for f in functions if f[0] > MAX_FUNCTION_LINES]
    assert classes[0][0] <= MAX_CLASS_LINES, [c for c in classes if c[0] > MAX_CLASS_LINES]
