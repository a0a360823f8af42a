"""Every public function and class documents its parameters, returns and an example.

In the spirit of imbalanced-learn's ``test_docstring_parameters.py``, with numpydoc's
validator: a docstring that lists a parameter the signature lacks (or misses one it has),
or that has no Examples section, fails here.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")

MODULES = [
    "skconv",
    "skconv.zoo",
    "skconv.images",
    "skconv.features",
    "skconv.finetune",
    "skconv.model_selection",
    "skconv.datasets",
    "skconv.experiment",
    "skconv.compare",
    "skconv.cli",
    "skconv.engine.pooling",
    "skconv.engine.memory",
    "skconv.report",
    "skconv.report_html",
    "skconv.explain",
    "skconv.export",
    "skconv.persistence",
    "skconv.distributed",
]
# PR01/PR02: parameters missing from or unknown to the docstring; RT01: no Returns
# section (functions only); EX01: no Examples; GL08: no docstring at all.
CHECKS = {"PR01", "PR02", "EX01", "GL08"}
FUNCTION_CHECKS = CHECKS | {"RT01"}


def public_objects():
    seen = {}
    for module_name in MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        names = getattr(module, "__all__", None) or [
            n
            for n, obj in vars(module).items()
            if not n.startswith("_") and getattr(obj, "__module__", None) == module_name
        ]
        for name in names:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if not obj.__module__.startswith("skconv"):
                continue
            seen.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return sorted(seen)


@pytest.mark.parametrize("qualname", public_objects())
def test_docstring(qualname):
    result = numpydoc_validate.validate(qualname)
    module_name, _, name = qualname.rpartition(".")
    obj = getattr(importlib.import_module(module_name), name)
    wanted = FUNCTION_CHECKS if inspect.isfunction(obj) else CHECKS
    if inspect.isclass(obj) and issubclass(obj, Exception):
        wanted = wanted - {"EX01"}  # an exception is shown where it is raised
    errors = [f"{code}: {message}" for code, message in result["errors"] if code in wanted]
    assert not errors, f"{qualname}:\n" + "\n".join(errors)
