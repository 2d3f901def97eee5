"""The per-token page: content checks without a browser, and a headless Chromium run (skipped without it)."""

import json
import re
from pathlib import Path

import pytest

from jaxalign.report.html import render_page
from jaxalign.report.screenshot import find_chromium, page_errors, screenshot

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (apt-get install -y chromium)")


def _nodes(page: str) -> list[dict]:
    return json.loads(re.search(r'<script type="application/json" id="nodes">(.*?)</script>', page, re.S).group(1))


def test_page_is_self_contained_and_colours_decision_tokens(exact_run):
    page = (exact_run / "report" / "html" / "exact-0__tilt.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page) and "@import" not in page and "url(" not in page
    nodes = _nodes(page)
    assert len(nodes) == page.count('class="t d"') + page.count('class="t d u"') > 0
    for node in nodes:
        assert node["children"] and all(c["lo"] <= c["s"] <= c["hi"] for c in node["children"])
        assert sum(c["chosen"] for c in node["children"]) <= 1 and "gkd (renormalized)" in node["cos"]
    assert page.count("rgba(33,102,172") > page.count("rgba(178,24,43")  # tilt is aligned: mostly blue


def test_token_text_cannot_break_the_page():
    data = {"has_pq": False, "paths": [{"index": 0, "correct": True, "decision": 1, "mean": 0.5, "tokens": [
        {"text": "</script><b>"}, {"text": " ", "n": 0, "main": 0.5}]}],
        "nodes": [{"path": 0, "depth": 1, "tok": "</script>", "su": 2, "sr": 0.5, "adv": 0.1, "kl": 0.1, "js": 0.1,
                   "l2": 0.1, "cpq": 0.9, "cos": {"gkd": 0.5}, "children": [], "others": 0}]}
    page = render_page(data, title="<t>", subtitle="s", token_note="n", ids=False)
    assert "</script><b>" not in page and "&lt;/script&gt;&lt;b&gt;" in page and "\\u003c/script>" in page
    assert ">␣</span>" in page  # a whitespace-only decision token stays visible


@needs_chromium
def test_page_runs_in_headless_chromium_without_errors(exact_run, tmp_path):
    page = exact_run / "report" / "html" / "exact-0__noise.html"
    errors, dom = page_errors(page)
    assert errors == []
    assert re.search(r'data-selftest="(\d+)"', dom).group(1) == str(len(_nodes(page.read_text())))
    shot = screenshot(page, tmp_path / "page.png", size=(900, 600), fragment="#node-0")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    broken = tmp_path / "broken.html"
    broken.write_text(page.read_text().replace("var nodes = JSON.parse", "var nodes = JSON.parse(undefinedThing) ||"))
    errors, _ = page_errors(broken)
    assert errors and any("undefinedThing" in e for e in errors)


def test_the_tokenizer_is_found_where_the_run_found_the_student(tmp_path):
    """A hub id resolved through model_root (a stand-in, say): run.json's model record names the
    directory, so the page shows text; without the record it can only show ids."""
    import shutil

    from jaxalign.report.html import token_decoder

    directory = tmp_path / "root" / "Qwen" / "Qwen3-0.6B"
    shutil.copytree(Path(__file__).resolve().parents[2] / "jaxalign" / "assets" / "toy" / "student", directory)
    config = {"student": {"path": "Qwen/Qwen3-0.6B", "name": "qwen3-0.6b", "kind": "flax"}}
    decode, note = token_decoder(config, [{"id": "Qwen/Qwen3-0.6B", "directory": str(directory)}])
    assert note == "text from the tokenizer of qwen3-0.6b"
    assert not decode([5, 6])[0].startswith("⟨")
    _, without = token_decoder(config, [])
    assert without.startswith("token ids")
