"""CovidChestXray, Kermany and combine(): on small layouts made here, and on ../shared/data."""

from __future__ import annotations

import collections
import csv
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import xraylens as xl
from xraylens.data import CovidChestXray, DataWarning, Kermany, LabelSpace, combine
from xraylens.data.datasets import parse_kermany_name

RNG = np.random.default_rng(0)
COLUMNS = ["patientid", "offset", "sex", "age", "finding", "survival", "view", "modality", "date"]
COLUMNS += ["location", "folder", "filename", "doi", "url", "license"]


def test_every_exported_name_exists():
    assert xl.data.CovidChestXray is CovidChestXray and xl.data.Kermany is Kermany
    for name in xl.data.__all__:
        assert getattr(xl.data, name) is not None, name


def save_image(path, h=40, w=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((RNG.random((h, w)) * 255).astype(np.uint8)).save(path)


def make_covid(root, rows, files=None, masks=()):
    """A covid-chestxray layout: rows are (patientid, finding, view, modality, filename)."""
    root.mkdir(parents=True)
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        for pid, finding, view, modality, filename in rows:
            writer.writerow(
                {"patientid": pid, "finding": finding, "view": view, "modality": modality}
                | {"folder": "images", "filename": filename}
            )
    for name in files if files is not None else {r[4] for r in rows}:
        save_image(root / "images" / name)
    for name in masks:
        save_image(root.parent / "lung-masks" / root.name / name)
    return root


ROWS = [
    ("1", "Pneumonia/Viral/COVID-19", "PA", "X-ray", "a.jpg"),
    ("1", "Pneumonia/Viral/COVID-19, ARDS", "AP", "X-ray", "b.png"),
    ("2", "No Finding", "AP Supine", "X-ray", "c.jpg"),
    ("3", "Pneumonia/Bacterial/E.Coli", "PA", "X-ray", "d.jpg"),
    ("3", "Pneumonia/Viral/COVID-19", "L", "X-ray", "lateral.jpg"),  # view filtered out
    ("4", "Pneumonia/Viral/COVID-19", "Axial", "CT", "ct.jpg"),  # modality filtered out
    ("5", "Pneumonia", "PA", "X-ray", "gone.jpg"),  # file missing
    ("6", "Pneumonia", "PA", "X-ray", "d.jpg"),  # same file as patient 3
    ("6", "Pneumonia/Lipoid", "PA", "X-ray", "e.jpg"),
]


@pytest.fixture
def covid(tmp_path):
    files = ["a.jpg", "b.png", "c.jpg", "d.jpg", "e.jpg", "lateral.jpg", "ct.jpg"]
    return make_covid(tmp_path / "covid-chestxray", ROWS, files, masks=["a.png", "d.png"])


def test_covid_reader_filters_reports_and_merges(covid):
    with pytest.warns(DataWarning) as caught:
        ds = CovidChestXray(covid, size=32)
    messages = " ".join(str(w.message) for w in caught)
    assert "missing" in messages and "repeat" in messages
    assert [r["id"] for r in ds.records] == [
        f"covid-chestxray:images/{n}" for n in ("a.jpg", "b.png", "c.jpg", "d.jpg", "e.jpg")
    ]
    assert [m["filename"] for m in ds.missing] == ["gone.jpg"]
    assert ds.missing[0]["row"] == 8  # line in metadata.csv (header is line 1)
    (dup,) = ds.duplicates
    assert dup["filename"] == "d.jpg" and dup["patient_id"] == "covid-chestxray:6"
    assert dup["kept_patient_id"] == "covid-chestxray:3"
    by_name = {r["id"].split("/")[-1]: r for r in ds.records}
    assert by_name["d.jpg"]["patient_aliases"] == ("covid-chestxray:3", "covid-chestxray:6")
    # patient 6's own image joins patient 3's group: they share d.jpg
    assert by_name["e.jpg"]["group"] == by_name["d.jpg"]["group"] == "covid-chestxray:3"
    assert by_name["a.jpg"]["group"] == by_name["b.png"]["group"] == "covid-chestxray:1"
    assert by_name["a.jpg"]["mask_path"].endswith("lung-masks/covid-chestxray/a.png")
    assert by_name["b.png"]["mask_path"] is None
    assert by_name["c.jpg"]["view"] == "AP Supine"
    assert set(by_name["d.jpg"]["labels"]) == {"Bacterial Pneumonia", "Pneumonia"}
    for key in ("patient_id", "path", "finding", "source", "mask_path", "view"):
        assert all(key in r for r in ds.records)


def test_covid_items_and_targets(covid):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ds = CovidChestXray(covid, size=32)
    assert ds.targets.shape == (5, 14) and ds.targets.dtype == torch.float32
    image, target, record = ds[1]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    assert torch.equal(target, LabelSpace().encode("COVID-19, ARDS"))
    record["patient_id"] = "changed"  # a copy: the dataset is unaffected
    assert ds.records[1]["patient_id"] == "covid-chestxray:1"
    assert ds[-1][2]["id"].endswith("e.jpg")
    with pytest.raises(IndexError):
        ds[5]
    mask = ds.mask(0)
    assert mask.dtype == bool and mask.shape == ds.read(0).shape
    assert ds.mask(1) is None


def test_covid_views_modality_masks_options(covid):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        pa = CovidChestXray(covid, views=["pa"])
        every_view = CovidChestXray(covid, views=None)
        everything = CovidChestXray(covid / "metadata.csv", views=None, modality=None)
        no_masks = CovidChestXray(covid, masks=False)
    assert {r["view"] for r in pa.records} == {"PA"}
    assert "covid-chestxray:images/lateral.jpg" in {r["id"] for r in every_view.records}
    assert "covid-chestxray:images/ct.jpg" in {r["id"] for r in everything.records}
    assert all(r["mask_path"] is None for r in no_masks.records)


def test_covid_unknown_finding_error_or_skip(tmp_path):
    rows = [
        ("1", "Tuberculosis", "PA", "X-ray", "a.jpg"),
        ("2", "COVID-19", "PA", "X-ray", "b.jpg"),
    ]
    root = make_covid(tmp_path / "c", rows)
    with pytest.raises(xl.InputError, match=r"metadata.csv line 2.*Tuberculosis"):
        CovidChestXray(root)
    with pytest.warns(DataWarning, match="left out"):
        ds = CovidChestXray(root, unknown="skip")
    assert len(ds) == 1 and ds.skipped[0]["filename"] == "a.jpg"


def test_covid_bad_layouts(tmp_path):
    with pytest.raises(xl.InputError, match="metadata"):
        CovidChestXray(tmp_path)
    (tmp_path / "metadata.csv").write_text("a,b\n1,2\n")
    with pytest.raises(xl.InputError, match="columns"):
        CovidChestXray(tmp_path)


def make_kermany(root, names, masks=()):
    for rel in names:
        save_image(root / rel)
    for stem in masks:
        save_image(root.parent / "lung-masks" / root.name / f"{stem}.png")
    return root


KERMANY_FILES = [
    "train/NORMAL/IM-0115-0001.jpeg",
    "train/NORMAL/NORMAL2-IM-0115-0002.jpeg",
    "train/NORMAL/IM-0491-0001-0002.jpeg",
    "train/PNEUMONIA/person1_bacteria_1.jpeg",
    "train/PNEUMONIA/person1_virus_6.jpeg",
    "test/PNEUMONIA/person1_bacteria_2.jpeg",
    "test/PNEUMONIA/person22_virus_55.jpeg",
    "test/NORMAL/IM-0001-0001.jpeg",
    "val/NORMAL/NORMAL-1003233-0001.jpeg",
    "val/PNEUMONIA/VIRUS-1014768-0001.jpeg",
]


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("person1_bacteria_1", ("person1", "bacteria")),
        ("person1000_virus_1681", ("person1000", "virus")),
        ("IM-0115-0001", ("IM-0115", "normal")),
        ("IM-0491-0001-0002", ("IM-0491", "normal")),
        ("NORMAL2-IM-0115-0002", ("IM-0115", "normal")),
        ("BACTERIA-1008087-0001", ("1008087", "bacteria")),
        ("NORMAL-1003233-0001", ("1003233", "normal")),
        ("scan", None),
        ("person_bacteria", None),
    ],
)
def test_parse_kermany_name(stem, expected):
    assert parse_kermany_name(stem) == expected


def test_kermany_reader(tmp_path):
    root = make_kermany(tmp_path / "chest_xray", KERMANY_FILES, masks=["IM-0115-0001"])
    ds = Kermany(root, size=24)
    assert len(ds) == len(KERMANY_FILES)
    by_name = {r["path"].split("/")[-1].split(".")[0]: r for r in ds.records}
    assert by_name["person1_bacteria_1"]["patient_id"] == "kermany:person1"
    assert by_name["person1_bacteria_2"]["group"] == by_name["person1_virus_6"]["group"]
    assert by_name["NORMAL2-IM-0115-0002"]["patient_id"] == "kermany:IM-0115"
    assert by_name["person1_bacteria_2"]["folder"] == "test"
    assert set(by_name["person22_virus_55"]["labels"]) == {"Viral Pneumonia", "Pneumonia"}
    assert set(by_name["person1_bacteria_1"]["labels"]) == {"Bacterial Pneumonia", "Pneumonia"}
    assert by_name["IM-0001-0001"]["labels"] == ("No Finding",)
    assert by_name["VIRUS-1014768-0001"]["patient_id"] == "kermany:1014768"
    assert by_name["IM-0115-0001"]["mask_path"].endswith("IM-0115-0001.png")
    assert sum(r["mask_path"] is not None for r in ds.records) == 1
    assert ds[0][0].shape == (1, 24, 24) and ds[0][1].shape == (14,)


def test_kermany_skips_unparsable_and_misfiled_and_works_without_val(tmp_path):
    names = [
        "train/NORMAL/IM-0115-0001.jpeg",
        "train/NORMAL/person3_bacteria_9.jpeg",  # pneumonia in NORMAL
        "test/PNEUMONIA/scan.jpeg",  # no patient id
        "test/PNEUMONIA/person2_virus_4.jpeg",
    ]
    root = make_kermany(tmp_path / "k", names)
    (root / "test" / "PNEUMONIA" / "notes.txt").write_text("x")
    (root / "test" / "PNEUMONIA" / ".DS_Store").write_text("x")
    with pytest.warns(DataWarning, match="3 files were left out"):
        ds = Kermany(root)
    assert len(ds) == 2 and len(ds.skipped) == 3
    with pytest.raises(xl.InputError, match="none of"):
        Kermany(tmp_path / "nowhere")


def test_cache_transform_and_dataloader(tmp_path):
    root = make_kermany(tmp_path / "k", KERMANY_FILES)
    ds = Kermany(root, size=16, cache=True, transform=lambda x: 1.0 - x)
    first = ds[0][0]
    assert len(ds._cache) == 1
    assert torch.equal(ds[0][0], first)  # the transform does not corrupt the cache
    ds.transform = None
    ds[0][0].zero_()  # nor does a caller modifying an item
    torch.testing.assert_close(ds.image(0), 1.0 - first)
    loader = DataLoader(ds, batch_size=4, collate_fn=xl.data.collate)
    images, targets, records = next(iter(loader))
    assert images.shape == (4, 1, 16, 16) and targets.shape == (4, 14) and len(records) == 4


def test_bad_size_is_refused_early(tmp_path):
    root = make_kermany(tmp_path / "k", KERMANY_FILES[:2])
    with pytest.raises(xl.InputError, match="size"):
        Kermany(root, size=0)


def test_combine_and_subset(tmp_path, covid):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        c = CovidChestXray(covid, size=16)
    k = Kermany(make_kermany(tmp_path / "k", KERMANY_FILES), size=16)
    both = combine(c, k)
    assert len(both) == len(c) + len(k) == len(both.records)
    assert torch.equal(both.targets, torch.cat([c.targets, k.targets]))
    assert both[len(c)][2]["source"] == "kermany"
    assert both.label_counts()["Pneumonia"] == int(both.targets[:, 10].sum())
    sub = both.subset([0, len(c)])
    assert [r["source"] for r in sub.records] == ["covid-chestxray", "kermany"]
    assert sub.targets.shape == (2, 14) and sub[1][2]["source"] == "kermany"
    other = Kermany(tmp_path / "k", label_space=LabelSpace(["No Finding", "Pneumonia"]))
    with pytest.raises(xl.InputError, match="label spaces"):
        combine(c, other)
    with pytest.raises(xl.InputError, match="share items"):
        combine(k, k)


# --- the real data -----------------------------------------------------------------------------
README_COUNTS = {
    "Pneumonia/Viral/COVID-19": 196,
    "Pneumonia/Viral/COVID-19, ARDS": 9,
    "ARDS": 4,
    "Pneumonia/Bacterial/Streptococcus": 11,
    "Pneumonia/Bacterial/Klebsiella": 7,
    "Pneumonia/Bacterial/Legionella": 3,
    "Pneumonia/Bacterial/E.Coli": 4,
    "Pneumonia/Bacterial/Mycoplasma": 4,
    "Pneumonia/Bacterial": 2,
    "Pneumonia/Fungal/Pneumocystis": 12,
    "Pneumonia/Viral/Varicella": 4,
    "Pneumonia/Viral/Influenza": 1,
    "Pneumonia/Lipoid": 3,
    "Pneumonia": 10,
    "No Finding": 12,
}


@pytest.fixture(scope="module")
def real(shared_data):
    with pytest.warns(DataWarning, match="4 metadata rows repeat"):
        covid = CovidChestXray(shared_data / "covid-chestxray", size=64)
    kermany = Kermany(shared_data / "chest_xray", size=64)
    return covid, kermany


def test_real_covid_counts_duplicates_and_masks(real):
    covid, _ = real
    assert len(covid) == 282 and not covid.missing and not covid.skipped
    assert collections.Counter(r["finding"] for r in covid.records) == README_COUNTS
    counts = covid.label_counts()
    assert counts["COVID-19"] == 205 and counts["ARDS"] == 13
    assert counts["Viral Pneumonia"] == 210 and counts["Bacterial Pneumonia"] == 31
    assert counts["Fungal Pneumonia"] == 12 and counts["No Finding"] == 12
    assert counts["Pneumonia"] == 266
    assert (covid.targets.sum(1) >= 1).all()  # no all-zero target
    dups = {d["filename"] for d in covid.duplicates}
    assert dups == {"000001-24.jpg", "000006-17.jpg", "000007-15.jpg", "000001-27.jpg"}
    groups = {r["patient_id"]: r["group"] for r in covid.records}
    for d in covid.duplicates:  # the image is yielded once; both patient ids name its group
        (rec,) = [r for r in covid.records if r["id"].endswith("/" + d["filename"])]
        assert rec["patient_aliases"] == (d["kept_patient_id"], d["patient_id"])
        assert rec["group"] == groups[d["kept_patient_id"]]
    assert {groups["covid-chestxray:285"], groups["covid-chestxray:287"]} == {
        "covid-chestxray:285",
        "covid-chestxray:287",
    }
    assert sum(r["mask_path"] is not None for r in covid.records) == 205
    assert len({r["id"] for r in covid.records}) == 282


def test_real_kermany_counts_patients_and_masks(real):
    _, kermany = real
    assert len(kermany) == 960 and not kermany.skipped
    counts = collections.Counter(r["finding"] for r in kermany.records)
    assert counts == {"No Finding": 320, "Pneumonia/Bacterial": 320, "Pneumonia/Viral": 320}
    assert kermany.label_counts()["Pneumonia"] == 640
    folders = collections.defaultdict(set)
    for r in kermany.records:
        folders[r["patient_id"]].add(r["folder"])
    leaking = [p for p, f in folders.items() if len(f) > 1]
    assert len(leaking) >= 51  # the README's upstream leak, found from the file names
    assert sum(r["mask_path"] is not None for r in kermany.records) == 724


def test_real_every_image_loads_with_its_mask(real):
    covid, kermany = real
    both = combine(covid, kermany)
    assert len(both) == 1242
    start = time.perf_counter()
    for i in range(len(both)):
        image, target, record = both[i]
        assert image.shape == (1, 64, 64) and image.min() >= 0 and image.max() <= 1
        assert image.max() > 0, record["id"]
    elapsed = time.perf_counter() - start
    print(f"\n{len(both) / elapsed:.0f} images/s (read + preprocess to 64 px)")
    n_masks = 0
    for ds in (covid, kermany):
        for i, record in enumerate(ds.records):
            if record["mask_path"] is not None:
                mask = ds.mask(i)
                with Image.open(record["path"]) as im:  # header only: (W, H)
                    assert mask.shape == im.size[::-1] and mask.any(), record["id"]
                n_masks += 1
    assert n_masks == 929
