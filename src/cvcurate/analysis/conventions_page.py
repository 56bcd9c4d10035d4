"""The labeling-conventions report as JSON (for tools), Markdown and HTML (for the team): per class,
the boxing styles found, their counts and shares, the majority, and example images of each style."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Callable

from ..names import quoted
from ..scoring.conventions import STYLES, ClassConvention, Conventions

CAPTION = {"whole": "boxed whole (one box per region the model sees)",
           "pieces": "boxed in pieces (several boxes in one region the model sees)"}
LEGEND = "magenta: the class's given boxes; lime: the model's boxes of the class; white: other given boxes"


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def summary_line(c: ClassConvention) -> str:
    """One line per class, for the terminal, the Markdown and the gate's wording."""
    if not c.judged:
        return f"{quoted(c.name)}: {c.images} images; the model judges none of its boxes"
    text = (f"{quoted(c.name)}: whole in {c.whole} ({_pct(c.share('whole'))}), pieces in {c.pieces} "
            f"({_pct(c.share('pieces'))}) of {c.judged} judged images")
    if c.adopted:
        text += f"; adopted: {c.adopted}"
    elif c.mixed:
        text += "; MIXED: settle one style"
    elif c.majority:
        text += f"; convention: {c.majority}"
    return text


def rows(classes: list[dict[str, Any]]) -> list[list[str]]:
    """The table's rows from :meth:`ClassConvention.to_dict` of each class (what a run record keeps)."""
    out = []
    for c in classes:
        sh = c["shares"]
        out.append([c["name"], str(c["images"]), str(c["judged"]), f"{c['whole']} ({_pct(sh['whole'])})",
                    f"{c['pieces']} ({_pct(sh['pieces'])})", str(c["whole_over_several"]), str(c["nested"]),
                    f"{c['tight']} / {c['as_model']} / {c['loose']}", c.get("adopted") or c.get("majority") or "-",
                    "yes" if c["mixed"] and not c.get("adopted") else ""])
    return out


def markdown_table(classes: list[dict[str, Any]]) -> str:
    return "\n".join(["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
                     + ["| " + " | ".join(r) + " |" for r in rows(classes)])


def html_table(classes: list[dict[str, Any]], table_id: str = "conventions-table") -> str:
    e = html.escape
    body = "".join("<tr>" + "".join(f"<td{' class=mixed' if k == len(r) - 1 and v else ''}>{e(v)}</td>"
                                     for k, v in enumerate(r)) + "</tr>" for r in rows(classes))
    return (f"<table id='{table_id}'><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in HEAD)
            + f"</tr></thead><tbody>{body}</tbody></table>")


INTRO = ("For each class, how its boxes meet the regions the model sees: *whole* (one box per region) or *pieces* "
         "(several boxes in one region: strips, tiles). A class boxed both ways is *mixed*: no single box is wrong, "
         "but a model trained on both learns neither; settle one style with the team.")


HEAD = ["class", "images", "judged", "whole", "pieces", "one box over several regions", "nested",
        "margins tight / as model / loose", "convention (majority)", "mixed"]


def write(conv: Conventions, out_dir: str | Path, name: str,
          thumb: Callable[[int, int], bytes]) -> dict[str, Path]:
    """Write conventions.json, conventions.md (thumbnails beside it in ``thumbs/``) and
    conventions.html (thumbnails embedded) to ``out_dir``; ``thumb(class_index, record_index)``
    gives an example's JPEG bytes. Returns the paths written."""
    out = Path(out_dir)
    (out / "thumbs").mkdir(parents=True, exist_ok=True)
    shots: dict[tuple[int, str], list[tuple[str, bytes]]] = {}
    for ci, c in enumerate(conv.classes):
        for style in STYLES:
            for i in c.examples.get(style, []):
                file = f"thumbs/{ci}_{style}_{i}.jpg"
                data = thumb(ci, i)
                (out / file).write_bytes(data)
                shots.setdefault((ci, style), []).append((file, data))
    doc: dict[str, Any] = {"dataset": name, **conv.to_dict()}
    for ci, c in enumerate(doc["classes"]):
        c["example_files"] = {s: [f for f, _ in shots.get((ci, s), [])] for s in STYLES}
    paths = {"json": out / "conventions.json", "md": out / "conventions.md", "html": out / "conventions.html"}
    paths["json"].write_text(json.dumps(doc, indent=2))
    md = [f"# Labeling conventions: {name}", "", f"{conv.images} images. {INTRO}", "",
          markdown_table(doc["classes"])]
    md += ["", LEGEND, ""]
    for ci, c in enumerate(conv.classes):
        md += [f"## {c.name}", "", summary_line(c), ""]
        for style in STYLES:
            if shots.get((ci, style)):
                md += [f"{CAPTION[style]}:", ""] + [f"![{style}]({f})" for f, _ in shots[(ci, style)]] + [""]
    paths["md"].write_text("\n".join(md))
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Labeling conventions: {e(name)}</title>"
             "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
             "img{margin:4px;border:1px solid #999}.mixed{color:#b00;font-weight:bold}</style></head><body>",
             f"<h1>Labeling conventions: {e(name)}</h1><p>{conv.images} images. {e(INTRO)}</p>",
             html_table(doc["classes"])]
    parts.append(f"<p>{e(LEGEND)}</p>")
    for ci, c in enumerate(conv.classes):
        parts.append(f"<h2>{e(c.name)}</h2><p>{e(summary_line(c))}</p>")
        for style in STYLES:
            if shots.get((ci, style)):
                parts.append(f"<h3>{e(CAPTION[style])}</h3><div>" + "".join(
                    f"<img alt='{e(style)}' src='data:image/jpeg;base64,{base64.b64encode(d).decode()}'>"
                    for _, d in shots[(ci, style)]) + "</div>")
    parts.append("</body></html>")
    paths["html"].write_text("\n".join(parts))
    return paths


RULE = {"whole": "Box each defect region with one box around the whole region, even where it looks like "
                 "strips or tiles.",
        "pieces": "Box each piece (strip, tile) of a defect region with a box of its own; do not draw one box "
                  "around several pieces."}


def write_instructions(conv: Conventions, path: str | Path, name: str,
                       thumb: Callable[[int, int], bytes]) -> Path:
    """Labeling instructions for annotators, as Markdown: per class its adopted convention (or,
    where none is adopted, the majority style and a note that it is not settled), with one
    example that follows it and one that does not, the images in ``<stem>_images/`` beside it."""
    path = Path(path)
    img_dir = path.with_name(path.stem + "_images")
    img_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# Labeling instructions: {name}", "",
             "How to box each class, as the team settled it (`cvcurate conventions --adopt`). "
             f"In the images: {LEGEND}.", ""]
    for ci, c in enumerate(conv.classes):
        style = c.adopted or c.majority
        lines += [f"## {c.name}", ""]
        if style is None:
            lines += ["No convention yet: the data has no majority style (or the model judges none of its "
                      "boxes).", ""]
            continue
        lines += [("**Convention (adopted):** " if c.adopted else
                   "**Not adopted yet; the majority of the data:** ") + RULE[style], ""]
        other = "pieces" if style == "whole" else "whole"
        for label, st in (("Good", style), ("Not like this", other)):
            ex = c.examples.get(st) or []
            if ex:
                file = img_dir / f"{ci}_{st}.jpg"
                file.write_bytes(thumb(ci, ex[0]))
                lines += [f"{label}:", "", f"![{label}]({img_dir.name}/{file.name})", ""]
            elif label == "Not like this":
                lines += ["(No image in the data breaks it.)", ""]
    path.write_text("\n".join(lines))
    return path
