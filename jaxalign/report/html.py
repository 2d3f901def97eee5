"""The per-token view: one self-contained HTML page per (question, teacher), plus an index.

Each representative path is printed token by token. A token emitted at a decision node is coloured
by the teacher's cosine there (the main algorithm, default convention: blue aligned, red opposed);
other tokens are plain. Hovering (or focusing) a coloured token shows the children in S_u with
P_theta, P_te, P̂_succ and its 95% Wilson interval, visits, and every algorithm's cosine.

Pages use no network: inline CSS and JS, system fonts. Node data sits in a JSON script block; the
first script installs an error hook that writes any JS error into ``#js-errors`` and counts it in
``body[data-js-errors]``, so a headless browser's DOM dump shows it. ``#selftest`` in the URL
renders every node's tooltip once; ``#node-I`` opens node I's tooltip (for screenshots).
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from jaxalign.files import write_text
from jaxalign.report.load import DEFAULT_CONVENTION, Rows, Run, safe_name
from jaxalign.report.stats import wilson_interval
from jaxalign.report.tables import MAIN_ALGORITHM, REFERENCE, TEACHER_FREE

log = logging.getLogger(__name__)
Decoder = Callable[[list[int]], list[str]]


# ----------------------------------------------------------------------------------------- tokens
def token_decoder(config: dict, models: Sequence[dict] = ()) -> tuple[Decoder, str]:
    """A per-token decoder for the run's student, and a note on what it shows.

    ``models``: run.json's model records; the student's ``directory`` there is where the run found it
    (``model_root`` included), and is tried first. ExactPolicy has no text: ids are shown. A
    tokenizer that cannot be loaded (a hub model not in the local cache, a moved directory) also
    falls back to ids; the page says why.
    """
    student = config.get("student", {})
    if student.get("kind") == "exact" or not student.get("path"):
        return _ids, "token ids (ExactPolicy has no text)"
    directory = next((m.get("directory") for m in models if m.get("id") == student["path"]), None)
    try:
        tokenizer = _load_tokenizer(student["path"], directory)
    except Exception as err:  # a report must not fail on a missing tokenizer: show ids instead
        log.warning("token ids shown instead of text: %s", err)
        return _ids, f"token ids (the student's tokenizer could not be loaded: {err})"
    cache: dict[int, str] = {}

    def decode(ids: list[int]) -> list[str]:
        for i in set(ids) - cache.keys():
            try:
                cache[i] = tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            except Exception:  # an id outside the vocabulary: show it as an id
                cache[i] = f"⟨{i}⟩"
        return [cache[i] for i in ids]

    return decode, f"text from the tokenizer of {student.get('name', student['path'])}"


def _ids(ids: list[int]) -> list[str]:
    return [f"⟨{i}⟩" for i in ids]


def _load_tokenizer(path: str, directory: Optional[str] = None):
    from jaxalign.config import resolve_model_path
    from jaxalign.models import load_tokenizer

    if directory and Path(directory).is_dir():
        return load_tokenizer(directory)
    local = Path(resolve_model_path(path))
    if not local.is_dir():
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(path, local_files_only=True, allow_patterns=["*.json", "*.jinja", "*.txt"]))
    return load_tokenizer(local)


def _visible(text: str) -> str:
    """A decision token that is only whitespace gets visible marks (␣, ↵, ⇥); an empty one is ∅."""
    if text == "":
        return "∅"
    if text.strip():
        return text
    return text.replace(" ", "␣").replace("\t", "⇥").replace("\n", "↵\n")


# ----------------------------------------------------------------------------------------- data
def _num(x, digits: int = 4):
    x = float(x)
    return None if not np.isfinite(x) else float(f"{x:.{digits}g}")


def _color(cosine: float) -> str:
    rgb = (33, 102, 172) if cosine >= 0 else (178, 24, 43)
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{0.12 + 0.6 * min(abs(cosine), 1.0):.2f})"


def _children_from_tree(tree: dict, nodes: np.ndarray, n_sig: int) -> dict[int, list[dict]]:
    """S_u children per node from the tree's counts (P_theta and P_te were not stored)."""
    from jaxalign.tree import RolloutTree

    table = RolloutTree.from_pytree(tree).node_table(nodes, n_sig)
    out = {}
    for i, node in enumerate(table.nodes):
        ks = np.flatnonzero(table.seen[i])
        out[int(node)] = [{"id": int(table.tokens[i, k]), "p": None, "q": None, "n": int(table.visits[i, k]),
                           "k": int(table.successes[i, k]), "in_s": bool(table.in_s[i, k])} for k in ks]
    return out


def _children_from_rows(children: Rows, teacher: str) -> dict[int, list[dict]]:
    """S_u candidates per node from one question's children rows (P_theta, P_te included)."""
    sel = children.where(children.is_("teacher", teacher))
    out: dict[int, list[dict]] = {}
    seen = set()
    for i in np.lexsort((sel["token"], sel["node"])):
        key = (int(sel["node"][i]), int(sel["token"][i]))
        if key in seen:  # one row per path through the node: the same numbers
            continue
        seen.add(key)
        out.setdefault(key[0], []).append({"id": key[1], "p": _num(sel["p"][i]), "q": _num(sel["q"][i]),
                                           "n": int(sel["visits"][i]), "k": int(sel["successes"][i]),
                                           "in_s": bool(sel["in_s"][i])})
    return out


def by_question(rows: Rows) -> dict[str, np.ndarray]:
    """Row indices of each question, by qid: one sort instead of a scan of all rows per page."""
    order = np.argsort(rows["qid"], kind="stable")
    bounds = np.searchsorted(rows["qid"][order], np.arange(len(rows.labels["qid"]) + 1))
    return {qid: order[bounds[i]:bounds[i + 1]] for i, qid in enumerate(rows.labels["qid"])}


def page_data(tree: dict, rows: Rows, children: Optional[Rows], teacher: str, decode: Decoder, n_sig: int) -> dict:
    """Everything one page shows, as JSON-ready lists.

    tree: the question's tree arrays; rows: its prepared rows; children: its children rows, or None
    when the run wrote none (then counts come from the tree and P_theta, P_te are unknown).
    """
    mine = rows.where(rows.is_("teacher", teacher) | rows.is_("teacher", REFERENCE))
    decision = sorted({int(n) for n in mine["node"]})
    if children is not None:
        kids_of = _children_from_rows(children, teacher)
    else:
        kids_of = _children_from_tree(tree, np.asarray(decision, np.int64), n_sig) if decision else {}
    several = len(rows.labels["convention"]) > 1
    by_position: dict[tuple[int, int], dict] = {}
    for i in range(len(mine)):
        key = (int(mine["path"][i]), int(mine["depth"][i]))
        entry = by_position.setdefault(key, {"cos": {}})
        algorithm = rows.labels["algorithm"][mine["algorithm"][i]]
        convention = rows.labels["convention"][mine["convention"][i]]
        name = algorithm + (f" ({convention})" if several else "") + (" (reward)" if algorithm in TEACHER_FREE else "")
        entry["cos"][name] = _num(mine["cosine"][i]) if mine["valid"][i] else None
        if algorithm == MAIN_ALGORITHM and convention == DEFAULT_CONVENTION:
            entry["main"] = _num(mine["cosine"][i]) if mine["valid"][i] else None
        if not mine.is_("teacher", REFERENCE)[i]:
            entry.update(node=int(mine["node"][i]), su=int(mine["s_u_size"][i]), sr=_num(mine["sr_range"][i]),
                         adv=_num(mine["advantage"][i]), kl=_num(mine["kl"][i]), js=_num(mine["js"][i]),
                         l2=_num(mine["l2"][i]), cpq=_num(mine["cos_pq"][i]))
    paths, nodes = [], []
    for p in range(len(tree["path_length"])):
        length = int(tree["path_length"][p])
        ids = [int(t) for t in tree["path_tokens"][p, :length]]
        texts = decode(ids)
        tokens = []
        for d, (token, text) in enumerate(zip(ids, texts)):
            entry = by_position.get((p, d))
            if entry is None or "node" not in entry:
                tokens.append({"text": text})
                continue
            kids = kids_of.get(entry["node"], [])
            lows, highs = wilson_interval(np.array([c["k"] for c in kids]), np.array([c["n"] for c in kids]))
            shown = [{**c, "t": decode([c["id"]])[0], "s": _num(c["k"] / c["n"]) if c["n"] else None,
                      "lo": _num(lo), "hi": _num(hi), "chosen": c["id"] == token}
                     for c, lo, hi in zip(kids, lows, highs) if c["in_s"]]
            shown.sort(key=lambda c: -(c["s"] or 0))
            nodes.append({**entry, "path": p, "depth": d, "tok": text, "children": shown,
                          "others": len(kids) - len(shown)})
            tokens.append({"text": text, "n": len(nodes) - 1, "main": entry.get("main")})
        valid = [t["main"] for t in tokens if t.get("main") is not None]
        paths.append({"index": p, "correct": bool(tree["path_correct"][p]), "tokens": tokens,
                      "decision": sum("n" in t for t in tokens),
                      "mean": float(np.mean(valid)) if valid else None})
    return {"paths": paths, "nodes": nodes, "has_pq": children is not None}


# ----------------------------------------------------------------------------------------- page
STYLE = """
:root { --fg:#1f2328; --muted:#656d76; --line:#d0d7de; --bg:#ffffff; --panel:#f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 64px; font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 14px; margin: 0 0 8px; font-weight: 600; }
.meta { color: var(--muted); margin: 0 0 12px; }
.legend { display: flex; gap: 18px; align-items: center; flex-wrap: wrap; color: var(--muted); font-size: 12px;
          margin-bottom: 20px; }
.scale { width: 160px; height: 10px; border-radius: 2px; display: inline-block; vertical-align: middle;
         background: linear-gradient(90deg, rgba(178,24,43,.72), rgba(178,24,43,.12) 49%, #fff 50%,
                                     rgba(33,102,172,.12) 51%, rgba(33,102,172,.72)); border: 1px solid var(--line); }
section.path { border: 1px solid var(--line); border-radius: 6px; padding: 12px 16px; margin-bottom: 16px; }
section.path.correct h2 .tag { color: #1b7837; }
section.path.incorrect h2 .tag { color: #b2182b; }
.tokens { font: 13px/1.9 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre-wrap;
          word-break: break-word; }
.t.d { border-radius: 3px; padding: 1px 0; cursor: help; outline: none; }
.t.d:hover, .t.d:focus, .t.d.on { box-shadow: 0 0 0 2px #24292f; }
.t.u { background: repeating-linear-gradient(45deg, #eee, #eee 3px, #fff 3px, #fff 6px); }
.ids .t { margin-right: 3px; }
#tip { position: absolute; z-index: 10; max-width: 560px; background: #fff; border: 1px solid var(--line);
       border-radius: 6px; box-shadow: 0 6px 24px rgba(0,0,0,.16); padding: 10px 12px; font-size: 12px; }
#tip table { border-collapse: collapse; margin: 6px 0; }
#tip th, #tip td { padding: 2px 8px; text-align: right; border-bottom: 1px solid #eee; white-space: nowrap; }
#tip th:first-child, #tip td:first-child { text-align: left; font-family: ui-monospace, Menlo, Consolas, monospace; }
#tip tr.chosen td { font-weight: 600; background: #fff8c5; }
#tip .k { color: var(--muted); }
#js-errors { color: #b2182b; white-space: pre-wrap; }
.note { color: var(--muted); font-size: 12px; }
"""

ERROR_HOOK = """
window.__errors = [];
window.addEventListener('error', function (e) {
  var box = document.getElementById('js-errors'), msg = (e && e.message) || String(e);
  window.__errors.push(msg);
  document.body.setAttribute('data-js-errors', String(window.__errors.length));
  if (box) { box.hidden = false; box.textContent += msg + '\\n'; }
});
"""

SCRIPT = """
(function () {
  var nodes = JSON.parse(document.getElementById('nodes').textContent);
  var hasPQ = document.body.getAttribute('data-has-pq') === '1';
  var tip = document.getElementById('tip'), pinned = null;
  function f(x, d) { return (x === null || x === undefined) ? '\\u2013' : Number(x).toFixed(d); }
  function sgn(x, d) { return (x === null || x === undefined) ? 'undefined' : (x >= 0 ? '+' : '') + Number(x).toFixed(d); }
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) {
    return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]; }); }
  function render(n) {
    var h = '<div><b>path ' + n.path + ', depth ' + n.depth + '</b> \\u00b7 token <code>' + esc(n.tok) +
      '</code> \\u00b7 |S_u| = ' + n.su + ' \\u00b7 SR range ' + f(n.sr, 3) + ' \\u00b7 teacher advantage ' +
      sgn(n.adv, 3) + '</div>';
    h += '<table><tr><th>child in S_u</th><th>P_\\u03b8</th><th>P_te</th><th>P\\u0302_succ [95% Wilson]</th>' +
      '<th>visits</th></tr>';
    n.children.forEach(function (c) {
      h += '<tr' + (c.chosen ? ' class="chosen"' : '') + '><td>' + esc(c.t) + '</td><td>' + f(c.p, 3) +
        '</td><td>' + f(c.q, 3) + '</td><td>' + f(c.s, 3) + ' [' + f(c.lo, 3) + ', ' + f(c.hi, 3) + ']</td><td>' +
        c.n + '</td></tr>';
    });
    h += '</table>';
    if (n.others) { h += '<div class="k">+ ' + n.others + (n.others === 1 ? ' child' : ' children') +
      ' below N_sig visits (not in S_u)</div>'; }
    if (!hasPQ) { h += '<div class="k">P_\\u03b8 and P_te were not stored by this run (no children file).</div>'; }
    var names = Object.keys(n.cos).sort();
    h += '<div>' + names.map(function (k) { return '<span class="k">' + esc(k) + '</span> ' + sgn(n.cos[k], 3); })
      .join(' \\u00b7 ') + '</div>';
    h += '<div class="k">KL ' + f(n.kl, 4) + ' \\u00b7 JS ' + f(n.js, 4) + ' \\u00b7 L2 ' + f(n.l2, 3) +
      ' \\u00b7 cos(p, q) ' + f(n.cpq, 3) + '</div>';
    return h;
  }
  function show(el) {
    var n = nodes[Number(el.getAttribute('data-n'))];
    tip.innerHTML = render(n);
    tip.hidden = false;
    var r = el.getBoundingClientRect(), w = Math.min(560, document.documentElement.clientWidth - 16);
    var left = Math.max(8, Math.min(r.left + window.scrollX, window.scrollX + document.documentElement.clientWidth - w - 8));
    tip.style.left = left + 'px';
    tip.style.top = (r.bottom + window.scrollY + 6) + 'px';
  }
  function hide() { if (!pinned) { tip.hidden = true; } }
  document.addEventListener('mouseover', function (e) {
    var el = e.target.closest && e.target.closest('.t.d'); if (el) { show(el); } });
  document.addEventListener('mouseout', function (e) {
    if (e.target.closest && e.target.closest('.t.d')) { hide(); } });
  document.addEventListener('focusin', function (e) {
    if (e.target.classList && e.target.classList.contains('d')) { show(e.target); } });
  document.addEventListener('focusout', hide);
  document.addEventListener('click', function (e) {
    var el = e.target.closest && e.target.closest('.t.d');
    if (pinned) { pinned.classList.remove('on'); }
    pinned = el || null;
    if (el) { el.classList.add('on'); show(el); } else { tip.hidden = true; }
  });
  var all = document.querySelectorAll('.t.d');
  if (location.hash === '#selftest') {
    all.forEach(function (el) { show(el); });
    document.body.setAttribute('data-selftest', String(all.length));
  } else if (location.hash.indexOf('#node-') === 0) {
    var el = document.querySelector('.t.d[data-n="' + location.hash.slice(6) + '"]');
    if (el) { pinned = el; el.classList.add('on'); show(el); }
  }
  document.body.setAttribute('data-ready', '1');
})();
"""


def _token_html(token: dict, ids: bool) -> str:
    if "n" not in token:
        return f'<span class="t">{html.escape(token["text"])}</span>' if ids else html.escape(token["text"])
    main = token.get("main")
    style = f' style="background:{_color(main)}"' if main is not None else ""
    cls = "t d" if main is not None else "t d u"
    return (f'<span class="{cls}" data-n="{token["n"]}" tabindex="0"{style}>'
            f'{html.escape(_visible(token["text"]))}</span>')


def render_page(data: dict, *, title: str, subtitle: str, token_note: str, ids: bool) -> str:
    """The page's HTML text; ``data`` is :func:`page_data`'s output."""
    sections = []
    for path in data["paths"]:
        outcome = "correct" if path["correct"] else "incorrect"
        mean = "–" if path["mean"] is None else f"{path['mean']:+.3f}"
        tokens = "".join(_token_html(t, ids) for t in path["tokens"])
        sections.append(
            f'<section class="path {outcome}"><h2>path {path["index"]} · <span class="tag">{outcome}</span> · '
            f'{len(path["tokens"])} tokens · {path["decision"]} decision nodes · mean cosine {mean}</h2>'
            f'<div class="tokens{" ids" if ids else ""}">{tokens}</div></section>')
    payload = json.dumps(data["nodes"], ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{STYLE}</style><script>{ERROR_HOOK}</script></head>
<body data-ready="0" data-js-errors="0" data-has-pq="{1 if data["has_pq"] else 0}">
<h1>{html.escape(title)}</h1>
<p class="meta">{html.escape(subtitle)}</p>
<div class="legend"><span>cosine ({MAIN_ALGORITHM}, {DEFAULT_CONVENTION}) −1 <span class="scale"></span> +1</span>
<span>plain: not a decision node</span><span><span class="t u">&nbsp;hatched&nbsp;</span>: cosine undefined</span>
<span>hover, focus or click a coloured token</span></div>
<p class="note">Tokens: {html.escape(token_note)}.</p>
{"".join(sections) if sections else '<p class="note">No paths.</p>'}
<div id="tip" role="tooltip" hidden></div>
<pre id="js-errors" hidden></pre>
<script type="application/json" id="nodes">{payload}</script>
<script>{SCRIPT}</script>
</body></html>
"""


def page_name(qid: str, teacher: str) -> str:
    return f"{safe_name(qid)}__{safe_name(teacher)}.html"


def write_pages(run: Run, rows: Rows, out_dir: Path, decoder: Optional[tuple[Decoder, str]] = None) -> list[dict]:
    """Writes a page per (question with a tree, teacher) and html/index.html. Returns the index entries."""
    decode, note = decoder or token_decoder(run.config, run.models)
    ids = decode is _ids or note.startswith("token ids")
    teachers = [t for t in rows.labels["teacher"] if t != REFERENCE] or list(run.config.get("teachers", {}))
    row_index = by_question(rows) if len(rows) else {}
    child_index = by_question(run.children) if run.children is not None and len(run.children) else {}
    entries = []
    for question in run.questions:
        qid = question["qid"]
        tree = run.tree(qid)
        if tree is None:  # skipped before any path was chosen
            continue
        mine = rows.where(row_index.get(qid, np.zeros(0, np.int64)))
        children = run.children.where(child_index[qid]) if qid in child_index else None  # older files: none
        for teacher in teachers:
            data = page_data(tree, mine, children, teacher, decode, run.n_sig)
            name = page_name(qid, teacher)
            rate = question.get("pass_rate")
            subtitle = (f"{run.title} · pass rate {rate:.2f} · " if rate is not None else f"{run.title} · ") + \
                f"{len(data['paths'])} paths · {len(data['nodes'])} decision-node tokens"
            write_text(out_dir / name, render_page(data, title=f"{qid} · teacher {teacher}", subtitle=subtitle,
                                                   token_note=note, ids=ids))
            means = [p["mean"] for p in data["paths"] if p["mean"] is not None]
            entries.append({"qid": qid, "teacher": teacher, "file": name, "nodes": len(data["nodes"]),
                            "mean": float(np.mean(means)) if means else None})
    write_text(out_dir / "index.html", _index(entries, run.title))
    return entries


def _index(entries: list[dict], title: str) -> str:
    def mean(e: dict) -> str:
        return "–" if e["mean"] is None else f"{e['mean']:+.3f}"

    rows = "".join(
        f'<tr><td>{html.escape(e["qid"])}</td><td>{html.escape(e["teacher"])}</td><td>{e["nodes"]}</td>'
        f'<td>{mean(e)}</td><td><a href="{html.escape(e["file"])}">open</a></td></tr>' for e in entries)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>per-token pages: {html.escape(title)}</title>
<style>{STYLE} table {{ border-collapse: collapse; }} td, th {{ padding: 3px 10px; border-bottom: 1px solid #eee; }}</style>
</head><body><h1>Per-token pages</h1><p class="meta">{html.escape(title)}</p>
<table><tr><th>question</th><th>teacher</th><th>decision-node tokens</th><th>mean of path means</th><th></th></tr>
{rows}</table></body></html>
"""
