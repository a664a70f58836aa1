"""A self-contained HTML page from a list of sections: inline CSS, no JavaScript, no server.

A section is a dict::

    {"title": str, "text": str (optional), "table": list[dict] (optional),
     "images": list of PNG paths relative to the HTML file (optional),
     "folded": bool (optional: the table and images sit in a closed <details> element)}

Every piece of text (titles, paragraphs, table keys and cells, file names) is escaped.
Floats in tables are shown with 2 decimals, None as "-". A table wider than the page scrolls
sideways inside its own box instead of widening the page.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from urllib.parse import quote

import numpy as np

from tagless.errors import TaglessError

SECTION_KEYS = ("title", "text", "table", "images", "folded")

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
.table-scroll { max-width: 100%; overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: .3em .7em; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #666; }
nav ul { padding-left: 1.2em; }
details > summary { cursor: pointer; color: #555; margin: .5em 0; }
"""


def format_cell(value) -> str:
    """A table cell as text: floats as the printed tables show them, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        from tagless.tables import format_float

        return format_float(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _is_num(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def render_table(rows: list[dict]) -> str:
    """An HTML table of dict rows; the columns are the union of the keys in first-seen order."""
    if not rows:
        return ""
    if not all(isinstance(r, dict) for r in rows):
        raise TaglessError("a section's table must be a list of dicts")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for r in rows:
        cells = "".join(
            ('<td class="num">' if _is_num(r.get(c)) else "<td>") + html.escape(format_cell(r.get(c))) + "</td>"
            for c in columns
        )
        body.append(f"<tr>{cells}</tr>")
    return (f'<div class="table-scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(body)
            + "\n</tbody>\n</table></div>")


def _render_text(text: str) -> str:
    """Paragraphs split on blank lines; single newlines become line breaks."""
    paras = [p.strip() for p in str(text).replace("\r\n", "\n").split("\n\n") if p.strip()]
    return "\n".join("<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>" for p in paras)


def _image_src(path: str, embed: bool, base_dir: Path | None) -> str:
    if not embed:
        return quote(Path(path).as_posix())
    full = Path(path) if Path(path).is_absolute() or base_dir is None else Path(base_dir) / path
    try:
        data = full.read_bytes()
    except OSError as err:
        raise TaglessError(f"cannot embed image {full}: {err.strerror}") from None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _anchor(i: int) -> str:
    return f"s{i}"


def render_html(title: str, sections: list[dict], embed: bool = False, base_dir=None) -> str:
    """The report page as a string.

    Args:
        title: the page title and heading.
        sections: dicts with "title" and optionally "text", "table", "images", "folded" (see
            module doc).
        embed: inline every PNG as a base64 data URI (a single file to mail around) instead
            of referencing it by its relative path.
        base_dir: the folder relative image paths are read from when ``embed`` is True
            (the HTML file's folder).
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(str(title))}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(str(title))}</h1>",
    ]
    for i, s in enumerate(sections):
        if not isinstance(s, dict) or "title" not in s:
            raise TaglessError(f"report section {i} must be a dict with a 'title'")
        unknown = sorted(set(s) - set(SECTION_KEYS))
        if unknown:
            raise TaglessError(f"report section {s['title']!r} has unknown keys {unknown}; "
                               f"allowed: {list(SECTION_KEYS)}")
    if len(sections) > 1:
        links = "".join(f'<li><a href="#{_anchor(i)}">{html.escape(str(s["title"]))}</a></li>'
                        for i, s in enumerate(sections))
        parts.append(f"<nav><ul>{links}</ul></nav>")
    for i, s in enumerate(sections):
        parts.append(f'<section id="{_anchor(i)}">')
        parts.append(f"<h2>{html.escape(str(s['title']))}</h2>")
        if s.get("text"):
            parts.append(_render_text(s["text"]))
        folded = bool(s.get("folded")) and bool(s.get("table") or s.get("images"))
        if folded:
            parts.append("<details><summary>show</summary>")
        if s.get("table"):
            parts.append(render_table(list(s["table"])))
        images = s.get("images") or []
        if isinstance(images, (str, Path)):
            images = [images]
        for img in images:
            name = Path(img).name
            src = html.escape(_image_src(str(img), embed, base_dir), quote=True)
            parts.append(f'<figure><img src="{src}" alt="{html.escape(name, quote=True)}">'
                         f"<figcaption>{html.escape(name)}</figcaption></figure>")
        if folded:
            parts.append("</details>")
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)
