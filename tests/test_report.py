"""The report package: one document, rendered to Markdown and to one self-contained HTML file."""

from __future__ import annotations

import base64
import html.parser
import io
import re

import numpy as np
import pytest
from PIL import Image as PILImage
from report_sample import HOSTILE, document

from xraylens.report import Document, Paragraph, Table, render_html, render_markdown, write_report
from xraylens.report.figures import overlay_image
from xraylens.report.markdown import _table


class _Collect(html.parser.HTMLParser):
    """Tags, attributes and script bodies of a page."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


@pytest.fixture(scope="module")
def sample():
    return document()


def test_html_escapes_every_string_from_the_data(sample):
    doc, _, _ = sample
    page = render_html(doc)
    parser = _Collect()
    parser.feed(page)
    assert [t for t, _ in parser.tags].count("script") == 1  # only the page's own sorter
    assert "alert" not in "".join(parser.scripts)
    assert HOSTILE not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    # the hostile file name in alt texts stays attribute text: no tag or attribute breaks out
    allowed = {
        "img": {"src", "alt", "width"},
        "td": {"class", "data-v"},
        "section": {"id", "class"},
    }
    for tag, attrs in parser.tags:
        assert set(attrs) <= allowed.get(tag, {"class", "id", "href", "lang", "charset", "name",
                                               "content", "http-equiv"}), (tag, attrs)  # fmt: skip
    assert {t for t, _ in parser.tags} <= {
        "html", "head", "meta", "title", "style", "body", "header", "h1", "nav", "a", "main",
        "ul", "li", "section", "h2", "p", "code", "strong", "table", "caption", "thead", "tr",
        "th", "tbody", "td", "img", "br", "figure", "figcaption", "details", "summary", "script",
    }  # fmt: skip


def test_html_is_self_contained(sample):
    doc, _, _ = sample
    page = render_html(doc)
    parser = _Collect()
    parser.feed(page)
    refs = [v for _, a in parser.tags for k, v in a.items() if k in ("src", "href") and v]
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs)
    assert not re.search(r"https?://", page.split("<script>")[0].split("<main>")[1])
    images = [a["src"] for t, a in parser.tags if t == "img"]
    assert len(images) == len(doc.images())
    for src in images:  # every image decodes
        png = PILImage.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert png.size[0] > 0 and png.format == "PNG"


def test_tables_are_sortable_and_numbers_carry_their_value(sample):
    doc, summary, _ = sample
    page = render_html(doc)
    assert page.count('<table class="sortable">') >= 3
    share = next(r["share"] for r in summary if r["region"] == "markers" and r["n"])
    assert f'data-v="{float(share)!r}"' in page  # sorting uses the exact value, not the text


def test_flags_are_highlighted(sample):
    doc, _, flags = sample
    page = render_html(doc)
    assert flags and page.count('class="flagged"') >= len(flags)
    assert '<section id="s2" class="flag">' in page  # the audit section is marked


def test_markdown_writes_its_figures_beside(sample, tmp_path):
    doc, _, _ = sample
    written = write_report(doc, tmp_path)
    text = written["md"].read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == len(doc.images())
    assert len(set(links)) == len({id(i) for i in doc.images()})  # one file per image object
    for link in links:
        assert (tmp_path / link).stat().st_size > 0 and ".." not in link and "<" not in link
    assert "| shortcut | saliency |" in text
    assert written["html"].read_text().startswith("<!DOCTYPE html>")


def test_table_cells_and_pipes():
    t = Table(["a|b", "x", "y"], [["c|d", 1.23456, float("nan")]], digits=(0, 2, 1))
    md = "\n".join(_table(t))
    assert render_markdown(Document("t", [])).startswith("# t")
    assert "| a\\|b | x | y |" in md and "| c\\|d | 1.23 | n/a |" in md
    with pytest.raises(ValueError, match="cells"):
        Table(["a"], [[1, 2]])


def test_inline_markup_only_after_escaping():
    doc = Document("t")
    doc.section("s", Paragraph("**<b>x</b>** and `<i>`"))
    page = render_html(doc)
    assert "<strong>&lt;b&gt;x&lt;/b&gt;</strong> and <code>&lt;i&gt;</code>" in page


def test_overlay_matches_the_viz_scaling():
    """The panel overlay is the X-ray where the map is 0 and the colormap's top colour where
    the scaled map is 1 (alpha 1), as viz.draw_overlay draws it."""
    from matplotlib import colormaps

    img = np.full((8, 8), 0.5)
    img[0, 0] = 0.0
    img[-1, -1] = 1.0
    attr = np.zeros((8, 8))
    attr[2, 3] = 5.0
    png = overlay_image(img, attr, "x", size=8, alpha=1.0)
    rgb = np.asarray(PILImage.open(io.BytesIO(png.png)).convert("RGB")).astype(int)
    top = (np.array(colormaps["inferno"](1.0)[:3]) * 255).astype(int)
    assert np.abs(rgb[2, 3] - top).max() <= 1
    assert abs(rgb[4, 4, 0] - 127) <= 1 and rgb[0, 0].max() == 0  # grey where the map is 0


def test_write_report_rejects_unknown_formats(tmp_path):
    import xraylens as xl

    with pytest.raises(xl.InputError, match="formats"):
        write_report(Document("t"), tmp_path, formats=("pdf",))
