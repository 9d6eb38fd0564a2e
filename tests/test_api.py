"""The public API: a curated, sorted, complete ``torchpack.__all__``, imported lazily."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pathlib
import inspect
import subprocess
import sys

import pytest

import torchpack


def test_all_is_sorted_and_complete():
    assert torchpack.__all__ == sorted(torchpack.__all__)
    assert len(set(torchpack.__all__)) == len(torchpack.__all__)
    assert set(torchpack.__all__) == set(torchpack._EXPORTS) | {"__version__"}
    assert sorted(dir(torchpack)) == torchpack.__all__


@pytest.mark.parametrize("name", sorted(torchpack._EXPORTS))
def test_every_public_name_resolves_and_is_documented(name):
    value = getattr(torchpack, name)
    module = importlib.import_module(torchpack._EXPORTS[name])
    assert value is getattr(module, name)
    assert not inspect.ismodule(value)
    assert inspect.getdoc(value), f"torchpack.{name} has no docstring"


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        torchpack.nope  # noqa: B018


def test_convert_stays_the_function_after_its_module_is_imported():
    module = importlib.import_module("torchpack.converter")
    importlib.import_module("torchpack.cli")
    assert torchpack.convert is module.convert and callable(torchpack.convert)
    assert not any(
        importlib.util.find_spec(f"torchpack.{name}") for name in torchpack.__all__ if name != "__version__"
    ), "a submodule named like a public name would replace it on import"


@pytest.mark.parametrize("module", ["torchpack", "torchpack.ingest"])
def test_importing_without_torch(module):
    """Converter workers import only torchpack.ingest; starting them must not pay for importing torch."""
    code = f"import {module}, sys; print('torch' in sys.modules, 'torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_version_is_a_string():
    assert isinstance(torchpack.__version__, str) and torchpack.__version__.count(".") >= 1


def test_all_the_lazy_table_and_the_type_checking_imports_agree():
    """One list of public names: ``__all__``, the lazy import table and the imports type checkers read."""
    source = pathlib.Path(torchpack.__file__).read_text()
    type_checking = next(
        node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
    )
    imported = {
        alias.name: node.module for node in type_checking.body if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert imported == torchpack._EXPORTS
    assert sorted(torchpack.__all__) == sorted([*torchpack._EXPORTS, "__version__"])
    for name, module in torchpack._EXPORTS.items():
        assert getattr(importlib.import_module(module), name) is getattr(torchpack, name)
