"""Keep freed memory in the process: torch on a CPU runs about twice as fast in a fresh process.

glibc's ``malloc`` serves large blocks with ``mmap`` and hands the top of its heap back
to the kernel when enough of it is free. Eager torch on a CPU allocates and frees each
layer's activations, megabytes per chunk of images, so a fresh process keeps asking the
kernel for new, zeroed pages. On the 2-core benchmark machine, keeping freed memory for
reuse made ``ConvFeatureTransformer(engine="torch").transform`` 1.7 times as fast, an
epoch of ``FineTuneClassifier()`` 2.1 times and the whole ``skconv fit --mode finetune``
1.4 times, for about the same peak memory (``benchmarks/results/malloc.md``). ONNX
Runtime keeps an arena of its own and gains nothing.

It changes how the whole process allocates, so skconv does it only where it owns the
process, in the ``skconv`` command; a script or notebook calls
:func:`reuse_freed_memory` once itself. Importing this module imports nothing heavy.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["reuse_freed_memory"]

# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap (glibc before 2.26 accepts 32 MiB at most).
MMAP_THRESHOLD = 1 << 30
#: The heap is given back to the kernel only once this much of its top is free.
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes a C int

# Settings of the user's own: left as they are.
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory in the process for reuse, instead of returning it.

    Call it once, early in a process that runs torch on a CPU (``engine="torch"``,
    :class:`~skconv.FineTuneClassifier`); the ``skconv`` command does. Peak memory stays
    the same; memory freed after the peak is kept for the process's next use rather
    than given back to the system. It does nothing, and returns False, outside Linux
    with glibc, and where the environment already sets glibc's malloc
    (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or
    ``glibc.malloc`` tunables in ``GLIBC_TUNABLES``).

    Returns
    -------
    applied : bool
        Whether glibc took the settings.

    Examples
    --------
    At the top of a script that fine-tunes on a CPU:

    >>> from skconv.engine import reuse_freed_memory
    >>> reuse_freed_memory()  # doctest: +SKIP
    True
    """
    if not sys.platform.startswith("linux"):
        return False
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # The mmap threshold first: where glibc takes no value, nothing has changed.
    if not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) or mallopt(_M_MMAP_THRESHOLD, 32 << 20)):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
