"""Overlays: a heat map coloured and blended over its image."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..images import load_image


def overlay(image, heatmap, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
    """Blend a heat map into its image in colour.

    Parameters
    ----------
    image : path-like, PIL image or ndarray
        The image, in any form :func:`skconv.images.load_image` accepts.
    heatmap : array-like of shape (height, width)
        Values in [0, 1], the image's size, as :func:`heatmaps` returns them.
    alpha : float, default=0.5
        Weight of the colour map: 0 returns the image, 1 the colour map alone.
    colormap : str, default="jet"
        A matplotlib colormap name (``"jet"``, ``"inferno"``, ``"viridis"``...).

    Returns
    -------
    overlaid : PIL.Image.Image
        An RGB image of the image's size.

    Raises
    ------
    ValueError
        If the map's shape differs from the image's, its values leave [0, 1],
        ``alpha`` leaves [0, 1] or ``colormap`` is unknown.

    Examples
    --------
    >>> import numpy as np
    >>> from skconv.explain import overlay
    >>> image = np.zeros((20, 30), dtype=np.uint8)
    >>> heat = np.linspace(0, 1, 600).reshape(20, 30)
    >>> out = overlay(image, heat, alpha=0.4)
    >>> out.size, out.mode
    ((30, 20), 'RGB')
    """
    import matplotlib

    rgb = load_image(image, where="image")
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.shape != (rgb.height, rgb.width):
        raise ValueError(
            f"heatmap has shape {heat.shape} but the image is {rgb.height} x {rgb.width} "
            "(height x width); pass the map heatmaps() returned for this image."
        )
    if not np.isfinite(heat).all() or heat.min(initial=0) < 0 or heat.max(initial=0) > 1:
        raise ValueError(
            "heatmap values must be finite and lie in [0, 1]; heatmaps() "
            "returns such maps with normalize=True."
        )
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}.")
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ValueError(
            f"Unknown colormap {colormap!r}; use a matplotlib name such as "
            "'jet', 'inferno' or 'viridis'."
        ) from None
    colours = cmap(heat)[..., :3] * 255.0
    blended = (1.0 - alpha) * np.asarray(rgb, dtype=np.float64) + alpha * colours
    return Image.fromarray(np.rint(blended).clip(0, 255).astype(np.uint8))  # RGB
