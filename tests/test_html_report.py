"""report.html (analysis/html_report.py) rendered in a real headless browser.

The study is a Tune-style folder written by hand (no Ray); ``python -m analysis``'s own entry point
writes report.md, figures, CSVs and report.html. Debian's ``chromium`` then loads the page from disk
with a check script injected into a copy of it (the page itself carries no test code): it counts the
figures that decoded whole (their last pixel drawn, opaque as matplotlib saves them), clicks every header of every table twice and dumps each column as it came out.
Python checks the order with its own reading of the cells, so a sort that compares text instead of
numbers fails here. Without chromium the browser test skips (``make test`` installs it with apt when
it can).
"""
from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

from analysis.__main__ import main as cli_main
from analysis.html_report import HTML_FILE, TB_EVENTS, href, trial_hours
from analysis.load import load_study
from plvae import metrics as M
from plvae.config import TrialConfig
from test_analysis import write_trial   # Ray Tune's trial folder layout, written by hand

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHECK_JS = """
window.addEventListener('load', function () {
  var ok = 0;   // decoded whole: a truncated PNG still has its size, but its last rows are not drawn
  Array.prototype.forEach.call(document.images, function (im) {
    if (!(im.complete && im.naturalWidth > 0)) return;
    var c = document.createElement('canvas'), g = c.getContext('2d');
    c.width = im.naturalWidth; c.height = im.naturalHeight;
    try { g.drawImage(im, 0, 0); if (g.getImageData(c.width - 1, c.height - 1, 1, 1).data[3] === 255) ok++; }
    catch (e) { /* a broken image */ }
  });
  document.body.setAttribute('data-images-loaded', ok + '/' + document.images.length);
  function column(t, i) {
    return Array.prototype.map.call(t.tBodies[0].rows, function (r) { return r.cells[i] ? r.cells[i].textContent : ''; });
  }
  var out = [];
  document.querySelectorAll('table').forEach(function (t) {
    var heads = t.tHead.rows[t.tHead.rows.length - 1].cells, cols = [];
    for (var i = 0; i < heads.length; i++) {
      heads[i].click(); var asc = column(t, i);
      heads[i].click(); var desc = column(t, i);
      cols.push({name: heads[i].textContent, asc: asc, desc: desc, aria: heads[i].getAttribute('aria-sort')});
    }
    out.push({id: t.id, cols: cols});
  });
  var pre = document.createElement('pre'); pre.id = 'sort-check'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
"""


def sort_key(text: str):
    """How a reader orders a cell: by its leading number (unicode minus, <, ∞ read), else as text;
    None for an empty cell."""
    t = re.sub(r"^[<>≤≥~≈]\s*", "", text.strip().replace("\u2212", "-"))
    if not t:
        return None
    if re.match(r"^[+-]?∞", t):
        return (0, -math.inf if t[0] == "-" else math.inf)
    m = re.match(r"^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?", t, re.I)
    return (0, float(m.group(0))) if m else (1, t)


def assert_sorted(cells: list, descending: bool, where: str):
    """Empty cells last both ways; numbers before text ascending (after it descending), in number
    order. Text against text is left to the browser's collation (localeCompare), not checked."""
    keys = [sort_key(c) for c in cells]
    n = sum(k is not None for k in keys)
    assert all(k is not None for k in keys[:n]), f"{where}: empty cells not last: {cells}"
    kinds = [k[0] for k in keys[:n]]
    assert kinds == sorted(kinds, reverse=descending), f"{where}: numbers and text mixed: {cells}"
    nums = [k[1] for k in keys[:n] if k[0] == 0]
    assert nums == sorted(nums, reverse=descending), f"{where}: numbers out of order: {cells}"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """Three groups of three seeds over 10 epochs; one trial stopped by ASHA after 2, so a column
    holds 10 and 2 (text order and number order differ). Each trial has a TensorBoard events file."""
    root = tmp_path_factory.mktemp("html") / "html_study"
    status, i = {}, 0
    for variant, gamma, scale in [("vae", 0.0, 1.0), ("powerlaw_clamp", 1.0, 0.9), ("powerlaw_clamp", 0.5, 1.1)]:
        for seed in range(3):
            tid = f"h7ml0_{i:05d}"
            curve = [scale * (0.2 + 0.8 * 0.5 ** e) * (1 + 0.01 * seed) for e in range(11)]
            stopped = (variant, gamma, seed) == ("powerlaw_clamp", 0.5, 2)
            d = write_trial(root, tid, TrialConfig(variant=variant, gamma=gamma, seed=seed, max_epochs=10,
                                                   dataset="digits"),
                            curve=curve[:3] if stopped else curve, stopped=stopped)
            (d / f"{TB_EVENTS}.1700000000.h.{i}").write_bytes(b"")
            status[tid], i = "TERMINATED", i + 1
    (root / "study.json").write_text(json.dumps({
        "study_name": "html_study", "metric": M.DEFAULT_STUDY_METRIC, "mode": "min", "scheduler": "asha",
        "search": "grid", "max_epochs": 10, "status": "finished", "started": "2026-12-03T10:00:00+00:00",
        "finished": "2026-12-03T10:02:00+00:00", "driver": {"host": "studyhost", "pid": 4242},
        "study_config": {"study_name": "html_study", "preset": "quick"}, "trial_status": status}))
    args = [str(root), "--min-seeds", "2", "--no-data-spectrum"]
    assert cli_main(args) == 0
    assert (root / "report" / HTML_FILE).is_file()
    return root


def test_page_is_self_contained_with_provenance_and_links(study_dir):
    page = (study_dir / "report" / HTML_FILE).read_text()
    assert not re.search(r"""<(?:link|script)\b[^>]*\b(?:src|href)=""", page)   # no external CSS or JS
    srcs = re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', page)
    assert len(srcs) >= 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert len(srcs) == len(list((study_dir / "report").glob("*.png")))   # every figure written is in the page
    assert not re.search(r"""(?:src|href)="https?:""", page)
    for section in ("provenance", "answer", "trials", "csv"):   # the contents line links each section
        assert f'<a href="#{section}">' in page and f'<h2 id="{section}">' in page
    hours, n = trial_hours(load_study(study_dir, warn=False))
    assert n == 9 and f"{hours:.3g} trial-hours ({hours * 3600:,.0f} s" in page
    assert "python -m analysis " + str(study_dir) in page and "studyhost" in page
    assert re.search(r"analysis code \(git\)</dt><dd>([0-9a-f]{40} \((clean|dirty)|unknown)", page)
    assert re.search(r"numpy \d+\.\d+", page) and re.search(r"pandas \d+\.\d+", page)


def test_no_html_flag(study_dir, tmp_path):
    out = tmp_path / "r"
    assert cli_main([str(study_dir), "--min-seeds", "2", "--no-data-spectrum", "--no-figures", "--no-html",
                     "--out", str(out)]) == 0
    assert (out / "report.md").is_file() and not (out / HTML_FILE).exists()


def chromium() -> str:
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no headless browser: chromium is not installed (make test installs Debian's `chromium` with "
                "apt-get when it can; or `apt-get install chromium` by hand)")


def render(page: Path, tmp_path: Path, *extra: str) -> str:
    """The DOM after the page loaded and its scripts ran, from a real headless chromium."""
    proc = subprocess.run([chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000", *extra,
                           page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_rendered_in_headless_chromium(study_dir, tmp_path):
    report = study_dir / "report"
    page = (report / HTML_FILE).read_text()
    check = report / "report_check.html"   # beside the page, so its relative links resolve the same
    check.write_text(page.replace("</body>", f"<script>{CHECK_JS}</script></body>"))
    dom = render(check, tmp_path, "--dump-dom")
    check.unlink()

    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded, dom[:2000]
    assert int(loaded.group(2)) >= 4 and loaded.group(1) == loaded.group(2), loaded.group(0)   # every figure

    tables = json.loads(html.unescape(re.search(r'<pre id="sort-check">(.*?)</pre>', dom, re.S).group(1)))
    csvs = sorted(p.name for p in report.glob("*.csv"))
    assert len(tables) >= 5 + len(csvs)   # the report's own tables, the trials table and one per CSV
    assert all(f"<code>{name}</code>" in dom for name in csvs)
    discriminating = 0
    for t, table in enumerate(tables):
        for col in table["cols"]:
            where = f"table {t} ({table['id']}), column {col['name']!r}"
            assert col["aria"] == "descending", where
            assert_sorted(col["asc"], descending=False, where=where)
            assert_sorted(col["desc"], descending=True, where=where)
            nums = [c for c in col["asc"] if sort_key(c) and sort_key(c)[0] == 0]
            discriminating += sorted(nums) != nums   # number order is not text order here
    assert discriminating > 0   # the data can tell a numeric sort from a text sort

    trials = next(t for t in tables if t["id"] == "trials-table")
    assert len(trials["cols"][0]["asc"]) == 9
    rows = re.search(r'<table id="trials-table">.*?</table>', dom, re.S).group(0)
    links = [unquote(h) for h in re.findall(r'<a href="([^"]+)"', rows)]
    assert len(links) == 3 * 9   # folder, TensorBoard run, checkpoint per trial
    for link in links:
        assert not link.startswith(("/", "file:")) and (report / link).exists(), link
    assert sum(TB_EVENTS in link for link in links) == 9
    assert sum("/checkpoint_" in link for link in links) == 9


def test_href_is_relative_and_quoted(tmp_path):
    (tmp_path / "a b" / "c").mkdir(parents=True)
    assert href(tmp_path / "a b" / "c", tmp_path / "report") == "../a%20b/c/"


def test_provenance_shows_what_each_study_recorded():
    """A driver that records its command, commit and versions gets them shown; one that does not is
    named as not recording them; several studies get a block each."""
    from analysis.html_report import provenance_html
    from test_analysis import make_study

    study = make_study({("vae", 0.0): dict(n=2)}, epochs=2)
    study.meta = {"study_name": "both", "studies": {
        "A": {"status": "finished", "argv": ["plvae-study", "--preset", "quick", "--study-name", "A b"],
              "git": {"commit": "f" * 40, "dirty": True}, "versions": {"torch": "9.9"}},
        "B": {"status": "finished"}}}
    block = provenance_html(study, argv=["A", "B"])
    assert "<code>plvae-study --preset quick --study-name &#x27;A b&#x27;</code>" in block
    assert "f" * 40 + " (dirty: uncommitted changes)" in block and "torch 9.9" in block
    assert block.count("not recorded in study.json") == 2   # B: neither command nor commit
    assert "<code>python -m analysis A B</code>" in block
    assert "0.00222 trial-hours (8 s: the sum of time_total_s over 2 of 2 trials)" in block   # 2 trials x 4 s
