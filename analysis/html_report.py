"""One file you can send: ``report.html`` beside ``report.md``, built from what ``write_report`` wrote.

The page is self-contained: report.md rendered to HTML (Python-Markdown), every figure embedded as
a base64 data URI, every CSV of the report folder as a table (and as a download link inside the
page), no external CSS, JavaScript or fonts. Every table sorts on a click of its header (numbers as
numbers: ``0.0115 [0.0109, 0.0128]`` sorts by 0.0115, ``∞`` last). At the top: provenance (the
study's record from study.json, the analysis' command, git commit, package versions, machine, total
trial-hours) and a trials table linking each trial to its folder, its TensorBoard run and its last
checkpoint, as links relative to the report (they resolve as ``file://`` when the page is opened
from the study's folder).

``python -m analysis PATH`` writes it unless ``--no-html``; in a notebook:
``write_html(study, out=write_report(study, c).parent)``.
"""
from __future__ import annotations

import base64
import html
import math
import mimetypes
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import quote

import pandas as pd

from analysis.load import Study
from plvae.provenance import git_state, machine, package_versions

HTML_FILE = "report.html"
REPORT_MD = "report.md"
# What a driver could record in study.json for the provenance block; shown when present.
STUDY_ARGV_KEYS = ("argv", "command")
MAX_CSV_ROWS = 2000
TB_EVENTS = "events.out.tfevents"

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:72rem;margin:1.5rem auto;
padding:0 1rem;line-height:1.45;color:#1b1b1b}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em;background:#f4f4f4}
pre{padding:.5rem;overflow-x:auto;white-space:pre-wrap}
.scroll{overflow-x:auto;margin:.6rem 0}
table{border-collapse:collapse;font-size:.85rem}
th,td{border:1px solid #ccc;padding:.2rem .45rem;text-align:left;vertical-align:top}
thead th{background:#eef1f5;cursor:pointer;user-select:none;white-space:nowrap}
thead th::after{content:" \\2195";color:#999}
thead th[aria-sort=ascending]::after{content:" \\25B2";color:#333}
thead th[aria-sort=descending]::after{content:" \\25BC";color:#333}
tbody tr:nth-child(even){background:#fafafa}
img{max-width:100%;height:auto;border:1px solid #eee}
dl.prov{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;font-size:.9rem}
dl.prov dt{font-weight:600}dl.prov dd{margin:0}
details{margin:.4rem 0}summary{cursor:pointer}nav{font-size:.9rem;margin:.5rem 0 1rem}
"""

# Click (or Enter on) a header: sort the body rows by that column, ascending then descending. A cell
# that starts with a number sorts as that number (unicode minus, %, <, ∞ understood); numbers come
# before text, and empty cells last whatever the direction.
SORT_JS = r"""
(function(){
function key(t){t=t.trim().replace(/\u2212/g,'-').replace(/^[<>\u2264\u2265~\u2248]\s*/,'');
 if(t==='')return {e:1};
 var inf=t.match(/^([+-]?)\u221e/);if(inf)return {n:inf[1]==='-'?-Infinity:Infinity};
 var m=t.match(/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?/i);return m?{n:parseFloat(m[0])}:{s:t};}
function cmp(a,b){if(a.e||b.e)return 0;
 if(a.n!==undefined&&b.n!==undefined)return a.n===b.n?0:(a.n<b.n?-1:1);
 if(a.n!==undefined)return -1;if(b.n!==undefined)return 1;
 return a.s.localeCompare(b.s,undefined,{numeric:true});}
function sortBy(th){var row=th.parentNode,table=row.closest('table'),body=table.tBodies[0];if(!body)return;
 var i=Array.prototype.indexOf.call(row.children,th),asc=th.getAttribute('aria-sort')!=='ascending';
 Array.prototype.forEach.call(row.children,function(h){h.removeAttribute('aria-sort');});
 th.setAttribute('aria-sort',asc?'ascending':'descending');
 var rows=Array.prototype.map.call(body.rows,function(r){var c=r.cells[i];return {r:r,k:key(c?c.textContent:'')};});
 rows.sort(function(x,y){if(x.k.e||y.k.e)return (x.k.e?1:0)-(y.k.e?1:0);var c=cmp(x.k,y.k);return asc?c:-c;});
 rows.forEach(function(x){body.appendChild(x.r);});}
window.plvaeSortBy=sortBy;
document.querySelectorAll('table').forEach(function(t){if(!t.tHead)return;
 Array.prototype.forEach.call(t.tHead.rows[t.tHead.rows.length-1].cells,function(th){th.tabIndex=0;
  th.title='sort by this column';th.addEventListener('click',function(){sortBy(th);});
  th.addEventListener('keydown',function(e){if(e.key==='Enter')sortBy(th);});});});
})();
"""


# ---------------------------------------------------------------------------------- provenance
def trial_hours(study: Study) -> tuple[float, int]:
    """Sum of the trials' ``time_total_s`` in hours, and how many trials reported a time."""
    t = pd.to_numeric(study.trials.get("time_total_s", pd.Series(dtype=float)), errors="coerce").dropna()
    return float(t.sum()) / 3600.0, int(len(t))


def _git_text(state: Optional[dict]) -> str:
    if not state:
        return "unknown (not a git checkout, or git missing)"
    return f"{state['commit']}" + (" (dirty: uncommitted changes)" if state.get("dirty") else " (clean)")


def _study_rows(name: str, meta: dict) -> list[tuple[str, str]]:
    """Provenance of one study, from its study.json."""
    e = html.escape
    argv = next((meta[k] for k in STUDY_ARGV_KEYS if meta.get(k)), None)
    if argv:
        cmd = f"<code>{e(argv if isinstance(argv, str) else shlex.join(map(str, argv)))}</code>"
    else:
        cmd = ("not recorded in study.json (the driver records its configuration, below, not its command line)"
               if meta else "no study.json")
    git = meta.get("git") or meta.get("git_commit")
    driver = meta.get("driver") or {}
    rows = [(f"study {e(name)}", f"status {e(str(meta.get('status', '?')))}; started {e(str(meta.get('started', '?')))}"
             f"; finished {e(str(meta.get('finished') or '?'))}; preset {e(str(meta.get('preset', '?')))}"),
            ("study command", cmd),
            ("study code (git)", e(_git_text(git) if isinstance(git, dict) else str(git)) if git
             else "not recorded in study.json"),
            ("study driver", e(f"host {driver.get('host', '?')}, pid {driver.get('pid', '?')}") if driver
             else "not recorded")]
    if meta.get("versions"):
        rows.append(("study packages", e(", ".join(f"{k} {v}" for k, v in dict(meta["versions"]).items()))))
    if meta.get("study_config"):
        import yaml
        rows.append(("study configuration", "<details><summary>as study.json records it</summary><pre>"
                     + e(yaml.safe_dump(meta["study_config"], sort_keys=False)) + "</pre></details>"))
    return rows


def provenance_html(study: Study, argv: Optional[Sequence[str]] = None) -> str:
    """The provenance block: each study's record, then the analysis that wrote this page."""
    e = html.escape
    metas = study.meta.get("studies") or {study.name: study.meta}
    rows = [r for name, meta in metas.items() for r in _study_rows(name, meta or {})]
    hours, n = trial_hours(study)
    rows.append(("total compute", f"{hours:.3g} trial-hours ({hours * 3600:,.0f} s: the sum of time_total_s over {n} "
                                  f"of {len(study.trials)} trials)"))
    command = "python -m analysis " + shlex.join(map(str, sys.argv[1:] if argv is None else argv))
    m = machine()
    rows += [("analysis command", f"<code>{e(command)}</code>"),
             ("analysis code (git)", e(_git_text(git_state(Path(__file__).resolve().parent)))),
             ("analysis packages", e(", ".join(f"{k} {v}" for k, v in package_versions().items()))),
             ("analysis machine", e(f"{m['hostname']}; {m['cpus']} CPUs; {m['platform']}; Python {m['python']}"))]
    if study.path is not None:
        rows.append(("TensorBoard", f"<code>tensorboard --logdir {e(shlex.quote(str(study.path)))}</code> "
                                    f"(each trial folder is one run)"))
    items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<section><h2 id="provenance">Provenance</h2><dl class="prov">{items}</dl></section>'


# ---------------------------------------------------------------------------------- trials and links
def href(target, out: Path) -> str:
    """A link from the report folder to ``target``: relative (a ``file://`` link when the page is
    opened from disk, and still right after the study folder is moved or copied whole), absolute
    where no relative path exists (another drive)."""
    try:
        rel = os.path.relpath(Path(target).resolve(), Path(out).resolve())
    except ValueError:
        return Path(target).resolve().as_uri()
    return quote(Path(rel).as_posix()) + ("/" if Path(target).is_dir() else "")


def _link(target, out: Path, text: str, title: str = "") -> str:
    tip = f' title="{html.escape(title)}"' if title else ""
    return f'<a href="{html.escape(href(target, out))}"{tip}>{html.escape(text)}</a>'


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def trials_html(study: Study, out: Path) -> str:
    """One row per trial: what varies, its outcome, and links to its folder, its TensorBoard run
    (the events file in that folder) and its last checkpoint."""
    t = study.trials
    final = f"final_{study.metric}"
    cols = [c for c in ("study", "trial_id", *study.swept, "seed", "status", "epochs", final, "time_total_s", "node")
            if c in t.columns]
    cols = list(dict.fromkeys(cols))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "<th>folder</th><th>TensorBoard run</th><th>checkpoint</th>"
    body = []
    for r in t.to_dict("records"):
        d = Path(r["trial_dir"]) if r.get("trial_dir") else None
        events = sorted(d.glob(TB_EVENTS + "*")) if d is not None and d.is_dir() else []
        ckpt = r.get("last_checkpoint")
        links = [_link(d, out, d.name) if d is not None else "",
                 _link(events[-1], out, "events", f"TensorBoard run {d.name}") if events else "",
                 _link(ckpt, out, Path(ckpt).name) if ckpt else ""]
        body.append("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in cols)
                    + "".join(f"<td>{x}</td>" for x in links) + "</tr>")
    return (f'<section><h2 id="trials">Trials</h2><p>{len(t)} trials; {html.escape(final)} is each trial\'s value '
            f'at its own last epoch (see <code>epochs</code>); the comparisons above use equal epochs. Links are '
            f'relative to this page.</p><div class="scroll"><table id="trials-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div></section>')


# ---------------------------------------------------------------------------------- report.md, figures, CSVs
def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def embed_images(body: str, folder: Path) -> tuple[str, list[str]]:
    """Every ``<img src="file">`` of a file in ``folder`` becomes a data URI; returns the missing files."""
    missing = []

    def swap(m):
        src = html.unescape(m.group(2))
        f = folder / src
        if src.startswith(("data:", "http:", "https:")) or not f.is_file():
            if not src.startswith("data:"):
                missing.append(src)
            return m.group(0)
        return f'{m.group(1)}"{_data_uri(f)}"'

    return re.sub(r'(<img\b[^>]*?\bsrc=)"([^"]*)"', swap, body), missing


def markdown_html(folder: Path) -> str:
    import markdown

    text = (folder / REPORT_MD).read_text()
    body = markdown.markdown(text, extensions=["tables", "fenced_code", "sane_lists", "toc"], output_format="html")
    # a wide table scrolls on its own instead of widening the page
    return body.replace("<table>", '<div class="scroll"><table>').replace("</table>", "</table></div>")


def csv_html(folder: Path) -> str:
    """Each CSV of the report folder as a sortable table, with the file itself as a download link."""
    parts = []
    for f in sorted(folder.glob("*.csv")):
        try:
            df = pd.read_csv(f)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as ex:
            parts.append(f"<p>{html.escape(f.name)}: not readable ({html.escape(str(ex))})</p>")
            continue
        note = f", first {MAX_CSV_ROWS} shown" if len(df) > MAX_CSV_ROWS else ""
        table = df.head(MAX_CSV_ROWS).to_html(index=False, na_rep="", float_format=lambda x: f"{x:.6g}",
                                              border=0, classes="csv")
        parts.append(f'<details><summary><code>{html.escape(f.name)}</code> ({len(df)} rows{note}; '
                     f'<a download="{html.escape(f.name)}" href="{_data_uri(f)}">download</a>)</summary>'
                     f'<div class="scroll">{table}</div></details>')
    if not parts:
        return ""
    return '<section><h2 id="csv">Tables as CSV</h2>' + "".join(parts) + "</section>"


def _contents(page: str) -> str:
    """A line of links to every section (h2 with an id)."""
    links = [f'<a href="#{i}">{re.sub("<[^>]+>", "", t).split(":")[0]}</a>'   # "Headline: variants ..." -> "Headline"
             for i, t in re.findall(r'<h2 id="([^"]+)">(.*?)</h2>', page, re.S)]
    return '<nav id="contents">' + " · ".join(links) + "</nav>" if links else ""


def write_html(study: Study, out, argv: Optional[Sequence[str]] = None) -> Path:
    """Write ``report.html`` into ``out`` (the folder ``write_report`` wrote), from its report.md,
    figures and CSVs, with provenance and the trials table. ``argv``: the analysis' arguments, for
    the provenance (default ``sys.argv[1:]``). Returns the page's path."""
    out = Path(out)
    if not (out / REPORT_MD).is_file():
        raise ValueError(f"out={str(out)!r} is invalid (no {REPORT_MD}); allowed: the folder write_report wrote")
    body, missing = embed_images(markdown_html(out), out)
    if missing:
        body += "<p>Figures not found beside report.md: " + html.escape(", ".join(missing)) + ".</p>"
    title, sep, rest = body.partition("</h1>")
    if not sep:
        title, rest = "", body
    sections = f'{provenance_html(study, argv)}\n{rest}\n{trials_html(study, out)}\n{csv_html(out)}\n'
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{html.escape(study.name)}: plvae report</title><style>{STYLE}</style></head><body>\n'
            f'{title}{sep}\n{_contents(sections)}\n{sections}'
            f'<script>{SORT_JS}</script>\n</body></html>\n')
    path = out / HTML_FILE
    path.write_text(page, encoding="utf-8")
    return path
