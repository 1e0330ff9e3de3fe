"""read_image: formats, modes, value scale, DICOM, and a corpus of bad files."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
from PIL import Image, ImageFile

import xraylens as xl
from xraylens.data.io import read_image, read_mask
from xraylens.errors import ImageReadError

RNG = np.random.default_rng(0)
GREY = (RNG.random((40, 52)) * 255).astype(np.uint8)
RGB = (RNG.random((40, 52, 3)) * 255).astype(np.uint8)
LUMA = RGB.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def test_public_name():
    assert xl.data.read_image is read_image
    assert xl.ImageReadError is ImageReadError


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_lossless_8bit_grey_is_exact(tmp_path, suffix):
    path = tmp_path / f"grey{suffix}"
    Image.fromarray(GREY).save(path)
    out = read_image(path)
    assert out.dtype == np.float32 and out.shape == (40, 52)
    np.testing.assert_array_equal(out, GREY.astype(np.float32))


def test_jpeg_grey_and_rgb(tmp_path):
    Image.fromarray(GREY).save(tmp_path / "g.jpg", quality=95)
    Image.fromarray(RGB).save(tmp_path / "c.jpeg", quality=95)
    g = read_image(tmp_path / "g.jpg")
    c = read_image(tmp_path / "c.jpeg")
    assert g.shape == c.shape == (40, 52)
    assert np.abs(g - GREY).mean() < 6  # lossy, but the same picture
    assert c.min() >= 0 and c.max() <= 255


def test_16bit_png_keeps_native_units(tmp_path):
    a = (RNG.random((30, 20)) * 65535).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.max() > 255  # not squeezed to 8 bit
    np.testing.assert_array_equal(out, a.astype(np.float32))


def test_32bit_int_and_float_tiff(tmp_path):
    ints = (RNG.random((20, 24)) * 1e6).astype(np.int32)
    floats = RNG.normal(size=(20, 24)).astype(np.float32)
    Image.fromarray(ints).save(tmp_path / "i.tif")
    Image.fromarray(floats).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "i.tif"), ints.astype(np.float32))
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif"), floats)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "CMYK", "1"])
def test_colour_and_other_modes_become_grey(tmp_path, mode):
    base = Image.fromarray(RGB)
    if mode == "RGBA":
        img = base.convert("RGBA")
        img.putalpha(Image.fromarray((RNG.random((40, 52)) * 255).astype(np.uint8)))
        expected = LUMA  # alpha ignored
    elif mode == "LA":
        img = Image.fromarray(GREY).convert("LA")
        expected = GREY.astype(np.float32)
    elif mode == "P":
        img = Image.fromarray(GREY).convert("P")  # greyscale palette
        expected = GREY.astype(np.float32)
    elif mode == "CMYK":
        img = base.convert("CMYK")
        expected = LUMA
    elif mode == "1":
        img = Image.fromarray(GREY > 128)
        expected = (GREY > 128).astype(np.float32)
    else:
        img, expected = base, LUMA
    suffix = ".tif" if mode == "CMYK" else ".png"
    img.save(tmp_path / f"x{suffix}")
    out = read_image(tmp_path / f"x{suffix}")
    assert out.shape == (40, 52) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1.0)


def test_read_mask(tmp_path):
    Image.fromarray(GREY > 100).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png", shape=(40, 52))
    assert mask.dtype == bool and (mask == (GREY > 100)).all()
    with pytest.raises(ImageReadError, match="m.png"):
        read_mask(tmp_path / "m.png", shape=(41, 52))


# --- DICOM -------------------------------------------------------------------------------------
try:
    import pydicom
except ImportError:  # pragma: no cover - dev extra installs it
    pydicom = None
needs_pydicom = pytest.mark.skipif(pydicom is None, reason="pydicom not installed")


def write_dicom(path, pixels=None, photometric="MONOCHROME2", slope=None, intercept=None):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    try:
        ds.save_as(path, enforce_file_format=True)  # pydicom >= 3
    except TypeError:  # pragma: no cover - pydicom 2
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


@needs_pydicom
def test_dicom_rescale_slope_intercept(tmp_path):
    raw = (RNG.random((24, 30)) * 4095).astype(np.uint16)
    write_dicom(tmp_path / "a.dcm", raw, slope=2.0, intercept=-1024.0)
    out = read_image(tmp_path / "a.dcm")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, raw * 2.0 - 1024.0)


@needs_pydicom
def test_dicom_monochrome1_is_inverted_within_its_range(tmp_path):
    raw = (RNG.random((24, 30)) * 4095).astype(np.uint16)
    write_dicom(tmp_path / "mono1", raw, photometric="MONOCHROME1")  # no suffix: found by magic
    out = read_image(tmp_path / "mono1")
    np.testing.assert_allclose(out, raw.max() + raw.min() - raw.astype(np.float32))
    assert np.corrcoef(out.ravel(), raw.ravel())[0, 1] < -0.99


@needs_pydicom
def test_dicom_without_pixel_data(tmp_path):
    write_dicom(tmp_path / "empty.dcm")
    with pytest.raises(ImageReadError, match=r"empty\.dcm.*no pixel data"):
        read_image(tmp_path / "empty.dcm")


def test_dicom_without_pydicom_says_how_to_install(tmp_path, monkeypatch):
    path = tmp_path / "x.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ImportError
    with pytest.raises(ImageReadError, match=r"x\.dcm.*pip install 'xraylens\[dicom\]'"):
        read_image(path)


# --- bad files -----------------------------------------------------------------------------------
def make_bad_corpus(root):
    """name -> path of files that must all raise ImageReadError."""
    Image.fromarray(GREY).save(root / "good.png")
    Image.fromarray(GREY).save(root / "good.jpg")
    png, jpg = (root / "good.png").read_bytes(), (root / "good.jpg").read_bytes()
    files = {
        "empty.png": b"",
        "trunc_head.png": png[:60],
        "trunc_half.png": png[: len(png) // 2],
        "trunc_half.jpg": jpg[: len(jpg) // 2],
        "trunc_end.jpg": jpg[:-40],
        "random.jpg": RNG.bytes(2000),
        "random.png": b"\x89PNG\r\n\x1a\n" + RNG.bytes(500),
        "text.png": b"this is not an image\n",
    }
    corpus = {}
    for name, data in files.items():
        (root / name).write_bytes(data)
        corpus[name] = root / name
    Image.fromarray(GREY[:1, :1]).save(root / "one_pixel.png")
    Image.fromarray(GREY[:4, :30]).save(root / "sliver.png")
    (root / "folder.png").mkdir()
    corpus.update(
        {
            "one_pixel.png": root / "one_pixel.png",
            "sliver.png": root / "sliver.png",
            "folder.png": root / "folder.png",
            "missing.png": root / "missing.png",
        }
    )
    if pydicom is not None:
        write_dicom(root / "nopixels.dcm")
        corpus["nopixels.dcm"] = root / "nopixels.dcm"
        (root / "garbage.dcm").write_bytes(RNG.bytes(300))
        corpus["garbage.dcm"] = root / "garbage.dcm"
    return corpus


@pytest.mark.parametrize("tolerant_pillow", [False, True])
def test_every_bad_file_raises_image_read_error_naming_it(tmp_path, monkeypatch, tolerant_pillow):
    # LOAD_TRUNCATED_IMAGES=True makes plain Pillow accept truncated files (grey fill);
    # read_image must still refuse them, and must leave the user's setting as it was.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", tolerant_pillow)
    corpus = make_bad_corpus(tmp_path)
    assert read_image(tmp_path / "good.png").shape == (40, 52)
    for _ in range(2):  # every time, not only the first
        for name, path in corpus.items():
            with pytest.raises(ImageReadError) as info:
                read_image(path)
            assert name in str(info.value), (name, str(info.value))
            assert info.value.path == str(path) and info.value.cause
    assert ImageFile.LOAD_TRUNCATED_IMAGES is tolerant_pillow


def test_plain_pillow_would_accept_the_truncated_file(tmp_path, monkeypatch):
    # guards the test above: the corpus really holds files a tolerant Pillow lets through
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    corpus = make_bad_corpus(tmp_path)
    with Image.open(corpus["trunc_half.jpg"]) as im:
        im.load()
        assert im.size == (52, 40)


def test_causes_are_specific(tmp_path):
    corpus = make_bad_corpus(tmp_path)
    causes = {
        "empty.png": "empty",
        "trunc_half.jpg": "truncated",
        "text.png": "not a recognised image",
        "one_pixel.png": "1x1 pixels",
        "folder.png": "directory",
        "missing.png": "no such file",
    }
    for name, cause in causes.items():
        with pytest.raises(ImageReadError, match=cause):
            read_image(corpus[name])


def test_image_read_error_pickles():
    err = ImageReadError("/x/y.png", "truncated")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.path == "/x/y.png"


def test_real_images_read(shared_data):
    paths = sorted((shared_data / "covid-chestxray" / "images").iterdir())[:5]
    paths += sorted((shared_data / "chest_xray" / "test" / "NORMAL").iterdir())[:5]
    for path in paths:
        img = read_image(path)
        assert img.ndim == 2 and min(img.shape) >= 8 and img.min() >= 0 and img.max() <= 255
