"""Independent label-error benchmark: errors of its own, scored through the CLI of any source tree.

"A benchmark must not share its assumptions with the thing it measures." This script does not
import ``cvcurate.corrupt`` nor anything of ``cvcurate.scoring``: it reads the data itself, injects
errors with its own generator (other rules and ranges than ``cvcurate corrupt``, see below), writes
each corrupted copy as an ordinary Pascal VOC folder with anonymised file names, and runs the tool
only through its command line (``python -c "from cvcurate.cli import main; main()" ...`` with
``PYTHONPATH=<tree>/src``), so the same script measures an older commit checked out with
``git worktree add /tmp/tree-ece0d55 ece0d55``. The only cvcurate code it imports itself is
``cvcurate.store.start_private_database`` (a throwaway mongod; ``~/.fiftyone`` is never touched).

Datasets
  * ``neu``: the 240 NEU-DET dev images the shipped ``neu-det`` detector did not train on: the
    images whose SHA-256 (first 16 hex digits of the file's bytes) is not in
    ``src/cvcurate/weights/neu-det.train-images.txt``. Boxes read from the XMLs here (1-based
    inclusive, 200x200 frame, scaled to the real 416x416 JPEG). Predictions: ``--model neu-det``, or
    ``--neu-predictions FILE`` (e.g. out-of-fold ones from ``bench_kfold.py``).
  * ``synth``: ``--synth-images`` fresh images of ``cvcurate synth`` (seed ``--synth-seed``; the
    shipped detector was trained on seed 0), boxes read from its ``coco/labels.json``. Its labels
    are exact. Predictions: ``--model synth``. Each tree draws it with its own ``synth``; the
    tables say whether every tree saw the same data (a digest of images and boxes).

Error generator (one error per corrupted image, ``--rate`` of the images, 10 % by default; the six
types dealt evenly, a remainder drawn at random; the scarce types are placed first: ``merged``
then ``dropped`` need images that allow them). A "usable" box has both sides >= 2 px.
  * ``swap``: a usable box gets a class drawn uniformly from the other classes.
  * ``badloc``: each of the four edges of a usable box moves independently by up to 60 % of the
    box's side (uniform), clipped to the image, redrawn until the IoU with the original box is
    in [0.3, 0.6] and both sides are >= 2 px.
  * ``dropped``: one box removed, only in images with two or more boxes.
  * ``spurious``: a box copied (class and size) from a random usable box of another image, put at a
    uniformly random place inside this image where its IoU with every box there is < 0.3, inserted
    at a random position of the box list.
  * ``merged``: the nearest pair (by centre distance) of usable boxes of one class in the image is
    replaced by their union shrunk on each side by 3-10 % (uniform, per side) of the union's side,
    inserted at a random position of the box list.
  * ``degenerate``: a usable box collapsed around its centre line to a width or height (random
    axis) of 0-0.9 px, which every importer stores as zero.
File names: every image and annotation of a copy is renamed to a random 12-hex id (new ids for
every copy, the labels-as-given copy included); no split, no ImageSets. The truth (image id, type,
box index in the copy's annotation file, original and new boxes) stays in this script's memory
and its ``--json``.

Pipeline per tree and dataset, each step a CLI call: the labels as given are written as a copy,
imported (``import DIR --format voc --voc-origin 0 --classes ...``), predicted with the shipped
model (``predict NAME --model M``), scored (``score NAME --pred-field predictions --out DIR``,
pixels on). The predictions are read back from the store once and given to every other copy
with ``predict NAME --from-file preds.json --format coco`` (the images never change, so the
detector's output is the same; checked: a copy under the same names scores identically either
way). The labels as given are scored under ``--given-copies`` namings (3 by default), because
file names alone can move a tree's results (the order of the records feeds its calibration's
random draws). Then per seed: copy, import, predictions from the file, score;
``DIR/images.csv`` (image scores) and ``DIR/scores.json`` (issues, run summary) are read.

Metrics (per copy; tables show the mean and the min-max over seeds)
  * AP: average precision (sklearn ``average_precision_score``; tied scores form one threshold) of
    ranking the corrupted images above the clean ones by the image score of ``images.csv``.
  * per type ``recall@K``: the share of that type's corrupted images among the K highest image
    scores, K = the number of corrupted images of the copy (ties at the cut shared out, i.e. the
    expectation over random tie-breaking).
  * per type AP: AP of that type's corrupted images against the clean images only.
  * in queues: the share of corrupted images (overall and per type) that have an issue with
    ``p >= queue_min_p`` of ``scores.json`` (the default review queues). n/a for a tree whose
    scores.json has no ``queue_min_p`` (before calibrated probabilities).
  * flagged as given: the share of images of a labels-as-given copy with such an issue (per naming).
  * renamed: Spearman correlation of the image scores of the first labels-as-given copy with those
    of each other naming (1.0: file names do not matter).
  * expected - given vs injected: ``expected_label_errors`` of the copy's scores.json minus the mean
    over the namings of the labels as given, beside the number of injected errors. n/a when
    scores.json has no ``expected_label_errors``.
  * truth ECE (synthetic data only, whose labels are exact): each issue about the labels (one that
    names a box, or has a ``pred_box`` in its data; pixel and image-level issues are left out) is
    real when it points at an injected error: it names the corrupted box (swap, badloc, spurious,
    merged, degenerate: the box index in the copy), or, for a dropped box, it names no box and
    its ``pred_box`` has IoU >= 0.5 with the dropped box. ECE over 10 equal-width bins of the
    issue's score: sum over bins of (share of issues in the bin) x |mean score - share real|.
    Also given for the labels as given (no issue is real there; per naming). A tree whose scores
    are not probabilities (no ``queue_min_p``) gets the number marked with ``*``: its scores are
    ranks, not p.

    git worktree add --detach /tmp/tree-ece0d55 ece0d55
    python scripts/bench/bench_errors.py --tree . /tmp/tree-ece0d55 --seeds 10 --json /tmp/bench_errors.json
    python scripts/bench/bench_errors.py --combine /tmp/a.json /tmp/b.json   # tables from saved runs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
NEU_DET = REPO.parent / "shared" / "data" / "neu-det"
TYPES = ("swap", "badloc", "dropped", "spurious", "merged", "degenerate")
PLACE_ORDER = ("merged", "dropped", "badloc", "swap", "degenerate", "spurious")  # scarce first
MODEL = {"neu": "neu-det", "synth": "synth"}


# ----------------------------------------------------------------------------------------- data

@dataclass
class Img:
    src: Path
    w: int
    h: int
    boxes: np.ndarray  # (n, 4) xyxy pixels of the real image, 0-based, float
    cls: list[str]


@dataclass
class Err:
    image: int  # index into the dataset's images
    type: str
    box: int | None  # index in the corrupted copy's annotation file (None: dropped)
    original: list = field(default_factory=list)  # the true box(es) involved
    original_class: list = field(default_factory=list)
    new: list | None = None
    new_class: str | None = None


def image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def load_neu(root: Path) -> tuple[list[Img], list[str]]:
    """The NEU-DET dev images the shipped neu-det detector did not train on, boxes from the XMLs."""
    listed = REPO / "src" / "cvcurate" / "weights" / "neu-det.train-images.txt"
    trained = {ln.strip() for ln in listed.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    by_stem = {p.stem: p for p in (root / "images").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    out = []
    for xml in sorted((root / "annotations").glob("*.xml")):
        img = by_stem.get(xml.stem)
        if img is None:
            continue
        if hashlib.sha256(img.read_bytes()).hexdigest()[:16] in trained:
            continue
        w, h = image_size(img)
        r = ET.parse(xml).getroot()
        fw = float(r.findtext("size/width") or w)
        fh = float(r.findtext("size/height") or h)
        sx, sy = w / fw, h / fh
        boxes, cls = [], []
        for o in r.iter("object"):
            bb = o.find("bndbox")
            x1, y1, x2, y2 = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            x1, y1 = x1 - 1, y1 - 1  # 1-based inclusive pixels
            if x2 - x1 <= 1:  # at most 1 px wide in the file's own frame: zero width (as an importer keeps it)
                x2 = x1
            if y2 - y1 <= 1:
                y2 = y1
            boxes.append([x1 * sx, y1 * sy, x2 * sx, y2 * sy])
            cls.append(o.findtext("name").strip())
        out.append(Img(img, w, h, np.array(boxes, float).reshape(-1, 4), cls))
    return out, sorted({c for im in out for c in im.cls})


def load_synth(folder: Path) -> tuple[list[Img], list[str]]:
    doc = json.loads((folder / "coco" / "labels.json").read_text())
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    per: dict[int, list] = {}
    for a in doc["annotations"]:
        per.setdefault(a["image_id"], []).append(a)
    out = []
    for im in doc["images"]:
        anns = per.get(im["id"], [])
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        out.append(Img(folder / "images" / im["file_name"], int(im["width"]), int(im["height"]),
                       np.array(boxes, float).reshape(-1, 4), [cats[a["category_id"]] for a in anns]))
    return out, [cats[k] for k in sorted(cats)]


# ------------------------------------------------------------------------------ error generator

def box_iou(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def usable(im: Img) -> list[int]:
    wh = im.boxes[:, 2:] - im.boxes[:, :2]
    return [int(k) for k in np.flatnonzero((wh >= 2).all(axis=1))]


def nearest_same_class_pair(im: Img) -> tuple[int, int] | None:
    ok = usable(im)
    c = (im.boxes[:, :2] + im.boxes[:, 2:]) / 2
    best, pair = np.inf, None
    for a in ok:
        for b in ok:
            if b > a and im.cls[a] == im.cls[b]:
                d = float(np.sum((c[a] - c[b]) ** 2))
                if d < best:
                    best, pair = d, (a, b)
    return pair


def _insert(im: Img, pos: int, box, cls: str) -> Img:
    boxes = np.insert(im.boxes, pos, np.asarray(box, float), axis=0)
    return Img(im.src, im.w, im.h, boxes, im.cls[:pos] + [cls] + im.cls[pos:])


def apply_one(kind: str, i: int, images: list[Img], classes: list[str], rng) -> tuple[Img, Err] | None:
    """``kind`` applied to image ``i`` (a new Img) and its truth; None when it does not apply."""
    im = images[i]
    ok = usable(im)
    if kind == "dropped":
        if len(im.boxes) < 2:
            return None
        k = int(rng.integers(len(im.boxes)))
        keep = [j for j in range(len(im.boxes)) if j != k]
        return (Img(im.src, im.w, im.h, im.boxes[keep], [im.cls[j] for j in keep]),
                Err(i, kind, None, [im.boxes[k].tolist()], [im.cls[k]]))
    if kind == "merged":
        pair = nearest_same_class_pair(im)
        if pair is None:
            return None
        a, b = pair
        u = np.concatenate([np.minimum(im.boxes[a, :2], im.boxes[b, :2]), np.maximum(im.boxes[a, 2:], im.boxes[b, 2:])])
        uw, uh = u[2] - u[0], u[3] - u[1]
        s = rng.uniform(0.03, 0.10, 4) * np.array([uw, uh, uw, uh])
        new = u + s * np.array([1, 1, -1, -1])
        keep = [j for j in range(len(im.boxes)) if j not in (a, b)]
        rest = Img(im.src, im.w, im.h, im.boxes[keep], [im.cls[j] for j in keep])
        pos = int(rng.integers(len(keep) + 1))
        return (_insert(rest, pos, new, im.cls[a]),
                Err(i, kind, pos, [im.boxes[a].tolist(), im.boxes[b].tolist()], [im.cls[a], im.cls[b]],
                    new.tolist(), im.cls[a]))
    if kind == "spurious":
        donors = [j for j in range(len(images)) if j != i and usable(images[j])]
        for _ in range(50):
            d = images[int(rng.choice(donors))]
            k = int(rng.choice(usable(d)))
            bw, bh = d.boxes[k, 2] - d.boxes[k, 0], d.boxes[k, 3] - d.boxes[k, 1]
            if bw > im.w or bh > im.h:
                continue
            for _ in range(40):
                x, y = rng.uniform(0, im.w - bw), rng.uniform(0, im.h - bh)
                new = np.array([x, y, x + bw, y + bh])
                if all(box_iou(new, b) < 0.3 for b in im.boxes):
                    pos = int(rng.integers(len(im.boxes) + 1))
                    return _insert(im, pos, new, d.cls[k]), Err(i, kind, pos, [], [], new.tolist(), d.cls[k])
        return None
    if not ok:
        return None
    k = int(rng.choice(ok))
    box = im.boxes[k].copy()
    err = Err(i, kind, k, [box.tolist()], [im.cls[k]])
    boxes, cls = im.boxes.copy(), list(im.cls)
    if kind == "swap":
        cls[k] = str(rng.choice([c for c in classes if c != im.cls[k]]))
        err.new, err.new_class = box.tolist(), cls[k]
    elif kind == "badloc":
        bw, bh = box[2] - box[0], box[3] - box[1]
        for _ in range(2000):
            new = box + rng.uniform(-0.6, 0.6, 4) * np.array([bw, bh, bw, bh])
            new = np.clip(new, 0, [im.w, im.h, im.w, im.h])
            if new[2] - new[0] >= 2 and new[3] - new[1] >= 2 and 0.3 <= box_iou(new, box) <= 0.6:
                break
        else:
            return None
        boxes[k] = new
        err.new, err.new_class = new.tolist(), cls[k]
    elif kind == "degenerate":
        ax = int(rng.integers(2))
        c, side = (box[ax] + box[ax + 2]) / 2, rng.uniform(0, 0.9)
        boxes[k, ax], boxes[k, ax + 2] = c - side / 2, c + side / 2
        err.new, err.new_class = boxes[k].tolist(), cls[k]
    else:
        raise ValueError(kind)
    return Img(im.src, im.w, im.h, boxes, cls), err


def inject(images: list[Img], classes: list[str], rate: float, seed: int) -> tuple[list[Img], list[Err]]:
    """A corrupted copy of ``images`` (one error on ``rate`` of them, types balanced) and its truth."""
    rng = np.random.default_rng([seed, 20261203])
    n = max(1, int(round(rate * len(images))))
    kinds = list(TYPES) * (n // len(TYPES)) + list(rng.choice(TYPES, n % len(TYPES), replace=False))
    kinds.sort(key=PLACE_ORDER.index)
    order = [int(j) for j in rng.permutation(len(images))]
    out, errors, used = list(images), [], set()
    for kind in kinds:
        for i in order:
            if i in used:
                continue
            got = apply_one(kind, i, images, classes, rng)
            if got is not None:
                out[i], e = got
                errors.append(e)
                used.add(i)
                break
        else:
            print(f"warning: no image takes a {kind} error (seed {seed})", file=sys.stderr)
    return out, errors


# ---------------------------------------------------------------------------------- the copies

def write_copy(images: list[Img], folder: Path, seed_key) -> list[str]:
    """A VOC folder (images/, annotations/) with a random id per image; returns the ids."""
    rng = np.random.default_rng([*seed_key, 777])
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < len(images):
        s = "%012x" % int(rng.integers(0, 2 ** 48))
        if s not in seen:
            seen.add(s)
            ids.append(s)
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    for im, name in zip(images, ids):
        fname = name + im.src.suffix.lower()
        shutil.copyfile(im.src, folder / "images" / fname)  # a copy: a symlink would be resolved to its name
        objs = "".join(
            f"<object><name>{c}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
            f"<bndbox><xmin>{b[0]:.4f}</xmin><ymin>{b[1]:.4f}</ymin><xmax>{b[2]:.4f}</xmax><ymax>{b[3]:.4f}</ymax>"
            f"</bndbox></object>\n" for b, c in zip(im.boxes, im.cls))
        (folder / "annotations" / f"{name}.xml").write_text(
            f"<annotation><folder>images</folder><filename>{fname}</filename><size><width>{im.w}</width>"
            f"<height>{im.h}</height><depth>3</depth></size><segmented>0</segmented>\n{objs}</annotation>\n")
    return ids


class Cli:
    """One source tree's command line, on the private database."""

    def __init__(self, tree: Path, work: Path):
        self.tree, self.work = tree, work
        self.env = {**os.environ, "PYTHONPATH": str(tree / "src"), "CVCURATE_PROGRESS": "0",
                    "NO_ALBUMENTATIONS_UPDATE": "1"}
        self.log = work / "cli.log"

    def __call__(self, *args: str) -> float:
        t = time.perf_counter()
        cmd = [sys.executable, "-c", "from cvcurate.cli import main; main()", *args]
        p = subprocess.run(cmd, cwd=self.work, env=self.env, capture_output=True, text=True)
        with open(self.log, "a") as fh:
            fh.write(f"$ cvcurate {' '.join(args)}\n{p.stdout}{p.stderr}\n")
        if p.returncode != 0:
            raise RuntimeError(f"cvcurate {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-3000:]}")
        return time.perf_counter() - t

    def where(self) -> str:
        p = subprocess.run([sys.executable, "-c", "import cvcurate; print(cvcurate.__file__)"], env=self.env,
                           capture_output=True, text=True, check=True)
        return p.stdout.strip()


def git_id(tree: Path) -> str:
    def g(*a):
        return subprocess.run(["git", "-C", str(tree), *a], capture_output=True, text=True).stdout.strip()
    rev = g("rev-parse", "HEAD")
    dirty = g("status", "--porcelain", "--", "src", "configs")
    return rev + (" (uncommitted changes in src/ or configs/)" if dirty else "")


def read_run(out: Path) -> tuple[dict[str, float], dict]:
    import csv

    with open(out / "images.csv") as fh:
        scores = {Path(r["filepath"]).stem: float(r["score"]) for r in csv.DictReader(fh)}
    return scores, json.loads((out / "scores.json").read_text())


def read_predictions(name: str, images: list[Img], ids: list[str]) -> list[list[tuple]]:
    """The predictions the CLI stored for dataset ``name``, per image, in absolute pixels."""
    import fiftyone as fo

    ds = fo.load_dataset(name)
    by_id = {s: k for k, s in enumerate(ids)}
    out: list[list[tuple]] = [[] for _ in images]
    for fp, dets in zip(ds.values("filepath"), ds.values("predictions.detections")):
        k = by_id[Path(fp).stem]
        w, h = images[k].w, images[k].h
        for d in dets or []:
            x, y, bw, bh = d.bounding_box
            out[k].append((d.label, [x * w, y * h, bw * w, bh * h], float(d.confidence)))
    return out


def write_predictions(path: Path, preds: list[list[tuple]], images: list[Img], ids: list[str]) -> None:
    rows = [{"file_name": s + images[k].src.suffix.lower(), "category_name": c, "bbox": b, "score": p,
             **(x[0] if x else {})} for k, s in enumerate(ids) for c, b, p, *x in preds[k]]
    path.write_text(json.dumps(rows))


# -------------------------------------------------------------------------------------- metrics

def ap(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s)) if y.any() and (~y).any() else float("nan")


def recall_at_k(s: np.ndarray, corrupted: np.ndarray, member: np.ndarray) -> float:
    """Expected share of ``member`` images among the K = corrupted.sum() highest scores (ties shared)."""
    k = int(corrupted.sum())
    if not member.any():
        return float("nan")
    cut = np.sort(s)[::-1][k - 1]
    above = s > cut
    tied = s == cut
    frac = (k - above.sum()) / tied.sum()
    return float((above & member).sum() + frac * (tied & member).sum()) / member.sum()


def label_issues(doc: dict) -> list[dict]:
    return [i for i in doc["issues"] if i.get("box") is not None or "pred_box" in (i.get("data") or {})]


def truth_ece(doc: dict, errors: list[Err], ids: list[str]) -> float:
    by = {}
    for e in errors:
        by.setdefault(ids[e.image], []).append(e)
    ps, ys = [], []
    for iss in label_issues(doc):
        real = False
        for e in by.get(Path(iss["filepath"]).stem, []):
            if e.type == "dropped":
                pb = (iss.get("data") or {}).get("pred_box")
                real |= iss.get("box") is None and pb is not None and box_iou(pb, e.original[0]) >= 0.5
            else:
                real |= iss.get("box") == e.box
        ps.append(float(iss["score"]))
        ys.append(real)
    if not ps:
        return float("nan")
    p, y = np.clip(np.array(ps), 0, 1), np.array(ys, float)
    b = np.minimum((p * 10).astype(int), 9)
    return float(sum((b == k).mean() * abs(p[b == k].mean() - y[b == k].mean()) for k in range(10) if (b == k).any()))


def flagged_images(doc: dict) -> set[str] | None:
    if "queue_min_p" not in doc:
        return None
    return {Path(i["filepath"]).stem for i in doc["issues"] if float(i["score"]) >= float(doc["queue_min_p"])}


def copy_metrics(scores: dict[str, float], doc: dict, given: dict, errors: list[Err], ids: list[str],
                 exact: bool) -> dict:
    s = np.array([scores[x] for x in ids])
    corrupted = np.zeros(len(ids), bool)
    typ = np.array([""] * len(ids), dtype=object)
    for e in errors:
        corrupted[e.image] = True
        typ[e.image] = e.type
    m: dict = {"injected": int(corrupted.sum()), "ap": ap(corrupted, s), "types": {}}
    fl = flagged_images(doc)
    for t in TYPES:
        mem = typ == t
        sel = mem | ~corrupted
        m["types"][t] = {"n": int(mem.sum()), "recall_at_k": recall_at_k(s, corrupted, mem),
                         "ap": ap(mem[sel], s[sel]),
                         "in_queues": (float(np.mean([ids[j] in fl for j in np.flatnonzero(mem)]))
                                       if fl is not None and mem.any() else None)}
    m["recall_at_k"] = recall_at_k(s, corrupted, corrupted)
    m["in_queues"] = float(np.mean([ids[j] in fl for j in np.flatnonzero(corrupted)])) if fl is not None else None
    m["clean_in_queues"] = (float(np.mean([ids[j] in fl for j in np.flatnonzero(~corrupted)]))
                            if fl is not None else None)
    if "expected_label_errors" in doc and "expected_label_errors" in given:
        m["expected_minus_given"] = float(doc["expected_label_errors"]) - float(given["expected_label_errors"])
    else:
        m["expected_minus_given"] = None
    m["truth_ece"] = truth_ece(doc, errors, ids) if exact else None
    m["p"] = "queue_min_p" in doc
    return m


# ------------------------------------------------------------------------------------ the runs

def load_predictions(path: Path, images: list[Img]) -> list[list[tuple]]:
    """Predictions made elsewhere (``bench_kfold.py``'s out-of-fold file: COCO-style rows with the
    original file names and absolute ``bbox`` x, y, w, h), per image of ``images``; a row's
    ``flip_iou`` and ``flip_conf`` (``train --folds K --flip-check``) are kept."""
    by_name = {im.src.name: k for k, im in enumerate(images)}
    out: list[list[tuple]] = [[] for _ in images]
    for row in json.loads(path.read_text()):
        k = by_name.get(row["file_name"])
        if k is not None:
            out[k].append((row["category_name"], [float(v) for v in row["bbox"]], float(row["score"]),
                           {x: float(row[x]) for x in ("flip_iou", "flip_conf") if x in row}))
    if not any(out):
        raise SystemExit(f"{path}: no prediction for any benchmark image")
    return out


def run_dataset(cli: Cli, tag: str, ds: str, images: list[Img], classes: list[str], seeds: list[int],
                rate: float, tmp: Path, keep: bool = False, given_copies: int = 3,
                preds_file: Path | None = None, evidence: str = "model") -> dict:
    exact = ds == "synth"
    cls_arg = ",".join(classes)
    digest = hashlib.sha256(json.dumps([[hashlib.sha256(im.src.read_bytes()).hexdigest()[:16],
                                         np.round(im.boxes, 3).tolist(), im.cls] for im in images]).encode())
    res: dict = {"images": len(images), "boxes": int(sum(len(im.boxes) for im in images)),
                 "data_sha256": digest.hexdigest()[:16], "copies": []}  # the same data for every tree

    def one(name: str, imgs: list[Img], key, preds_from: list | None) -> tuple[list[str], dict, dict, dict]:
        folder = tmp / name
        ids = write_copy(imgs, folder / "data", key)
        t = {"import": cli("import", str(folder / "data"), "--name", name, "--format", "voc", "--voc-origin", "0",
                           "--classes", cls_arg, "--overwrite", "--report", str(folder / "import.json"))}
        pf_arg = ["--pred-field", "predictions"]
        if evidence == "none":  # the model-free checks alone
            pf_arg = []
        elif evidence.startswith("agnostic:"):  # every copy predicted itself: its classes come from its labels
            t["predict"] = cli("predict", name, "--model", evidence.split(":", 1)[1], "--class-agnostic",
                               "--pred-field", "predictions")
        elif preds_from is None or evidence == "flip":  # a file's predictions carry no flip check: every copy predicts
            t["predict"] = cli("predict", name, "--model", MODEL[ds], "--pred-field", "predictions",
                               *(["--flip-check"] if evidence == "flip" else []))
        else:
            pf = folder / "predictions.json"
            write_predictions(pf, preds_from, imgs, ids)
            t["predict"] = cli("predict", name, "--from-file", str(pf), "--format", "coco", "--pred-field", "predictions")
        t["score"] = cli("score", name, *pf_arg, "--out", str(folder / "scores"), "--pixels")
        scores, doc = read_run(folder / "scores")
        return ids, scores, doc, t

    preds: list | None = load_predictions(preds_file, images) if preds_file is not None else None
    res["predictions"] = str(preds_file) if preds_file is not None else f"--model {MODEL[ds]}"
    if evidence == "flip":
        res["predictions"] += " --flip-check"
    elif evidence != "model":
        res["predictions"] = ("none: model-free checks only" if evidence == "none" else
                              f"class-agnostic {evidence.split(':', 1)[1]}, every copy predicted")
    given = []  # the labels as given, under `given_copies` draws of file names
    for g in range(given_copies):
        name_g = f"be_{tag}_{ds}_given{g}"
        ids_g, sc_g, doc_g, t_g = one(name_g, images, (g, 1), preds)  # None at first: the model predicts
        if g == 0 and preds is None and evidence != "none":
            preds = read_predictions(name_g, images, ids_g)
        fl_g = flagged_images(doc_g)
        given.append({"seconds": t_g, "expected_label_errors": doc_g.get("expected_label_errors"),
                      "flagged_share": (len(fl_g) / len(images)) if fl_g is not None else None,
                      "issues": len(doc_g["issues"]), "queue_min_p": doc_g.get("queue_min_p"),
                      "truth_ece": truth_ece(doc_g, [], ids_g) if exact else None,
                      "scores": [sc_g[x] for x in ids_g]})
        if not keep:
            shutil.rmtree(tmp / name_g / "data", ignore_errors=True)
        print(f"  {ds} labels as given, naming {g}: {len(images)} images, {res['boxes']} boxes; "
              + ", ".join(f"{k} {v:.1f} s" for k, v in t_g.items()), flush=True)
    from scipy.stats import spearmanr

    exp = [x["expected_label_errors"] for x in given]
    res["given"] = {"copies": given, "predictions_per_image": float(np.mean([len(p) for p in preds])) if preds else 0.0,
                    "expected_label_errors": float(np.mean(exp)) if None not in exp else None,
                    "spearman_renamed": [float(spearmanr(given[0]["scores"], x["scores"])[0]) for x in given[1:]]}
    doc0 = {"expected_label_errors": res["given"]["expected_label_errors"]} if None not in exp else {}
    for seed in seeds:
        imgs, errors = inject(images, classes, rate, seed)
        name = f"be_{tag}_{ds}_{seed}"
        t = time.perf_counter()
        ids, sc, doc, tt = one(name, imgs, (seed, 2), preds)
        m = copy_metrics(sc, doc, doc0, errors, ids, exact)
        m.update(seed=seed, seconds={**tt, "total": time.perf_counter() - t},
                 truth=[{"image": ids[e.image], "type": e.type, "box": e.box, "original": e.original,
                         "original_class": e.original_class, "new": e.new, "new_class": e.new_class}
                        for e in errors])
        res["copies"].append(m)
        if not keep:
            shutil.rmtree(tmp / name / "data", ignore_errors=True)
        print(f"  {ds} seed {seed}: AP {m['ap']:.3f}, recall@K {m['recall_at_k']:.3f}, "
              f"{m['seconds']['total']:.1f} s", flush=True)
    return res


# -------------------------------------------------------------------------------------- tables

def _stat(vals: list) -> str:
    v = [x for x in vals if x is not None and not (isinstance(x, float) and np.isnan(x))]
    if not v:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.3f}"
    return f"{np.mean(v):.3f} ({min(v):.2f}-{max(v):.2f})"


def rows_for(res: dict, ds: str) -> dict[str, str]:
    c = res["copies"]
    g = res["given"]
    star = "" if all(x["p"] for x in c) else "*"
    r = {"AP, corrupted vs clean images": _stat([x["ap"] for x in c]),
         "recall@K, all types": _stat([x["recall_at_k"] for x in c])}
    for t in TYPES:
        n = sum(x["types"][t]["n"] for x in c)
        r[f"{t} ({n}): recall@K / AP"] = (_stat([x["types"][t]["recall_at_k"] for x in c]) + " / "
                                          + _stat([x["types"][t]["ap"] for x in c]))
    r["corrupted images in queues"] = _stat([x["in_queues"] for x in c])
    for t in TYPES:
        r[f"  {t} in queues"] = _stat([x["types"][t]["in_queues"] for x in c])
    r["clean images of the copies in queues"] = _stat([x["clean_in_queues"] for x in c])
    gc = g["copies"]
    r[f"labels as given ({len(gc)} namings): images in queues"] = _stat([x["flagged_share"] for x in gc])
    r[f"labels as given ({len(gc)} namings): expected label errors"] = _stat([x["expected_label_errors"] for x in gc])
    r["labels as given renamed: Spearman of image scores"] = _stat(g["spearman_renamed"])
    inj = [x["injected"] for x in c]
    r["expected - given (vs injected)"] = (_stat([x["expected_minus_given"] for x in c])
                                           + f" (vs {min(inj)}" + ("" if min(inj) == max(inj) else f"-{max(inj)}") + ")")
    if ds == "synth":
        r["truth ECE, corrupted copies"] = _stat([x["truth_ece"] for x in c]) + (star if c else "")
        r["truth ECE, labels as given"] = _stat([x["truth_ece"] for x in gc]) + star
    r["seconds per copy (import / predict from file / score)"] = " / ".join(
        f"{np.mean([x['seconds'].get(k, 0.0) for x in c]):.1f}" for k in ("import", "predict", "score")) if c else "n/a"
    return r


def print_tables(runs: list[dict]) -> None:
    for ds in ("neu", "synth"):
        have = [(r["label"], r["datasets"][ds]) for r in runs if ds in r["datasets"]]
        if not have:
            continue
        first = have[0][1]
        seeds = sorted({x["seed"] for _, res in have for x in res["copies"]})
        same = len({res.get("data_sha256") for _, res in have}) == 1
        print(f"\n{'NEU-DET held-out' if ds == 'neu' else 'synthetic'}: {first['images']} images, {first['boxes']} boxes, "
              f"seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} copies), mean (min-max) over seeds; "
              + ("the same data and errors for every tree" if same else "WARNING: the trees saw different data"))
        cols = [rows_for(res, ds) for _, res in have]
        print("| metric | " + " | ".join(lbl + (f" ({res['predictions']})" if "predictions" in res and
                                                 not res["predictions"].startswith("--model") else "")
                                           for lbl, res in have) + " |")
        print("|---|" + "---|" * len(have))
        for key in cols[0]:
            print(f"| {key} | " + " | ".join(c.get(key, "n/a") for c in cols) + " |")


# ----------------------------------------------------------------------------------------- main

def main() -> int:
    ap_ = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                  epilog="\n".join(__doc__.splitlines()[1:]))
    ap_.add_argument("--tree", type=Path, nargs="+", default=[REPO],
                     help="source tree(s) to measure (a git worktree of an old commit); default this repo")
    ap_.add_argument("--datasets", nargs="+", choices=["neu", "synth"], default=["neu", "synth"])
    ap_.add_argument("--seeds", type=int, default=10, help="error seeds 0..N-1 per dataset (default 10)")
    ap_.add_argument("--first-seed", type=int, default=0)
    ap_.add_argument("--rate", type=float, default=0.1)
    ap_.add_argument("--data", type=Path, default=NEU_DET, help="NEU-DET dev split folder")
    ap_.add_argument("--synth-images", type=int, default=300)
    ap_.add_argument("--synth-seed", type=int, default=31, help="seed of the fresh synthetic data (the synth "
                     "detector trained on seed 0)")
    ap_.add_argument("--json", type=Path, help="write every copy's metrics and truth here")
    ap_.add_argument("--combine", type=Path, nargs="+", help="print the tables of saved --json files, run nothing")
    ap_.add_argument("--given-copies", type=int, default=3, help="how many namings of the labels as given to "
                     "score (their spread shows how much file names alone move the results)")
    ap_.add_argument("--neu-predictions", type=Path, default=None,
                     help="NEU-DET predictions made elsewhere instead of --model neu-det (e.g. bench_kfold.py's "
                          "out-of-fold oof_predictions.json: COCO-style rows with the original file names)")
    ap_.add_argument("--evidence", default="model", help="model (the dataset's shipped detector, default), "
                     "flip (the same, predict --flip-check: a tree that has it), "
                     "none (the model-free checks alone), or agnostic:MODEL (predict --model MODEL --class-agnostic "
                     "on every copy: how far a detector of other classes helps)")
    ap_.add_argument("--keep", action="store_true", help="keep the work folder (copies' scores, CLI log) and say where")
    args = ap_.parse_args()
    if args.evidence not in ("model", "flip", "none") and not args.evidence.startswith("agnostic:"):
        ap_.error(f"--evidence: model, flip, none or agnostic:MODEL, got {args.evidence!r}")
    if args.combine:
        runs = [r for p in args.combine for r in json.loads(p.read_text())["runs"]]
        print_tables(runs)
        return 0
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    args.given_copies = max(1, args.given_copies)  # the first one gives the predictions
    sys.path.insert(0, str(REPO / "src"))
    from cvcurate.store import start_private_database  # the only cvcurate code used in this process

    tmp = Path(tempfile.mkdtemp(prefix="cvcurate-bench-errors-"))
    db = start_private_database(tmp / "db")
    doc: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                 "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                          if k not in ("tree", "combine")}, "runs": []}
    try:
        data: dict = {}
        if "neu" in args.datasets:
            if (args.data / "images").is_dir():
                data["neu"] = load_neu(args.data)
                print(f"NEU-DET: {len(data['neu'][0])} images the shipped neu-det detector did not train on")
            else:
                print(f"NEU-DET skipped: {args.data} is absent")
        for tree in args.tree:
            tree = tree.resolve()
            work = tmp / f"tree{len(doc['runs'])}"
            work.mkdir()
            cli = Cli(tree, work)
            rev = git_id(tree)
            label = f"{tree.name} @ {rev[:7]}"
            print(f"\ntree {tree}: {rev}; cvcurate from {cli.where()}", flush=True)
            run = {"tree": str(tree), "commit": rev, "label": label, "datasets": {}}
            doc["runs"].append(run)
            for ds in args.datasets:
                if ds == "synth":
                    folder = work / "synth_source"
                    cli("synth", str(folder), "--images", str(args.synth_images), "--seed", str(args.synth_seed))
                    images, classes = load_synth(folder)
                elif ds in data:
                    images, classes = data[ds]
                else:
                    continue
                t = time.perf_counter()
                run["datasets"][ds] = run_dataset(cli, f"{len(doc['runs'])}", ds, images, classes, seeds, args.rate, work,
                                                  args.keep, args.given_copies,
                                                  args.neu_predictions if ds == "neu" else None, args.evidence)
                run["datasets"][ds]["seconds"] = time.perf_counter() - t
                if args.json:
                    args.json.write_text(json.dumps(doc, indent=1, default=float))
        print_tables(doc["runs"])
        if args.json:
            args.json.write_text(json.dumps(doc, indent=1, default=float))
            print(f"\nwrote {args.json}")
    finally:
        db.terminate()
        db.wait(timeout=30)
        if args.keep:
            shutil.rmtree(tmp / "db", ignore_errors=True)
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
