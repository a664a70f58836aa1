"""The HTML page: escaped text, formatted tables, relative or embedded images."""

import base64
import re

import numpy as np
import pytest

from tagless.errors import TaglessError
from tagless.report import render_html, render_table


def test_table_values_and_formatting():
    rows = [{"method": "moco", "top1": 83.456, "k": 20, "note": None},
            {"method": "simsiam", "top1": np.float32(71.0), "k": np.int64(200), "extra": True}]
    page = render_html("t", [{"title": "Results", "table": rows}])
    for cell in ("<th>method</th>", "<th>extra</th>", ">moco<", ">83.46<", ">71.00<", ">20<", ">200<", ">-<", ">True<"):
        assert cell in page, cell
    assert "83.456" not in page
    assert render_table([]) == ""
    with pytest.raises(TaglessError, match="list of dicts"):
        render_table([1, 2])


def test_everything_is_escaped():
    evil = "<script>alert('x')</script>"
    page = render_html(f"title {evil}", [{"title": evil, "text": f"a & b\n{evil}\n\nsecond paragraph",
                                           "table": [{evil: evil}]}])
    assert "<script>" not in page and "<script" not in page
    assert page.count("&lt;script&gt;") == 6  # <title>, <h1>, <h2>, text, table header, table cell
    assert "a &amp; b<br>" in page
    assert "<p>second paragraph</p>" in page


def test_images_relative_and_embedded(tmp_path):
    png = tmp_path / "report" / "my plot.png"
    png.parent.mkdir()
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    sections = [{"title": "A", "images": ["report/my plot.png"]}, {"title": "B", "text": "only text"}]
    page = render_html("r", sections)
    assert 'src="report/my%20plot.png"' in page
    assert 'href="#s1"' in page  # a table of contents for several sections
    embedded = render_html("r", sections, embed=True, base_dir=tmp_path)
    src = re.search(r'src="data:image/png;base64,([^"]+)"', embedded).group(1)
    assert base64.b64decode(src) == png.read_bytes()
    with pytest.raises(TaglessError, match="cannot embed"):
        render_html("r", [{"title": "A", "images": ["missing.png"]}], embed=True, base_dir=tmp_path)


def test_bad_sections():
    with pytest.raises(TaglessError, match="unknown keys"):
        render_html("r", [{"title": "A", "image": ["x.png"]}])
    with pytest.raises(TaglessError, match="title"):
        render_html("r", [{"text": "no title"}])


def test_page_is_self_contained():
    page = render_html("r", [{"title": "A", "text": "x"}])
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_folded_sections_and_scrolling_tables():
    """"folded": the text stays visible, the table and images sit in a closed <details>; every
    table is wrapped in a box that scrolls sideways instead of widening the page."""
    wide = [{f"column {i}": i for i in range(40)}]
    page = render_html("r", [{"title": "Open", "table": wide},
                             {"title": "Solver", "text": "visible", "table": [{"a": 1}], "folded": True},
                             {"title": "Text only", "text": "nothing to fold", "folded": True}])
    open_part, solver, text_only = page.split("<h2>")[1:]
    assert "<details>" not in open_part and '<div class="table-scroll"><table>' in open_part
    assert solver.index("<p>visible</p>") < solver.index("<details><summary>") < solver.index("<table>")
    assert "</details>" in solver and "<details>" not in text_only
    assert ".table-scroll { max-width: 100%; overflow-x: auto;" in page
