"""Render a :class:`~xraylens.report.document.Document` as one self-contained HTML file.

No network: figures are ``data:`` URIs, the style and the table-sorting script are inline.
Every string is escaped (:func:`html.escape`) before the two inline markups (``**bold**``,
```code```) are turned into tags, so file names and labels from the data stay text.
"""

from __future__ import annotations

import base64
import html
import math
import re

from xraylens.report.document import Bullets, Document, Grid, Image, Paragraph, Table

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+?)`")

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b1f24;
background:#fafafa}
header{background:#16324f;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:21px}
nav{padding:6px 28px;background:#e8eef4;font-size:13px;position:sticky;top:0;z-index:2}
nav a{margin-right:14px;color:#16324f;text-decoration:none;white-space:nowrap}
main{padding:4px 28px 40px;max-width:1400px}
section{margin-top:18px}
h2{font-size:18px;border-bottom:1px solid #cfd8e3;padding-bottom:3px}
section.flag h2{color:#9b1c1c;border-color:#e6a0a0}
ul.summary{background:#fff;border:1px solid #cfd8e3;border-radius:6px;padding:10px 10px 10px 30px}
table{border-collapse:collapse;margin:8px 0;background:#fff;font-size:13px}
th,td{border:1px solid #d5dce4;padding:3px 8px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#eef2f6;position:relative}
th.sortable{cursor:pointer;user-select:none}
th.sortable::after{content:" \\2195";color:#8a99a8;font-size:11px}
th.asc::after{content:" \\25B2";color:#16324f}
th.desc::after{content:" \\25BC";color:#16324f}
caption{caption-side:bottom;text-align:left;font-size:12px;color:#56606b;padding-top:3px}
figure{margin:10px 0}
figure img{max-width:100%;height:auto;border:1px solid #d5dce4;background:#fff}
figcaption{font-size:12px;color:#56606b}
table.grid td{text-align:center;font-size:12px}
table.grid tbody th{max-width:220px;font-size:12px;overflow-wrap:anywhere}
table.grid img{display:block;margin:0 auto 2px;image-rendering:pixelated;width:128px;height:128px}
td.flagged,span.flagged{background:#fde2e2;color:#8a1414;font-weight:600}
details{margin:8px 0}
summary{cursor:pointer;color:#16324f}
code{background:#eef2f6;padding:0 3px;border-radius:3px;font-size:90%}
"""

# Sort a table by the clicked column: numbers by value (data-v), text by locale; click again to
# reverse. No external script, no network.
JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.classList.add('sortable');
    th.addEventListener('click',function(){
      var body=t.tBodies[0], rows=Array.prototype.slice.call(body.rows);
      var asc=!th.classList.contains('asc');
      t.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc?'asc':'desc');
      function key(r){var c=r.cells[i];var v=c.getAttribute('data-v');
        return v===null?c.textContent:parseFloat(v);}
      rows.sort(function(a,b){var x=key(a),y=key(b);
        if(typeof x==='number'&&typeof y==='number'){
          if(isNaN(x))return 1; if(isNaN(y))return -1; return asc?x-y:y-x;}
        return asc?String(x).localeCompare(String(y)):String(y).localeCompare(String(x));});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def inline(text: str) -> str:
    """Escape ``text``, then turn ``**bold**`` and ```code``` into tags."""
    out = html.escape(str(text), quote=True)
    out = _CODE.sub(r"<code>\1</code>", out)
    return _BOLD.sub(r"<strong>\1</strong>", out)


def _uri(img: Image) -> str:
    return "data:image/png;base64," + base64.b64encode(img.png).decode("ascii")


def _img(img: Image, alt: str) -> str:
    width = f' width="{int(img.width)}"' if img.width else ""
    return f'<img src="{_uri(img)}" alt="{html.escape(alt, quote=True)}"{width}>'


def _td(t: Table, value, column: int) -> str:
    text = inline(t.cell(value, column))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = "NaN" if isinstance(value, float) and math.isnan(value) else repr(float(value))
        return f'<td class="num" data-v="{v}">{text}</td>'
    if isinstance(value, str) and value.startswith("⚠"):
        return f'<td class="flagged">{text}</td>'
    return f"<td>{text}</td>"


def _table(t: Table) -> str:
    cls = ' class="sortable"' if t.sortable else ""
    head = "".join(f"<th>{inline(c)}</th>" for c in t.columns)
    body = "".join(
        "<tr>" + "".join(_td(t, v, j) for j, v in enumerate(row)) + "</tr>" for row in t.rows
    )
    cap = f"<caption>{inline(t.caption)}</caption>" if t.caption and not t.collapsed else ""
    table = f"<table{cls}>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if t.collapsed:
        label = inline(t.caption or "details")
        return f"<details><summary>{label} ({len(t.rows)} rows)</summary>{table}</details>"
    return table


def _grid(g: Grid) -> str:
    head = "<th></th>" + "".join(f"<th>{inline(c)}</th>" for c in g.columns)
    rows = []
    for header, panels in g.rows:
        cells = [f"<th>{inline(header)}</th>"]
        for p in panels:
            img = _img(p.image, f"{header}: {p.lines[0] if p.lines else ''}") if p.image else ""
            text = "<br>".join(inline(line) for line in p.lines)
            cells.append(f"<td>{img}{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{inline(g.caption)}</caption>" if g.caption else ""
    body = "".join(rows)
    return f'<table class="grid">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _block(b) -> str:
    if isinstance(b, Paragraph):
        return f"<p>{inline(b.text)}</p>"
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{inline(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Image):
        cap = f"<figcaption>{inline(b.caption)}</figcaption>" if b.caption else ""
        return f"<figure>{_img(b, b.caption or b.name)}{cap}</figure>"
    if isinstance(b, Grid):
        return _grid(b)
    raise TypeError(f"not a report block: {type(b).__name__}")


def render_html(doc: Document) -> str:
    """The whole page as one string (UTF-8 when written)."""
    nav = "".join(
        f'<a href="#s{i}">{inline(s.title)}</a>' for i, s in enumerate(doc.sections, start=1)
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # Nothing may load from outside the file (images are data: URIs, script and style inline).
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        f"<title>{inline(doc.title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{inline(doc.title)}</h1></header><nav>{nav}</nav><main>",
    ]
    if doc.summary:
        items = "".join(f"<li>{inline(s)}</li>" for s in doc.summary)
        parts.append(f'<ul class="summary">{items}</ul>')
    for i, s in enumerate(doc.sections, start=1):
        cls = ' class="flag"' if s.flag else ""
        parts.append(f'<section id="s{i}"{cls}><h2>{inline(s.title)}</h2>')
        parts += [_block(b) for b in s.blocks]
        parts.append("</section>")
    parts.append(f"</main><script>{JS}</script></body></html>")
    return "\n".join(parts)
