"""Mapping a map on the crop back onto the original image: sampling, smoothing, trimming."""

from __future__ import annotations

import numpy as np

from ..images import Preprocessing


def _sampling_matrix(n_out: int, n_resized: int, crop_start: int, crop: int, n_grid: int) -> tuple:
    """Bilinear weights ``(n_out, n_grid)`` from a grid over the crop to original pixels.

    Pixel centres of the original are followed through the resize and the crop into
    grid coordinates; outside the crop the border value is taken (and flagged).
    """
    centres = (np.arange(n_out) + 0.5) * n_resized / n_out - crop_start  # crop pixels
    inside = (centres >= 0) & (centres < crop)
    position = np.clip(centres * n_grid / crop - 0.5, 0, n_grid - 1)  # grid-cell centres
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, n_grid - 1)
    frac = position - low
    matrix = np.zeros((n_out, n_grid))
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, low), 1.0 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix, inside


def _crop_origin(size: tuple, preprocessing: Preprocessing) -> tuple:
    """Resized frame ``(width, height)`` and the center crop's ``(left, top)`` in it."""
    left, top, _, _ = preprocessing.crop_box(*size)
    return preprocessing.resized_size(*size), (left, top)


def _to_original(
    grid: np.ndarray,
    size: tuple,
    preprocessing: Preprocessing,
    outside: str,
    shift: tuple = (0, 0),
) -> tuple:
    """Resample a map over the network's crop onto the original ``(width, height)``.

    One separable bilinear resampling does what "upsample to the crop, paste into the
    resized frame, resize to the original" would do in three. ``shift`` moves the crop
    from the center by ``(dx, dy)`` pixels of the resized frame. Returns the map and
    the mask of original pixels the crop covers.
    """
    width, height = size
    (resized_w, resized_h), (left, top) = _crop_origin(size, preprocessing)
    crop = preprocessing.image_size
    rows, inside_y = _sampling_matrix(height, resized_h, top + shift[1], crop, grid.shape[0])
    cols, inside_x = _sampling_matrix(width, resized_w, left + shift[0], crop, grid.shape[1])
    inside = inside_y[:, None] & inside_x[None, :]
    out = rows @ grid @ cols.T
    if outside == "zero":
        out *= inside
    return out, inside


class _View:
    """The maps of one image's crops, brought onto the original image and averaged."""

    def __init__(self, size: tuple, preprocessing: Preprocessing, outside: str):
        self.size = size
        self.preprocessing = preprocessing
        self.outside = outside
        self.total = np.zeros((size[1], size[0]))
        self.count = np.zeros((size[1], size[0]))
        self.shifts: list = []
        self.center = None

    def add(self, grid: np.ndarray, shift: tuple) -> None:
        out, inside = _to_original(
            np.asarray(grid, dtype=np.float64), self.size, self.preprocessing, self.outside, shift
        )
        self.total += out
        # With outside="zero" a crop speaks only for the pixels it covers.
        self.count += inside if self.outside == "zero" else 1.0
        self.shifts.append(shift)
        if self.center is None:
            self.center = inside

    def mean(self) -> np.ndarray:
        out = np.divide(
            self.total, self.count, out=np.zeros_like(self.total), where=self.count > 0
        )
        if self.outside == "zero":
            out *= self.center  # only what the prediction's own crop saw
        return out


def _normalized(grid: np.ndarray) -> np.ndarray:
    """ReLU, then min-max to [0, 1]; a constant map (e.g. all zero) becomes all zero."""
    out = np.maximum(np.asarray(grid, dtype=np.float64), 0.0)
    low, high = float(out.min()), float(out.max())
    out = (out - low) / (high - low) if high > low else np.zeros_like(out)
    return out.astype(np.float32)


def _inside_crop(size: tuple, preprocessing: Preprocessing, margin: float = 0.0) -> np.ndarray:
    """Mask of original pixels whose centres fall in the center crop less ``margin`` px."""
    width, height = size
    (resized_w, resized_h), (left, top) = _crop_origin(size, preprocessing)
    crop = preprocessing.image_size

    def axis(n_out, n_resized, start):
        centres = (np.arange(n_out) + 0.5) * n_resized / n_out - start
        return (centres >= margin) & (centres < crop - margin)

    return axis(height, resized_h, top)[:, None] & axis(width, resized_w, left)[None, :]


def _smoothed_and_trimmed(
    heat: np.ndarray,
    size: tuple,
    preprocessing: Preprocessing,
    smooth: float,
    trim: float,
    outside: str = "zero",
) -> np.ndarray:
    """Gaussian smoothing, then the crop's border band of ``trim`` px taken away.

    ``smooth`` (the Gaussian's sigma) and ``trim`` are in pixels of the resized image,
    the network's scale. With ``outside="zero"`` the smoothing is normalised over the
    crop, so the zeros outside it do not darken the crop's border, and the map is 0
    outside the crop less ``trim``; with ``"edge"`` the whole map is smoothed and the
    trimmed crop's border values are extended outwards.
    """
    if not smooth and not trim:
        return heat
    from scipy.ndimage import gaussian_filter

    width, height = size
    resized_w, resized_h = _crop_origin(size, preprocessing)[0]
    out = heat
    if smooth:
        sigma = (smooth * height / resized_h, smooth * width / resized_w)
        if outside == "zero":
            inside = _inside_crop(size, preprocessing).astype(np.float64)
            weight = gaussian_filter(inside, sigma, mode="constant", truncate=3.0)
            blurred = gaussian_filter(heat * inside, sigma, mode="constant", truncate=3.0)
            out = np.divide(blurred, weight, out=np.zeros_like(heat), where=weight > 1e-12)
            out *= inside
        else:
            out = gaussian_filter(heat, sigma, mode="nearest", truncate=3.0)
    if trim:
        kept = _inside_crop(size, preprocessing, trim)
        if outside == "zero":
            out = out * kept
        elif kept.any():  # edge: extend the trimmed crop's border values
            rows, cols = np.flatnonzero(kept.any(axis=1)), np.flatnonzero(kept.any(axis=0))
            r = np.clip(np.arange(height), rows[0], rows[-1])
            c = np.clip(np.arange(width), cols[0], cols[-1])
            out = out[r][:, c]
    return out
