"""An instance's image as a PNG with a 10 mm scale bar (issue 19), for the series page.

The stored file's pixel data (PS3.3 C.7.6.3) is read with pydicom, Rescale Slope/Intercept
(0028,1053/1052) applied, windowed by Window Center/Width (0028,1050/1051) or, without
them, by the 1st and 99th percentiles, shrunk to at most :data:`MAX_SIDE` pixels and encoded
with a small PNG encoder (zlib, no image library). Two bars 10 mm long are drawn at the
bottom left: a horizontal one ``10 / column spacing`` pixels long and a vertical one
``10 / row spacing`` pixels long (Pixel Spacing (0028,0030) is row spacing then column
spacing, PS3.3 10.7.1.3), so a wrong spacing shows as a wrong bar.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.multival import MultiValue

#: Longest side of the rendered image, pixels.
MAX_SIDE = 512
#: The scale bar's length, mm.
BAR_MM = 10.0
_BAR_RGB = (255, 200, 0)


class NotRenderable(ValueError):
    """The file has no pixel data this renderer can decode (compressed without a decoder,
    colour, or none at all)."""


def _png(rgb: NDArray[np.uint8]) -> bytes:
    """A PNG (8-bit RGB, no interlace) of an ``(h, w, 3)`` array."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def _first(value: object) -> float:
    """The first value of a DS that may be multi-valued (Window Center/Width, VM 1-n)."""
    if isinstance(value, MultiValue | list | tuple):
        value = next(iter(value))
    return float(value)  # type: ignore[arg-type]


def _window(ds: object, pixels: NDArray[np.float64]) -> NDArray[np.uint8]:
    try:
        c, w = _first(getattr(ds, "WindowCenter", None)), _first(getattr(ds, "WindowWidth", None))
        low, high = c - w / 2, c + w / 2
    except (TypeError, ValueError, IndexError):
        low, high = (float(v) for v in np.percentile(pixels, [1, 99]))
    if high <= low:
        high = low + 1.0
    scaled = (np.clip(pixels, low, high) - low) / (high - low) * 255.0
    out = scaled.astype(np.uint8)
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        out = 255 - out
    return out


def render_png(path: Path, row_mm: float | None, column_mm: float | None) -> bytes:
    """The first frame of the file at ``path`` as a PNG, with 10 mm bars for a spacing of
    ``row_mm`` x ``column_mm`` (no bar without a spacing). :class:`NotRenderable` when
    the pixel data cannot be decoded; ``OSError`` when the file cannot be read."""
    ds = dcmread(path)
    try:
        pixels = np.asarray(ds.pixel_array, dtype=np.float64)
    except Exception as exc:
        raise NotRenderable(f"cannot decode the pixel data: {exc}") from exc
    if pixels.ndim == 3 and int(getattr(ds, "SamplesPerPixel", 1)) == 1:
        pixels = pixels[0]
    if pixels.ndim != 2:
        raise NotRenderable("only monochrome images are rendered")
    pixels = pixels * float(getattr(ds, "RescaleSlope", 1) or 1) + float(
        getattr(ds, "RescaleIntercept", 0) or 0
    )
    step = max(1, -(-max(pixels.shape) // MAX_SIDE))
    gray = _window(ds, pixels[::step, ::step])
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    if row_mm and column_mm and row_mm > 0 and column_mm > 0:
        _draw_bars(rgb, BAR_MM / (column_mm * step), BAR_MM / (row_mm * step))
    return _png(np.ascontiguousarray(rgb))


def _draw_bars(rgb: NDArray[np.uint8], across_px: float, down_px: float) -> None:
    """The horizontal (``across_px`` long) and vertical (``down_px``) bars, 3 px thick,
    from a corner 8 px in from the bottom left; clipped to the image."""
    h, w, _ = rgb.shape
    x0, y0 = 8, h - 8
    x1 = min(w, x0 + max(1, round(across_px)))
    y1 = max(0, y0 - max(1, round(down_px)))
    rgb[max(0, y0 - 3) : y0, x0:x1] = _BAR_RGB
    rgb[y1:y0, x0 : min(w, x0 + 3)] = _BAR_RGB
