"""Messy image files and bad arrays, shared by tests/test_robustness.py and
benchmarks/robustness.py (which counts them into benchmarks/results/robustness.md).

Each file case either loads (``expect="load"``, with the RGB pixels it must give) or must
raise an :class:`~skconv.images.ImageLoadError` that names the file (``expect="error"``,
with a pattern its message must match).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageOps


@dataclass
class FileCase:
    name: str
    kind: str  # the bad-input class, a row of the benchmark table
    path: str
    expect: str  # "load" or "error"
    match: str = ""  # for errors: a regex the message matches (besides the file name)
    pixels: np.ndarray | None = None  # for loads: the RGB array load_image must return
    atol: float = 0  # for loads: largest allowed absolute pixel difference


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` grey pixels but holds almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 8 8
newpath 0 0 moveto 8 8 lineto stroke
showpage
%%EOF
"""


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def write_file_cases(folder: Path) -> list[FileCase]:
    """Write every messy-file case into ``folder`` and describe what each must do."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    png, jpeg = _encode(Image.fromarray(rgb), "PNG"), _encode(Image.fromarray(rgb), "JPEG")
    cases: list[FileCase] = []

    def add(name: str, kind: str, data: bytes | None, expect: str, **kw) -> None:
        path = folder / name
        if data is not None:
            path.write_bytes(data)
        cases.append(FileCase(name, kind, str(path), expect, **kw))

    add("zero_bytes.png", "zero-byte file", b"", "error", match="cannot identify")
    add("truncated.png", "truncated file", png[: len(png) // 2], "error", match="truncated")
    add("truncated.jpg", "truncated file", jpeg[: len(jpeg) // 2], "error", match="truncated")
    add(
        "notes.png",
        "not an image (text, EPS)",
        b"Patient notes, not a PNG.\n",
        "error",
        match="cannot identify",
    )
    # EPS is decoded by running Ghostscript; skconv must never start it.
    add("scan.png", "not an image (text, EPS)", EPS, "error", match="cannot identify")
    limit = Image.MAX_IMAGE_PIXELS
    side_1x = int((1.5 * limit) ** 0.5)  # between the limit and twice it: Pillow only warns
    side_2x = int((3 * limit) ** 0.5)  # above twice the limit: Pillow refuses
    add(
        "bomb_1x.png",
        "decompression bomb",
        header_only_png(side_1x, side_1x),
        "error",
        match="MAX_IMAGE_PIXELS",
    )
    add(
        "bomb_2x.png",
        "decompression bomb",
        header_only_png(side_2x, side_2x),
        "error",
        match="decompression bomb",
    )
    directory = folder / "folder.png"
    directory.mkdir(exist_ok=True)
    add("folder.png", "not a file (folder, missing)", None, "error", match="is a directory")
    add("missing.png", "not a file (folder, missing)", None, "error", match="not found")

    # Awkward but valid files: each must load as the right RGB pixels.
    cmyk = _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    add("cmyk.jpg", "CMYK / palette / alpha / 1-bit", cmyk, "load", pixels=_decoded(cmyk))
    palette = Image.fromarray(rgb).convert("P")
    add(
        "palette.png",
        "CMYK / palette / alpha / 1-bit",
        _encode(palette, "PNG"),
        "load",
        pixels=np.asarray(palette.convert("RGB")),
    )
    clear = palette.copy()
    clear.info["transparency"] = 0
    add(
        "palette_transparent.png",
        "CMYK / palette / alpha / 1-bit",
        _encode(clear, "PNG"),
        "load",
        pixels=np.asarray(palette.convert("RGB")),
    )
    rgba = np.concatenate([rgb, rng.integers(0, 256, (24, 32, 1), dtype=np.uint8)], axis=2)
    add(
        "rgba.png",
        "CMYK / palette / alpha / 1-bit",
        _encode(Image.fromarray(rgba), "PNG"),
        "load",
        pixels=rgb,
    )
    bits = Image.fromarray(rgb[..., 0] > 127)
    add(
        "bilevel.png",
        "CMYK / palette / alpha / 1-bit",
        _encode(bits, "PNG"),
        "load",
        pixels=np.asarray(bits.convert("RGB")),
    )
    deep = rng.integers(0, 65536, (24, 32), dtype=np.uint16)
    add(
        "gray16.png",
        "16-bit / float grayscale",
        _encode(Image.fromarray(deep), "PNG"),
        "load",
        pixels=np.repeat(np.rint(deep / 257.0).astype(np.uint8)[..., None], 3, axis=2),
    )
    unit = rng.random((24, 32), dtype=np.float32)
    add(
        "float_unit.tif",
        "16-bit / float grayscale",
        _encode(Image.fromarray(unit), "TIFF"),
        "load",
        pixels=np.repeat(np.rint(unit * 255.0).astype(np.uint8)[..., None], 3, axis=2),
    )
    add(
        "float_range.tif",
        "16-bit / float grayscale",
        _encode(Image.fromarray(unit * 4095), "TIFF"),
        "error",
        match=r"must lie in \[0, 1\]",
    )
    tagged = Image.fromarray(rgb)
    exif = tagged.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rotated = _encode(tagged, "JPEG", quality=95, exif=exif)
    add(
        "exif_rotated.jpg",
        "EXIF orientation",
        rotated,
        "load",
        pixels=np.rot90(_decoded(rotated), k=-1),
    )
    add("jpeg_named.png", "wrong extension / many frames", jpeg, "load", pixels=_decoded(jpeg))
    frames = [Image.fromarray(rgb).convert("P"), Image.fromarray(255 - rgb).convert("P")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    add(
        "animated.gif",
        "wrong extension",
        buffer.getvalue(),
        "load",
        pixels=np.asarray(frames[0].convert("RGB")),
        atol=0,
    )
    return cases


def exif_reference(path: str) -> np.ndarray:
    """What Pillow itself shows for ``path`` (used to double-check the EXIF case)."""
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


# ------------------------------------------------------------------------ random bytes


def seed_files() -> dict[str, bytes]:
    """Small valid files of every common format, the material the fuzzers mutate."""
    rgb = np.random.default_rng(1).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    return {
        fmt: _encode(image if fmt != "GIF" else image.convert("P"), fmt)
        for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "ICO", "TGA")
    }


def mutate(data: bytes, positions: list[int], values: list[int], cut: int | None) -> bytes:
    """Overwrite bytes of ``data`` and optionally truncate it: a corrupted file."""
    out = bytearray(data)
    for position, value in zip(positions, values):
        if out:
            out[position % len(out)] = value
    return bytes(out if cut is None else out[: cut % (len(out) + 1)])


# ------------------------------------------------------------------------ bad arrays


@dataclass
class ArrayCase:
    name: str
    kind: str
    make: Callable[[np.ndarray], object]  # from 6 good uint8 images (6, 24, 24) to X
    match: str  # a regex of the error message


ARRAY_CASES = [
    ArrayCase("nan", "NaN / inf", lambda X: np.where(X > 200, np.nan, X / 255.0), "NaN"),
    ArrayCase("inf", "NaN / inf", lambda X: np.where(X > 200, np.inf, X / 255.0), "infinity"),
    ArrayCase("float_range", "NaN / inf", lambda X: X.astype(np.float32), r"\[0, 1\]"),
    ArrayCase(
        "ndim_2",
        "wrong ndim",
        lambda X: X.reshape(6, -1).astype(np.float32) / 255,
        r"shape \(n, h, w\)",
    ),
    ArrayCase("ndim_5", "wrong ndim", lambda X: X[:, None, :, :, None], r"shape \(n, h, w\)"),
    ArrayCase(
        "channels_2",
        "wrong channel count",
        lambda X: np.stack([X, X], axis=-1),
        "1, 3 or 4 channels",
    ),
    ArrayCase(
        "channels_5",
        "wrong channel count",
        lambda X: np.stack([X] * 5, axis=-1),
        "1, 3 or 4 channels",
    ),
    ArrayCase("empty_array", "empty X", lambda X: X[:0], "no images"),
    ArrayCase("empty_list", "empty X", lambda X: [], "no images"),
    ArrayCase("int64", "ambiguous dtype", lambda X: X.astype(np.int64), "uint8"),
    ArrayCase(
        "none_item", "not an image", lambda X: [X[0], None, *X[2:]], r"X\[1\] is a NoneType"
    ),
    ArrayCase("single_path", "not an image", lambda X: "one.png", "single path"),
]
