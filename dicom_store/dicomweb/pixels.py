"""Decoding stored frames, for the two answers that need pixels: ``rendered`` images and uncompressed
frames asked of a compressed instance. Never on the hot path (stored bytes go out untouched there).

Compressed frames are decoded with imagecodecs, which returns colour as RGB (the JPEG/J2K colour
transform undone); native YBR_FULL frames are converted to RGB here, so every decoded colour frame is
RGB. The uncompressed frames we send are therefore RGB: the client should treat their
PhotometricInterpretation as RGB (PS3.5 §8.2.1 allows this change on decompression).
"""

from __future__ import annotations

from dataclasses import dataclass

import imagecodecs
import numpy as np

_JPEG = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"}
_JLS = {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
_J2K = {
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
}
_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"}


class CannotDecode(ValueError):
    """No decoder here for this transfer syntax (answered 406, or rendered via pydicom)."""


@dataclass(frozen=True)
class PixelFormat:
    rows: int
    columns: int
    samples: int
    bits_allocated: int
    signed: bool
    planar: bool
    photometric: str

    @classmethod
    def from_dataset(cls, ds) -> PixelFormat:  # type: ignore[no-untyped-def]
        return cls(
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            samples=int(ds.get("SamplesPerPixel", 1) or 1),
            bits_allocated=int(ds.get("BitsAllocated", 8) or 8),
            signed=int(ds.get("PixelRepresentation", 0) or 0) == 1,
            planar=int(ds.get("PlanarConfiguration", 0) or 0) == 1,
            photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")),
        )


def can_decode(transfer_syntax_uid: str) -> bool:
    return transfer_syntax_uid in _JPEG | _JLS | _J2K | _NATIVE


def decode_frame(data: bytes, transfer_syntax_uid: str, fmt: PixelFormat) -> np.ndarray:
    """One frame as (rows, columns) or (rows, columns, samples); colour as RGB."""
    if transfer_syntax_uid in _NATIVE:
        return _native(data, fmt)
    if transfer_syntax_uid in _JPEG:
        try:
            return imagecodecs.jpeg8_decode(data)
        except Exception:
            return imagecodecs.ljpeg_decode(data)
    if transfer_syntax_uid in _JLS:
        return imagecodecs.jpegls_decode(data)
    if transfer_syntax_uid in _J2K:
        return imagecodecs.jpeg2k_decode(data)
    raise CannotDecode(f"no decoder for transfer syntax {transfer_syntax_uid}")


def _native(data: bytes, fmt: PixelFormat) -> np.ndarray:
    if fmt.bits_allocated == 1:
        bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        return bits[: fmt.rows * fmt.columns].reshape(fmt.rows, fmt.columns)
    dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32}.get(fmt.bits_allocated)
    if dtype is None:
        raise CannotDecode(f"BitsAllocated {fmt.bits_allocated} is not supported")
    array = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
    if fmt.signed:
        array = array.view(np.dtype(dtype.__name__.replace("uint", "int")).newbyteorder("<"))
    count = fmt.rows * fmt.columns * fmt.samples
    array = array[:count]
    if fmt.samples == 1:
        return array.reshape(fmt.rows, fmt.columns)
    if fmt.planar:
        array = array.reshape(fmt.samples, fmt.rows, fmt.columns).transpose(1, 2, 0)
    else:
        array = array.reshape(fmt.rows, fmt.columns, fmt.samples)
    if fmt.photometric.startswith("YBR_FULL") and fmt.samples == 3:
        return ybr_to_rgb(array)
    return array


def ybr_to_rgb(array: np.ndarray) -> np.ndarray:
    ycc = array.astype(np.float32)
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128.0, ycc[..., 2] - 128.0
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def native_bytes(array: np.ndarray) -> bytes:
    """A decoded frame as Explicit VR Little Endian Pixel Data bytes (colour-by-pixel)."""
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
