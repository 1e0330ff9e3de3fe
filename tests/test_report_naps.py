"""NAP energy outside the lungs in the report, from a profile output (``nap.npz``) and a folder
of lung masks: drawn and tabled with the audit's own numbers, or a clear note without masks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from xraylens import audit
from xraylens.errors import InputError
from xraylens.profile import NAPResult
from xraylens.report import Image, Table, render_html
from xraylens.report.outputs import build, typical_lungs

GROUPS = ("COVID-19", "<b>No Finding</b>", "Pneumonia")


def nap(size: int = 32) -> NAPResult:
    rng = np.random.default_rng(0)
    shapes = {"input": (1, size, size), "layer1": (4, size // 4, size // 4), "fc": (3,)}
    sums = {k: rng.random((3, *s)) * 3 for k, s in shapes.items()}
    sums["input"][0, 0, :4] += 20  # group 0 lives in the top band, outside the lungs
    lo = {k: np.zeros(s[0]) for k, s in shapes.items()}
    hi = {k: np.full(s[0], 5.0) for k, s in shapes.items()}
    return NAPResult(tuple(shapes), GROUPS, sums, [3, 2, 2], 7, lo, hi, model="resnet18")


@pytest.fixture
def outputs(tmp_path):
    (tmp_path / "prof").mkdir()
    nap().save(tmp_path / "prof" / "nap.npz")
    (tmp_path / "masks").mkdir()
    for i, top in enumerate((8, 10, 30)):  # the third is an outlier: the majority drops it
        m = np.zeros((64, 64), np.uint8)
        m[top : top + 40, 8:56] = 255
        PILImage.fromarray(m).save(tmp_path / "masks" / f"im{i}.png")
    return tmp_path


def test_nap_energy_outside_the_lungs_equals_the_audit(outputs):
    import xraylens as xl

    doc = build(profile=[outputs / "prof"], masks=outputs / "masks")
    (sec,) = [s for s in doc.sections if s.title.startswith("NAPs")]
    tables = [b for b in sec.blocks if isinstance(b, Table)]
    figures = [b for b in sec.blocks if isinstance(b, Image)]
    assert len(tables) == 1 and len(figures) == 2  # the input NAPs and the outside-lungs plot
    masks = [xl.data.preprocess_mask(xl.data.read_mask(f), 32).numpy()
             for f in sorted((outputs / "masks").glob("*.png"))]  # fmt: skip
    expected = audit.nap_outside_lungs(nap(), typical_lungs(masks))
    assert [list(r) for r in tables[0].rows] == [
        [e["layer"], e["group"], e["share"], e["area"], e["ratio"]] for e in expected
    ]
    assert {r[0] for r in tables[0].rows} == {"input", "layer1"}  # fc has no grid
    top = {r[1]: r[4] for r in tables[0].rows if r[0] == "input"}
    assert top[GROUPS[0]] > max(top[GROUPS[1]], top[GROUPS[2]])  # the planted band
    assert "majority of 3 masks" in tables[0].caption
    page = render_html(doc)
    assert GROUPS[1] not in page and "&lt;b&gt;No Finding&lt;/b&gt;" in page


def test_typical_lungs_is_the_majority():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    a[:2] = b[1:3] = True
    c = np.zeros((4, 4), bool)
    np.testing.assert_array_equal(typical_lungs([a, b, c]), a & b)


def test_without_masks_or_with_unreadable_masks_a_note_not_a_crash(outputs, tmp_path):
    doc = build(profile=[outputs / "prof"])
    text = " ".join(getattr(b, "text", "") for s in doc.sections for b in s.blocks)
    assert "not computed (no lung masks; give `--masks`)" in text
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a mask")
    doc = build(profile=[outputs / "prof"], masks=tmp_path / "junk")
    text = " ".join(getattr(b, "text", "") for s in doc.sections for b in s.blocks)
    assert "no readable mask" in text
    with pytest.raises(InputError, match="no nap.npz"):
        build(profile=[tmp_path / "junk"])
