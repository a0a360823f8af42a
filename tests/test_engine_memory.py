"""reuse_freed_memory: glibc keeps freed memory, and the skconv command asks it to."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import skconv.cli
from skconv.engine import reuse_freed_memory

# Frees 256 MiB it has just touched, then prints whether the settings took and how much
# of it the process still holds (MiB of VmRSS above what it held before).
CHILD = """
import numpy as np
from skconv.engine import reuse_freed_memory
def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
applied = reuse_freed_memory()
before = rss()
block = np.ones(256 << 20, dtype=np.uint8)
del block
print(applied, (rss() - before) // 1024)
"""


def _glibc_version() -> tuple:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, ValueError, OSError):
        return ()
    return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else ()


# Before 2.26 glibc takes no mmap threshold above 32 MiB, so the child's block would stay
# mmapped (and be given back) either way.
glibc = pytest.mark.skipif(_glibc_version() < (2, 26), reason="needs glibc 2.26 or later")


def _child(**env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env={**environ, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    applied, kept_mib = out.stdout.split()
    return applied == "True", int(kept_mib)


@glibc
def test_freed_memory_stays_with_the_process():
    applied, kept_mib = _child()
    assert applied and kept_mib >= 200  # glibc's default would unmap the block at once


@glibc
def test_the_users_own_malloc_settings_are_left_alone():
    applied, kept_mib = _child(MALLOC_TRIM_THRESHOLD_="131072")
    assert not applied and kept_mib < 50


def test_nothing_happens_outside_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert reuse_freed_memory() is False


def test_only_the_skconv_command_changes_the_processs_malloc(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(skconv.cli, "reuse_freed_memory", lambda: calls.append(1))
    assert skconv.cli.main(["--version"]) == 0  # called from Python: not ours to change
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["skconv", "--version"])
    assert skconv.cli.main() == 0  # the command itself
    assert calls == [1]
