"""Reading chest X-ray files (PNG, JPEG, TIFF, ... through Pillow; DICOM through pydicom).

Value scale: :func:`read_image` returns the file's *native intensity units* as float32, not a
normalised range: 0..255 for 8-bit files, 0..65535 for 16-bit ones, the stored values for 32-bit
integer and float images, and modality units (raw * RescaleSlope + RescaleIntercept) for DICOM.
:func:`xraylens.data.preprocess` clips and rescales by percentiles, which makes all of these
comparable; nothing is lost by reading 16-bit or DICOM data as 8-bit first.

Greyscale conversion: colour images (RGB, CMYK, palette, YCbCr, ...) become ITU-R 601 luma
``0.299 R + 0.587 G + 0.114 B`` computed in float (no rounding); an alpha channel is ignored
(X-ray exports carry the image in the colour channels). Pixels are returned in stored order
(EXIF orientation is not applied, so masks drawn on the stored pixels stay aligned). Multi-frame
files (GIF, TIFF, DICOM) give their first frame. DICOM ``MONOCHROME1`` (bright = low values) is
inverted within the image's own value range so that bone is bright, as in every other format.

Every failure (missing file, directory, empty, truncated or corrupt data, not an image, an
image smaller than ``min_size`` pixels per side) raises :class:`~xraylens.errors.ImageReadError`
naming the file and the cause.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from xraylens.errors import ImageReadError

#: Smallest accepted side length in pixels; smaller "images" are icons or corrupt exports.
MIN_SIZE = 8

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_TRUNCATION_LOCK = threading.Lock()


def read_image(path: str | os.PathLike, *, min_size: int = MIN_SIZE) -> np.ndarray:
    """Read one X-ray as a float32 array [H, W] in the file's native units (module docstring).

    Raises:
        ImageReadError: the file is missing, a directory, empty, truncated, corrupt, not an
            image, smaller than ``min_size`` pixels per side, or a DICOM without pydicom.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in DICOM_SUFFIXES or _has_dicom_preamble(path):
        array = _read_dicom(path)
    else:
        array = _read_pillow(path)
    if array.ndim != 2:
        raise ImageReadError(path, f"expected a 2-D image, got shape {array.shape}")
    h, w = array.shape
    if min(h, w) < min_size:
        raise ImageReadError(
            path, f"image is {w}x{h} pixels, smaller than {min_size} pixels per side"
        )
    if not np.isfinite(array).all():
        raise ImageReadError(path, "image contains NaN or infinite values")
    return np.ascontiguousarray(array, dtype=np.float32)


def read_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask image as bool [H, W] (non-zero = inside); ``shape`` (H, W) is checked."""
    path = Path(path)
    mask = read_image(path, min_size=1) > 0
    if shape is not None and mask.shape != tuple(shape):
        raise ImageReadError(
            path, f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {shape[1]}x{shape[0]}"
        )
    return mask


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageReadError(path, "no such file")
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(path, f"cannot access: {exc.strerror or exc}") from None
    if size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_pillow(path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # A decompression-bomb *warning* is for web servers; X-rays are legitimately large.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _load_strict(im)
                return _to_grey(im)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, IndexError) as exc:
        raise ImageReadError(path, _describe(exc)) from None


def _load_strict(im: Image.Image) -> None:
    """``im.load()`` that fails on truncated data even if LOAD_TRUNCATED_IMAGES was set."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        im.load()
        return
    # Someone switched Pillow's global to tolerate truncated files (it fills the missing rows
    # with grey). Turn it off for this load only; the lock serialises the few loads that need it.
    with _TRUNCATION_LOCK:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            im.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _to_grey(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("L", "I", "F") or mode.startswith("I;16"):
        return np.asarray(im).astype(np.float32)
    if mode == "1":
        return np.asarray(im).astype(np.float32)  # bilevel: 0 and 1
    if mode == "LA":
        return np.asarray(im.getchannel("L")).astype(np.float32)
    if mode == "La":  # premultiplied alpha: the L channel is already what is shown
        return np.asarray(im.getchannel(0)).astype(np.float32)
    if mode in ("RGB", "RGBA", "RGBX", "RGBa"):
        return _luma(np.asarray(im)[..., :3])
    if mode in ("P", "PA"):
        return _luma(
            np.asarray(im.convert("RGBA" if "transparency" in im.info else "RGB"))[..., :3]
        )
    if mode in ("I;16S", "I;32", "I;32S"):
        return np.asarray(im.convert("I")).astype(np.float32)
    return _luma(np.asarray(im.convert("RGB")))  # CMYK, YCbCr, LAB, HSV


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ _LUMA


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and "truncated" in text.lower():
        return f"truncated image data ({text})"
    return f"corrupt or unsupported image data ({type(exc).__name__}: {text})"


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError:
        raise ImageReadError(
            path, "DICOM files need pydicom: pip install 'xraylens[dicom]'"
        ) from None
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types for bad files
        raise ImageReadError(path, f"not a readable DICOM file ({_describe(exc)})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageReadError(path, "DICOM file has no pixel data")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # missing decoder plugins, bad lengths, ...
        raise ImageReadError(path, f"cannot decode DICOM pixel data ({_describe(exc)})") from None
    pixels = np.asarray(pixels)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    if samples == 3:
        array = _luma(pixels)
    elif pixels.ndim == 2:
        array = pixels.astype(np.float32)
    else:
        raise ImageReadError(path, f"unsupported DICOM pixel layout {pixels.shape}")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    array = array * np.float32(slope) + np.float32(intercept)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        array = array.max() + array.min() - array
    return array.astype(np.float32)
