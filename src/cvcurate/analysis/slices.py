"""Label-issue rate per slice, with Wilson intervals, and the class-balance plan. Pure numpy.

Slice kinds and how a box or an image falls into a slice:

* ``class``: the class of the given box. An issue without a box (an *overlooked* defect) counts
  for the class the model saw (``data["pred_class"]``) when the issue says it.
* ``box_size``: the box's area relative to its image's area, COCO-like but relative:
  ``small`` < 1 %, ``medium`` 1-10 %, ``large`` >= 10 %; boxes of zero or negative area are
  ``zero-area``. An overlooked defect counts by the size of the model's box (``data["pred_box"]``).
* ``brightness``: the image's mean grey level (0-255) in dataset tertiles (``dark`` / ``mid`` /
  ``bright``, boundaries printed in the slice name), so the three buckets are equally large on a
  dataset whose images are all grey; images that could not be measured (NaN) are ``unmeasured``.
* ``split``: the record's split (``(no split)`` when unset).
* ``source``: the import source of the image (``(unknown)`` when not recorded).

For box kinds (class, box size) a slice's images are those with a box of the slice (or an issue
counted for it) and only issues that point at the slice count; for image kinds (brightness, split,
source) every counted issue of the slice's images counts, image-level ones included.

Each issue's score is ``p``, the probability that it is a real error: a slice's ``expected`` is the
sum of ``p`` of its label errors (style remarks such as size outliers are counted as issues, not as
errors; the pieces of one split defect are one error), as the run and the gate count them
(``expected errors per 100 boxes``), and its counts and shares
take the issues with ``p >= min_p`` (the run's queue threshold). Rates, each with the counts behind
it: ``issues per 100 boxes``; ``box share`` (given boxes with
at least one issue / boxes) and ``image share`` (images with at least one issue / images), both
with a Wilson 95 % score interval. Slices are ranked by the Wilson *lower* bound of the box share
(then of the image share, then by the issue count): a slice of 3 boxes with 1 issue (33 %, interval
6-79 %) ranks below a slice of 3,000 boxes with 300 (10 %, 9-11 %), so small slices do not look
alarming by chance.

Which issues count: label issues only, i.e. every type except the pixel checks of the ``image``
queue and image duplicates (``near_duplicate``, ``leakage``), which say nothing about the labels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from ..gate import YOLO_IMAGES_PER_CLASS, YOLO_INSTANCES_PER_CLASS
from ..names import quoted
from ..types import Issue, LabelSet

Z95 = 1.959963984540054
SMALL_BELOW = 0.01  # relative box area: small below 1 % of the image
LARGE_FROM = 0.10  # large from 10 %
SLICE_KINDS = ("class", "box_size", "brightness", "split", "source")
BOX_KINDS = ("class", "box_size")
NOT_LABEL_TYPES = frozenset({"near_duplicate", "leakage"})
NO_AUGMENT = "no plan was given ('cvcurate augment NAME --dry-run' shows what it would add)"


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n`` (``(0, 1)`` when ``n == 0``)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Slice:
    kind: str
    name: str
    boxes: int
    images: int
    issues: int
    boxes_with_issues: int
    images_with_issues: int
    by_type: dict[str, int] = field(default_factory=dict)
    expected: float = 0.0  # expected number of real label errors: the sum of p of its label errors, flagged or not

    @property
    def expected_per_100_boxes(self) -> float | None:
        return 100.0 * self.expected / self.boxes if self.boxes else None

    @property
    def issues_per_100_boxes(self) -> float | None:
        return 100.0 * self.issues / self.boxes if self.boxes else None

    @property
    def box_share(self) -> float | None:
        return self.boxes_with_issues / self.boxes if self.boxes else None

    @property
    def box_ci(self) -> tuple[float, float]:
        return wilson(self.boxes_with_issues, self.boxes)

    @property
    def image_share(self) -> float | None:
        return self.images_with_issues / self.images if self.images else None

    @property
    def image_ci(self) -> tuple[float, float]:
        return wilson(self.images_with_issues, self.images)

    def sort_key(self) -> tuple[float, float, int]:
        return (-self.box_ci[0] if self.boxes else 0.0, -self.image_ci[0], -self.issues)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(issues_per_100_boxes=_round(self.issues_per_100_boxes), box_share=_round(self.box_share),
                 expected=_round(self.expected, 3), expected_per_100_boxes=_round(self.expected_per_100_boxes),
                 box_ci=[_round(v) for v in self.box_ci], image_share=_round(self.image_share),
                 image_ci=[_round(v) for v in self.image_ci])
        return d


def _round(v: float | None, nd: int = 6) -> float | None:
    return None if v is None else round(float(v), nd)


@dataclass
class SliceResult:
    overall: Slice
    kinds: dict[str, list[Slice]]  # kind -> slices, ranked (see the module docstring)
    left_out: dict[str, str]  # kind -> why it was not made
    counted_types: list[str]
    issues_not_counted: int  # issues of types that are not label issues
    issues_unmatched: int  # issues whose image is not in the labels
    brightness_edges: list[float] | None = None

    def ranked(self) -> list[Slice]:
        """Every slice of every kind, ranked."""
        return sorted((s for v in self.kinds.values() for s in v), key=Slice.sort_key)

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall.to_dict(),
                "kinds": {k: [s.to_dict() for s in v] for k, v in self.kinds.items()},
                "left_out": dict(self.left_out), "counted_types": list(self.counted_types),
                "issues_not_counted": self.issues_not_counted, "issues_unmatched": self.issues_unmatched,
                "brightness_edges": self.brightness_edges,
                "ranking": "Wilson 95% lower bound of the box share, then of the image share, then issues"}


def is_label_issue(issue_type: str, queue_of: Mapping[str, str]) -> bool:
    return issue_type not in NOT_LABEL_TYPES and queue_of.get(issue_type) != "image"


def size_bucket(rel_area: np.ndarray) -> np.ndarray:
    """``small`` / ``medium`` / ``large`` / ``zero-area`` for relative box areas."""
    rel_area = np.asarray(rel_area, dtype=np.float64)
    out = np.full(rel_area.shape, "medium", dtype=object)
    out[rel_area < SMALL_BELOW] = "small"
    out[rel_area >= LARGE_FROM] = "large"
    out[~(rel_area > 0)] = "zero-area"
    return out


SIZE_NAMES = {"small": f"small (< {SMALL_BELOW:.0%} of the image)",
              "medium": f"medium ({SMALL_BELOW:.0%}-{LARGE_FROM:.0%})",
              "large": f"large (>= {LARGE_FROM:.0%})", "zero-area": "zero-area"}


def brightness_buckets(brightness: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Per image ``dark (< a)`` / ``mid (a-b)`` / ``bright (>= b)`` by dataset tertiles."""
    b = np.asarray(brightness, dtype=np.float64)
    ok = np.isfinite(b)
    out = np.full(b.shape, "unmeasured", dtype=object)
    if not ok.any():
        return out, []
    q1, q2 = (float(v) for v in np.quantile(b[ok], [1 / 3, 2 / 3]))
    names = (f"dark (< {q1:.1f})", f"mid ({q1:.1f}-{q2:.1f})", f"bright (>= {q2:.1f})")
    idx = np.where(b < q1, 0, np.where(b < q2, 1, 2))
    for j, n in enumerate(names):
        out[ok & (idx == j)] = n
    return out, [q1, q2]


@dataclass
class _Flat:
    image: np.ndarray  # (B,) image index of each given box
    cls: np.ndarray
    rel: np.ndarray  # relative area


def flatten(labels: LabelSet) -> _Flat:
    recs = labels.records
    n = np.array([len(r.gt) for r in recs], dtype=np.int64)
    if n.sum() == 0:
        z = np.zeros(0)
        return _Flat(z.astype(np.int64), z.astype(np.int64), z)
    xyxy = np.concatenate([r.gt.xyxy for r in recs if len(r.gt)])
    cls = np.concatenate([r.gt.class_id for r in recs if len(r.gt)])
    image = np.repeat(np.arange(len(recs)), n)
    area_img = np.array([r.width * r.height for r in recs], dtype=np.float64)
    wh = xyxy[:, 2:] - xyxy[:, :2]
    rel = np.where((wh > 0).all(1), wh[:, 0] * wh[:, 1], 0.0) / area_img[image]
    return _Flat(image, cls, rel)


def compute_slices(labels: LabelSet, issues: Sequence[Issue], *, brightness: np.ndarray | None = None,
                   sources: Sequence[str | None] | None = None, queue_of: Mapping[str, str] | None = None,
                   count_types: Collection[str] | None = None, min_p: float = 0.0) -> SliceResult:
    """Label-issue rates per slice of every kind (see the module docstring).

    ``brightness``: per image mean grey level (NaN: not measured); ``sources``: per image import
    source; either None leaves its slice kind out (said in ``left_out``). ``count_types``: the
    issue types that count (default: the label issues, :func:`is_label_issue`). ``min_p``: issue
    counts and shares take the issues with ``p`` (their score) at least this (the run's queue
    threshold); every counted label error (``LABEL_ERROR_TYPES``: not a style remark) adds its
    ``p`` to the slice's expected number of real errors, the pieces of one split defect once
    (:func:`cvcurate.scoring.expected_weights`: the run's and the gate's rule, so that the overall
    slice expects what they do).
    """
    from ..scoring import LABEL_ERROR_TYPES, QUEUES, expected_weights

    if queue_of is None:
        queue_of = {t: q for q, types in QUEUES.items() for t in types}
    recs = labels.records
    n_img = len(recs)
    flat = flatten(labels)
    offsets = np.concatenate([[0], np.cumsum([len(r.gt) for r in recs])]).astype(np.int64)
    index = {r.filepath: i for i, r in enumerate(recs)}

    # one row per counted issue: image, global box (-1), class (-1), size bucket (None)
    counted = set(count_types) if count_types is not None else None
    rows_img, rows_box, rows_cls, rows_size, rows_type, rows_p, rows_w = [], [], [], [], [], [], []
    not_counted = unmatched = 0
    weights = expected_weights(issues)
    for iss, weight in zip(issues, weights):
        ok = iss.type in counted if counted is not None else is_label_issue(iss.type, queue_of)
        if not ok:
            not_counted += 1
            continue
        i = index.get(iss.filepath)
        if i is None:
            unmatched += 1
            continue
        b, c, size = -1, -1, None
        if iss.box is not None and 0 <= iss.box < offsets[i + 1] - offsets[i]:
            b = int(offsets[i] + iss.box)
            c = int(flat.cls[b])
            size = None  # taken from the box below
        else:
            pc = iss.data.get("pred_class") if iss.data else None
            if pc is not None and 0 <= int(pc) < len(labels.classes):
                c = int(pc)
            pb = iss.data.get("pred_box") if iss.data else None
            if pb is not None and len(pb) == 4:
                w, h = float(pb[2]) - float(pb[0]), float(pb[3]) - float(pb[1])
                rel = w * h / (recs[i].width * recs[i].height) if w > 0 and h > 0 else 0.0
                size = str(size_bucket(np.array([rel]))[0])
        rows_img.append(i)
        rows_box.append(b)
        rows_cls.append(c)
        rows_size.append(size)
        rows_type.append(iss.type)
        rows_p.append(float(iss.score))
        rows_w.append(weight if iss.type in LABEL_ERROR_TYPES else 0.0)
    r_img = np.array(rows_img, dtype=np.int64)
    r_box = np.array(rows_box, dtype=np.int64)
    r_type = np.array(rows_type, dtype=object)
    r_p = np.array(rows_p, dtype=np.float64)
    r_w = np.array(rows_w, dtype=np.float64)
    r_flag = r_p >= min_p

    box_size = size_bucket(flat.rel)
    r_size = np.array([s if s is not None else (box_size[b] if b >= 0 else None)
                       for s, b in zip(rows_size, rows_box)], dtype=object)
    r_cls = np.array(rows_cls, dtype=np.int64)

    def make(kind: str, name: str, box_mask: np.ndarray, row_mask: np.ndarray,
             image_mask: np.ndarray | None = None) -> Slice:
        imgs = set(np.unique(flat.image[box_mask]).tolist()) if image_mask is None else \
            set(np.flatnonzero(image_mask).tolist())
        hit_imgs = set(np.unique(r_img[row_mask]).tolist())
        expected = float(r_w[row_mask].sum()) if len(r_w) else 0.0
        row_mask = row_mask & r_flag
        hit_imgs = set(np.unique(r_img[row_mask]).tolist())
        imgs |= hit_imgs
        hb = r_box[row_mask]
        types, counts = np.unique(r_type[row_mask], return_counts=True) if row_mask.any() else ([], [])
        by_type = dict(sorted(((str(t), int(n)) for t, n in zip(types, counts)), key=lambda kv: -kv[1]))
        return Slice(kind, name, boxes=int(box_mask.sum()), images=len(imgs), issues=int(row_mask.sum()),
                     boxes_with_issues=int(len(np.unique(hb[hb >= 0]))), images_with_issues=len(hit_imgs),
                     by_type=by_type, expected=expected)

    all_rows = np.ones(len(r_img), bool)
    overall = make("all", "all", np.ones(len(flat.image), bool), all_rows, np.ones(n_img, bool))
    kinds: dict[str, list[Slice]] = {}
    left_out: dict[str, str] = {}

    # class
    out = []
    for c, name in enumerate(labels.classes):
        s = make("class", name, flat.cls == c, r_cls == c)
        if s.boxes or s.issues:
            out.append(s)
    kinds["class"] = out
    # box size
    out = []
    for key, name in SIZE_NAMES.items():
        s = make("box_size", name, box_size == key, r_size == key)
        if s.boxes or s.issues:
            out.append(s)
    kinds["box_size"] = out

    def by_image(kind: str, per_image: np.ndarray) -> list[Slice]:
        res = []
        for name in dict.fromkeys(per_image.tolist()):
            im = per_image == name
            res.append(make(kind, str(name), im[flat.image] if len(flat.image) else np.zeros(0, bool),
                            im[r_img] if len(r_img) else np.zeros(0, bool), im))
        return res

    edges = None
    if brightness is None:
        left_out["brightness"] = "no image brightness was measured"
    elif len(brightness) != n_img:
        raise ValueError(f"brightness has {len(brightness)} values for {n_img} images")
    else:
        buckets, edges = brightness_buckets(brightness)
        kinds["brightness"] = by_image("brightness", buckets)
    kinds["split"] = by_image("split", np.array([r.split or "(no split)" for r in recs], dtype=object))
    if sources is None:
        left_out["source"] = "no import source was recorded for the images"
    elif len(sources) != n_img:
        raise ValueError(f"sources has {len(sources)} values for {n_img} images")
    else:
        kinds["source"] = by_image("source", np.array([s or "(unknown)" for s in sources], dtype=object))
    for k in kinds:
        kinds[k].sort(key=Slice.sort_key)
    counted_types = sorted(set(rows_type))
    return SliceResult(overall, kinds, left_out, counted_types, not_counted, unmatched, edges)


def _pct(v: float | None, nd: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{nd}f}%"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


SLICE_COLUMNS = ("slice", "kind", "boxes", "images", "issues", "per 100 boxes", "expected errors per 100 boxes",
                 "boxes with issues (95% CI)", "images with issues (95% CI)", "top types")


def slice_row(s: Slice) -> list[str]:
    lo, hi = s.box_ci
    ilo, ihi = s.image_ci
    per100 = "-" if s.issues_per_100_boxes is None else f"{s.issues_per_100_boxes:.1f}"
    top = ", ".join(f"{t} {n}" for t, n in list(s.by_type.items())[:3]) or "-"
    exp100 = "-" if s.expected_per_100_boxes is None else f"{s.expected_per_100_boxes:.1f}"
    return [s.name, s.kind, str(s.boxes), str(s.images), str(s.issues), per100, exp100,
            f"{s.boxes_with_issues}/{s.boxes} = {_pct(s.box_share)} ({_pct(lo)}-{_pct(hi)})" if s.boxes else "-",
            f"{s.images_with_issues}/{s.images} = {_pct(s.image_share)} ({_pct(ilo)}-{_pct(ihi)})",
            top]


def slice_table_markdown(result: SliceResult, top: int = 10) -> str:
    """The ``top`` worst slices of all kinds as a Markdown table (for the report and the gate)."""
    ranked = result.ranked()[:top]
    o = result.overall
    lines = [f"Label issues per slice (top {len(ranked)} of {sum(len(v) for v in result.kinds.values())}; "
             f"ranked by the lower bound of the Wilson 95% interval of the share of boxes with an issue). "
             f"Overall: {o.issues} issues on {o.boxes} boxes "
             f"({'-' if o.issues_per_100_boxes is None else f'{o.issues_per_100_boxes:.1f}'} per 100 boxes), "
             f"{o.images_with_issues} of {o.images} images.", "",
             "| " + " | ".join(SLICE_COLUMNS) + " |", "|" + "---|" * len(SLICE_COLUMNS)]
    for s in ranked:
        lines.append("| " + " | ".join(_md(c) for c in slice_row(s)) + " |")
    if not ranked:
        lines.append("| (no slices) |" + " |" * (len(SLICE_COLUMNS) - 1))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# class balance
# ---------------------------------------------------------------------------------------------
def class_balance(labels: LabelSet, augment_plan: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Per class: images, instances, how many more reach the largest class and the YOLO rule of thumb.

    ``augment_plan`` (from the augment stage): ``{"method": str, "per_class": {class: {"images": int,
    "instances": int}}}``, the images and instances it would add; None: :data:`NO_AUGMENT`.
    """
    k = len(labels.classes)
    inst = np.zeros(k, np.int64)
    imgs = np.zeros(k, np.int64)
    for r in labels.records:
        if len(r.gt):
            ids = r.gt.class_id[(r.gt.class_id >= 0) & (r.gt.class_id < k)]
            inst += np.bincount(ids, minlength=k)
            imgs[np.unique(ids)] += 1
    max_inst = int(inst.max()) if k else 0
    max_img = int(imgs.max()) if k else 0
    largest = labels.classes[int(np.argmax(inst))] if k else None
    per = (augment_plan or {}).get("per_class", {}) if augment_plan else {}
    rows = []
    for c, name in enumerate(labels.classes):
        row = {"class": name, "images": int(imgs[c]), "instances": int(inst[c]),
               "to_largest_images": max_img - int(imgs[c]), "to_largest_instances": max_inst - int(inst[c]),
               "to_rule_images": max(0, YOLO_IMAGES_PER_CLASS - int(imgs[c])),
               "to_rule_instances": max(0, YOLO_INSTANCES_PER_CLASS - int(inst[c]))}
        if augment_plan is not None:
            add = per.get(name, {}) or {}
            row["augment_images"] = int(add.get("images", 0))
            row["augment_instances"] = int(add.get("instances", 0))
            row["after_images"] = row["images"] + row["augment_images"]
            row["after_instances"] = row["instances"] + row["augment_instances"]
        rows.append(row)
    if augment_plan is None:
        augment = NO_AUGMENT
    else:
        tot_i = sum(r["augment_images"] for r in rows)
        tot_n = sum(r["augment_instances"] for r in rows)
        under = [r["class"] for r in rows if r["after_images"] < YOLO_IMAGES_PER_CLASS
                 or r["after_instances"] < YOLO_INSTANCES_PER_CLASS]
        augment = (f"the augment stage ({augment_plan.get('method', 'augment')}) would add {tot_i} images and "
                   f"{tot_n} instances; after it {len(under)} of {k} classes would still be under the rule of thumb"
                   + (f": {', '.join(quoted(u) for u in under)}" if under else ""))
    under = [r["class"] for r in rows if r["to_rule_images"] or r["to_rule_instances"]]
    return {"rule_images": YOLO_IMAGES_PER_CLASS, "rule_instances": YOLO_INSTANCES_PER_CLASS,
            "largest_class": largest, "largest_images": max_img, "largest_instances": max_inst,
            "classes": rows, "under_rule": under, "augment": augment}


def class_balance_markdown(plan: Mapping[str, Any]) -> str:
    cols = ["class", "images", "instances", "images to largest", "instances to largest",
            f"images to {plan['rule_images']:,}", f"instances to {plan['rule_instances']:,}"]
    aug = plan["classes"] and "augment_images" in plan["classes"][0]
    if aug:
        cols += ["augment adds (images / instances)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in plan["classes"]:
        cells = [_md(r["class"]), r["images"], r["instances"], r["to_largest_images"], r["to_largest_instances"],
                 r["to_rule_images"], r["to_rule_instances"]]
        if aug:
            cells.append(f"{r['augment_images']} / {r['augment_instances']}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
