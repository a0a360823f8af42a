"""Names of a package imported on first use, so that importing the package stays light."""

from __future__ import annotations

import importlib
import sys

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, where: dict[str, str]):
    """A module ``__getattr__`` and ``__dir__`` for names that load on first use (PEP 562).

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    where : dict of str to str
        Each lazy name, and the submodule (relative to ``package``) that defines it.

    Returns
    -------
    getattr, dir : callable
        To assign as the package's ``__getattr__`` and ``__dir__``. A name is imported
        once and then stored on the package, so later lookups skip ``__getattr__``.

    Examples
    --------
    >>> from skconv._lazy import lazy_attributes
    >>> getattr_, dir_ = lazy_attributes("skconv", {"ConvFeatureTransformer": "features"})
    >>> getattr_("ConvFeatureTransformer").__name__
    'ConvFeatureTransformer'
    """

    def __getattr__(name: str):
        if name in where:
            value = getattr(importlib.import_module(f".{where[name]}", package), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
