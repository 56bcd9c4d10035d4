"""The report as one self-contained HTML page: every image embedded, nothing loaded from the network."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..names import quoted
from .slices import SLICE_COLUMNS, SLICE_KINDS, slice_row

if TYPE_CHECKING:
    from .render import Report

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2430;
background:#f4f5f7;font-size:14px;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:24px;margin:8px 0 2px}h2{font-size:19px;margin:28px 0 8px;border-bottom:2px solid #d5d9e0;
padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.sub{color:#5b6472;margin:0 0 10px}
nav a{margin-right:14px;color:#2f5f9e;text-decoration:none}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 14px;margin:8px 0}
.left{background:#fff8e6;border-color:#f0d9a0}
table{border-collapse:collapse;background:#fff;width:100%;font-size:13px}
th,td{border:1px solid #dde1e7;padding:4px 7px;text-align:left;vertical-align:middle}
th{background:#eef1f5;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{position:relative;height:10px;width:140px;background:#eceff3;border-radius:3px}
.bar .ci{position:absolute;top:0;height:10px;background:#f2b8c6;border-radius:3px}
.bar .pt{position:absolute;top:-2px;width:3px;height:14px;background:#c2185b}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:6px}
figure img{display:block;max-width:100%;height:auto;margin:0 auto}
figcaption{font-size:12.5px;color:#333;margin-top:4px;word-wrap:break-word}
figcaption b{color:#c2185b}.file{color:#5b6472;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11.5px}
.plot img{max-width:100%}.muted{color:#5b6472}
details{margin:10px 0}summary{cursor:pointer;color:#2f5f9e;font-weight:600}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _src(png: bytes, file: str, embed: bool) -> str:
    mime = "image/jpeg" if file.endswith(".jpg") else "image/png"
    return f"data:{mime};base64," + base64.b64encode(png).decode("ascii") if embed else file


def _slice_table_html(slices: Sequence[Any], table_id: str | None = None) -> str:
    vmax = max([s.box_ci[1] for s in slices if s.boxes] + [s.image_ci[1] for s in slices] + [1e-9])
    head = "".join(f"<th>{_e(c)}</th>" for c in SLICE_COLUMNS[:7]) + "<th>box share, 95% CI</th>" + \
        f"<th>{_e(SLICE_COLUMNS[7])}</th><th>{_e(SLICE_COLUMNS[8])}</th>"
    rows = []
    for s in slices:
        cells = slice_row(s)
        bar = ""
        if s.boxes:
            lo, hi = s.box_ci
            bar = (f'<div class="bar" title="{100 * lo:.1f}% - {100 * hi:.1f}%"><div class="ci" '
                   f'style="left:{100 * lo / vmax:.1f}%;width:{max(0.5, 100 * (hi - lo) / vmax):.1f}%"></div>'
                   f'<div class="pt" style="left:{100 * s.box_share / vmax:.1f}%"></div></div>')
        tds = [f"<td>{_e(cells[0])}</td>", f"<td>{_e(cells[1])}</td>"] + \
            [f'<td class="n">{_e(c)}</td>' for c in cells[2:7]] + [f"<td>{bar}</td>"] + \
            [f'<td class="n">{_e(cells[7])}</td>', f"<td>{_e(cells[8])}</td>"]
        rows.append("<tr>" + "".join(tds) + "</tr>")
    tid = f' id="{table_id}"' if table_id else ""
    return f"<table{tid}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def to_html(r: Report, *, embed_images: bool = True) -> str:
    from .render import KIND_TITLES, _summary_lines  # the Markdown's summary and titles, the same words

    H: list[str] = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                    '<meta name="viewport" content="width=device-width, initial-scale=1">',
                    f"<title>{_e(r.title)}</title><style>{CSS}</style></head><body><main>",
                    f"<h1>{_e(r.title)}</h1>"]
    if r.subtitle:
        H.append(f'<p class="sub">{_e(r.subtitle)}</p>')
    nav = [("summary", "Summary")]
    if r.slices:
        nav.append(("slices", "Issues per slice"))
    if r.queues:
        nav.append(("issues", "Top issues"))
    nav += [("dataset", "Dataset"), ("balance", "Class balance")] + ([("conventions", "Conventions")]
                                                                     if r.conventions else [])
    if r.evaluation is not None:
        nav.append(("detector", "Detector"))
    H.append("<nav>" + "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in nav) + "</nav>")
    H.append('<h2 id="summary">Summary</h2><div class="card"><ul>' +
             "".join(f"<li>{_e(x)}</li>" for x in _summary_lines(r)) + "</ul></div>")
    if r.left_out:
        H.append('<div class="card left" id="left-out"><b>Left out:</b><ul>' +
                 "".join(f"<li><b>{_e(s)}</b>: {_e(w)}</li>" for s, w in r.left_out) + "</ul></div>")
    if r.slices:
        sl = r.slices
        top = sl.ranked()[:r.top_slices]
        o = sl.overall
        H.append('<h2 id="slices">Label issues per slice</h2>')
        H.append(f'<p class="muted">The {len(top)} worst slices of all kinds, ranked by the lower bound of the '
                 f'Wilson 95% interval of the share of boxes with an issue (then of the image share), so a '
                 f'small slice ranks high only when its interval is high too. Overall: {o.issues} label issues '
                 f'on {o.boxes} boxes, {o.images_with_issues} of {o.images} images. Counted types: '
                 f'{_e(", ".join(sl.counted_types) or "none")}; pixel and image-duplicate issues '
                 f'({sl.issues_not_counted}) are not label issues and are not counted.</p>')
        H.append(_slice_table_html(top, "top-slices"))
        H.append('<details id="all-slices"><summary>Every slice, by kind ('
                 + _e(", ".join(f"{KIND_TITLES[k]} {len(sl.kinds[k])}" for k in SLICE_KINDS if k in sl.kinds))
                 + ")</summary>")
        for kind in SLICE_KINDS:
            if kind in sl.kinds:
                H.append(f"<h3>By {_e(KIND_TITLES[kind])}</h3>" + _slice_table_html(sl.kinds[kind]))
        H.append("</details>")
    if r.queues:
        H.append('<h2 id="issues">Top issues of each queue</h2><p class="muted">Magenta: the suspect box with its '
                 'number and class; lime: the model\'s box; white: the other given boxes.</p>')
        for q, n in r.queues.items():
            items = [t for t in r.thumbs if t.queue == q]
            H.append(f"<h3>{_e(q)} <span class=\"muted\">({n} issue{'' if n == 1 else 's'}"
                     f"{', top ' + str(len(items)) + ' shown' if items and n > len(items) else ''})</span></h3>")
            if not items:
                H.append('<p class="muted">No issues in this queue.</p>')
                continue
            H.append('<div class="grid">')
            for t in items:
                i = t.issue
                H.append(f'<figure><img src="{_src(t.image, t.file, embed_images)}" alt="{_e(q)} {t.rank}">'
                         f"<figcaption><b>{t.rank}. {_e(i.type)}</b> (score {i.score:.2f}) {_e(i.reason)}<br>"
                         f'<span class="file" title="{_e(t.shown or Path(i.filepath).name)}">{_e(Path(i.filepath).name)}</span> '
                         f'<span class="muted">{_e(t.drawn)}</span></figcaption></figure>')
            H.append("</div>")
    H.append('<h2 id="dataset">Dataset</h2>')
    for f in r.figures:
        if f.section == "dataset":
            H.append(f'<h3>{_e(f.title)}</h3><div class="plot"><img src="{_src(f.png, f.file, embed_images)}" '
                     f'alt="{_e(f.title)}"></div>')
    b = r.balance
    H.append('<h2 id="balance">Class balance plan</h2>')
    H.append(f'<p class="muted">Against the YOLO rule of thumb of {b["rule_images"]:,} images and '
             f'{b["rule_instances"]:,} instances per class; largest class: {_e(quoted(b["largest_class"]) if b["largest_class"] is not None else "none")} '
             f'({b["largest_instances"]} instances).</p>')
    cols = ["class", "images", "instances", "images to largest", "instances to largest",
            f"images to {b['rule_images']:,}", f"instances to {b['rule_instances']:,}"]
    aug = bool(b["classes"]) and "augment_images" in b["classes"][0]
    if aug:
        cols += ["augment adds images", "augment adds instances"]
    rows = []
    for c in b["classes"]:
        vals = [c["images"], c["instances"], c["to_largest_images"], c["to_largest_instances"], c["to_rule_images"],
                c["to_rule_instances"]] + ([c["augment_images"], c["augment_instances"]] if aug else [])
        rows.append(f"<tr><td>{_e(c['class'])}</td>" + "".join(f'<td class="n">{v}</td>' for v in vals) + "</tr>")
    H.append(f'<table id="balance-table"><thead><tr>{"".join(f"<th>{_e(c)}</th>" for c in cols)}</tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table><p>Augment: {_e(b["augment"])}.</p>')
    if r.conventions:
        from .conventions_page import INTRO, html_table

        H.append(f'<h2 id="conventions">Labeling conventions</h2><p>{_e(INTRO)}</p>'
                 + html_table(r.conventions["classes"])
                 + "".join(f"<p><b>mixed</b>: {_e(quoted(c))} is boxed both ways</p>"
                           for c in r.conventions.get("mixed", [])))
    if r.evaluation is not None:
        e = r.evaluation
        H.append('<h2 id="detector">Detector quality</h2>')
        if e.get("map50") is not None:
            H.append(f"<p>mAP@0.5 {e['map50']:.3f}, mAP@0.5:0.95 {e.get('map50_95', 0):.3f} on "
                     f"{_e(e.get('images'))} images"
                     + (f" (<b>in-sample</b>: the model trained on {_e(e['in_sample'])} of them)" if e.get("in_sample")
                        else "") + ".</p>")
            if e.get("out_of_sample"):
                o = e["out_of_sample"]
                H.append(f"<p>Out-of-sample only ({_e(o['images'])} images the model did not train on): mAP@0.5 "
                         f"{o['map50']:.3f}, mAP@0.5:0.95 {o['map50_95']:.3f}.</p>")
        for f in r.figures:
            if f.section == "detector":
                H.append(f'<h3>{_e(f.title)}</h3><div class="plot"><img '
                         f'src="{_src(f.png, f.file, embed_images)}" alt="{_e(f.title)}"></div>')
    H.append('<p class="muted">Made by cvcurate. Self-contained page: every image is embedded; nothing is '
             'loaded from the network.</p></main></body></html>')
    return "\n".join(H) + "\n"


