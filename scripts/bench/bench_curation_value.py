#!/usr/bin/env python
"""What curation buys in mAP (issue #34): train on noisy labels, on curated ones, on the truth.

Per seed, on synthetic steel data with known truth (``cvcurate.synth``):

* the truth: the generator's exact boxes (one box per defect, "whole");
* two boxing styles mixed in one class: in ``--pieces-share`` of the images that hold it, each of
  its boxes at least 24 px wide is boxed as three vertical strips instead (as NEU-DET's pitted
  surfaces often are);
* ``--rate`` of the images then get one error each from the independent injector of
  ``bench_errors.py`` (not ``cvcurate.corrupt``, which the calibration learns from): swap, badly
  placed, dropped, spurious, merged, degenerate boxes.

Three kinds of training labels, the same detector configuration and training budget each (``--epochs``,
the same for every variant whatever else runs on the machine; or ``--budget-min`` of wall time), and
mAP@0.5 of each on a clean test set generated apart:

  (a) ``noisy``: the labels above as they are;
  (b) ``curated@N``: cvcurate's loop with a simulated reviewer: predict with the shipped ``synth``
      detector (trained on other images of the generator), score, and in the top ``N`` % of the
      images by score confirm every proposed fix that brings the image's boxes closer to the truth
      (F1 at IoU 0.5, class-aware, one fix at a time), apply, then adopt the "whole" convention for
      the mixed class (one decision for the whole dataset, as a team lead makes it);
  (c) ``true``: the truth.

The share of the gap closed at N: ``(b - a) / (c - a)``. Goal (#34): at least half at N = 10.
Hours of CPU: every finished training is kept in ``--work``/results.json and a re-run with the
same ``--work`` skips it (run it in the background; what finished is what is reported).

    python scripts/bench/bench_curation_value.py --work /tmp/curval --seeds 0 1 2 --epochs 24

The trainings run variant-major (noisy, true and curated@10 for every seed before the other shares),
so the headline figure on all seeds is the first to finish.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("CVCURATE_PROGRESS", "0")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402


def pieces(labels, cls: int, share: float, rng):
    """``labels`` with the boxes of class ``cls`` (at least 24 px wide) in strips of three in
    ``share`` of the images that hold one."""
    from cvcurate.types import Annotations, LabelSet

    holders = [i for i, r in enumerate(labels.records) if (r.gt.class_id == cls).any()]
    chosen = set(rng.choice(holders, int(round(share * len(holders))), replace=False).tolist()) if holders else set()
    recs = []
    for i, r in enumerate(labels.records):
        if i not in chosen:
            recs.append(r)
            continue
        xyxy, cid = [], []
        for b, c in zip(r.gt.xyxy, r.gt.class_id):
            if c == cls and b[2] - b[0] >= 24:
                xs = np.linspace(b[0], b[2], 4)
                xyxy += [[xs[k], b[1], xs[k + 1], b[3]] for k in range(3)]
                cid += [c] * 3
            else:
                xyxy.append(list(b))
                cid.append(c)
        recs.append(type(r)(r.filepath, r.width, r.height, Annotations(np.array(xyxy, float).reshape(-1, 4),
                                                                          np.array(cid, np.int64)), split=r.split))
    return LabelSet(labels.classes, recs)


def f1(a_xyxy, a_cls, b_xyxy, b_cls) -> float:
    """F1 of boxes ``a`` against ``b`` at IoU 0.5, same class, greedy by IoU."""
    if not len(a_xyxy) and not len(b_xyxy):
        return 1.0
    if not len(a_xyxy) or not len(b_xyxy):
        return 0.0
    from cvcurate.boxes import box_iou

    iou = box_iou(np.asarray(a_xyxy, float), np.asarray(b_xyxy, float))
    iou[np.asarray(a_cls)[:, None] != np.asarray(b_cls)[None, :]] = 0
    hits = 0
    while iou.size and iou.max() >= 0.5:
        i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
        hits += 1
        iou[i, :] = 0
        iou[:, j] = 0
    return 2 * hits / (len(a_xyxy) + len(b_xyxy))


def curate(noisy, truth, cls_name: str, review_pct: float, name: str, work: Path) -> tuple[object, dict]:
    """The loop with a simulated reviewer (see the module docstring); the curated labels and counts."""
    import copy

    from cvcurate import decisions, store
    from cvcurate.names import FIX_FIELD
    from cvcurate.stages import apply as apply_stage
    from cvcurate.stages import review
    from cvcurate.stages.conventions import adopt
    from cvcurate.stages.predict import predict
    from cvcurate.stages.score import run_score

    if store.exists(name):
        store.delete(name)
    store.write(noisy, name)
    predict(name, model="synth")
    sc = run_score(name, out_dir=work / f"{name}_scores")
    recs = sc.result.labels.records
    top = [recs[k] for k in sc.result.ranking()[: int(math.ceil(review_pct / 100 * len(recs)))]]
    true_by_path = {r.filepath: r.gt for r in truth.records}
    classes = noisy.classes
    fixes = store.get_detections(name, FIX_FIELD, [r.sample_id for r in top])
    gts = store.get_detections(name, store.GT_FIELD, [r.sample_id for r in top])

    def boxes(dets, rec):
        rel = np.array([d["bounding_box"] for d in dets], float).reshape(-1, 4)
        return store.rel_xywh_to_xyxy(rel, rec.width, rec.height), [classes.index(d["label"]) for d in dets]

    confirm, proposed = [], 0
    for rec in top:
        t = true_by_path[rec.filepath]
        before = gts.get(rec.sample_id, [])
        base = f1(*boxes(before, rec), t.xyxy, t.class_id)
        for fx in fixes.get(rec.sample_id, []):
            proposed += 1
            after = copy.deepcopy(before)
            if decisions.apply_fix(after, fx, set(), new_id=store.new_id) and \
                    f1(*boxes(after, rec), t.xyxy, t.class_id) > base:
                confirm.append(fx["id"])
    review.confirm_fixes(name, confirm)
    cs = apply_stage.apply(name, log_dir=work / f"{name}_changes")
    ad = adopt(name, f"{cls_name}=whole", log_dir=work / f"{name}_changes")
    return store.read(name), {"reviewed_images": len(top), "proposed": proposed, "confirmed": len(confirm),
                              "applied": cs.applied, "convention_images": len(ad.change.changes)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="data, models' results (results.json): resumable")
    ap.add_argument("--images", type=int, default=400, help="training images per seed")
    ap.add_argument("--test-images", type=int, default=200)
    ap.add_argument("--class", dest="cls", default=None, help="the class boxed two ways (default: the widest "
                    "median box among the classes in at least 15 %% of the images)")
    ap.add_argument("--pieces-share", type=float, default=0.5)
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--review", type=float, nargs="+", default=[5, 10, 20], help="percent of images reviewed")
    ap.add_argument("--budget-min", type=float, default=8.0, help="training wall time of each model (when no --epochs)")
    ap.add_argument("--epochs", type=int, default=0, help="epochs of each training (a budget that does not depend "
                    "on the machine's load; overrides --budget-min)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    import bench_errors as be
    from cvcurate import store
    from cvcurate.detector.config import load_detector_config
    from cvcurate.detector.evaluate import evaluate
    from cvcurate.detector.predict import predict
    from cvcurate.detector.train import train
    from cvcurate.synth import generate
    from cvcurate.types import Annotations, ImageRecord, LabelSet

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    res_path = args.work / "results.json"
    results = json.loads(res_path.read_text()) if res_path.is_file() else {}

    def save() -> None:
        tmp = res_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, res_path)

    train_over = ({"epochs": args.epochs, "time_budget_min": 0.0} if args.epochs
                  else {"time_budget_min": args.budget_min})
    with store.private_database():
        prepared = {}
        for seed in args.seeds:
            d = args.work / f"seed{seed}"
            truth = generate(d / "train", args.images, 100 + seed, workers=args.threads, overwrite=True)  # seeded
            test = generate(d / "test", args.test_images, 200 + seed, workers=args.threads, overwrite=True)
            classes = truth.classes
            if args.cls is None:  # the widest boxes among the classes in at least 15 % of the images
                held = {c: sum((r.gt.class_id == c).any() for r in truth.records) for c in range(len(classes))}
                widths = {c: np.median([b[2] - b[0] for r in truth.records for b, k in zip(r.gt.xyxy, r.gt.class_id)
                                        if k == c] or [0]) for c in held if held[c] >= 0.15 * len(truth.records)}
                cls = max(widths, key=widths.get) if widths else max(held, key=held.get)
            else:
                cls = classes.index(args.cls)
            rng = np.random.default_rng([seed, 34])
            styled = pieces(truth, cls, args.pieces_share, rng)
            imgs = [be.Img(Path(r.filepath), r.width, r.height, r.gt.xyxy.copy(), [classes[c] for c in r.gt.class_id])
                    for r in styled.records]
            bad, errors = be.inject(imgs, classes, args.rate, seed)
            noisy = LabelSet(classes, [ImageRecord(str(im.src), im.w, im.h, Annotations(
                np.asarray(im.boxes, float).reshape(-1, 4), np.array([classes.index(c) for c in im.cls], np.int64)),
                split=r.split) for im, r in zip(bad, styled.records)])
            prepared[seed] = (d, truth, test, cls, noisy, errors)
        first = [n for n in args.review if n == 10] or args.review[:1]
        order = [("noisy", None), ("true", None)] + [(f"curated@{n:g}", n) for n in first]
        order += [(f"curated@{n:g}", n) for n in args.review if n not in first]
        for what, pct in order:
            for seed in args.seeds:
                d, truth, test, cls, noisy, errors = prepared[seed]
                classes = truth.classes
                key = f"seed{seed}/{what}"
                if key in results:
                    print(f"{key}: done before (mAP@0.5 {results[key]['map50']:.3f})", flush=True)
                    continue
                info: dict = {"class": classes[cls], "errors": len(errors), "images": len(truth.records)}
                data = {"noisy": noisy, "true": truth}.get(what)
                if data is None:
                    t0 = time.time()
                    data, counts = curate(noisy, truth, classes[cls], pct, f"curval_{seed}_{pct:g}", d)
                    info.update(counts, curate_seconds=round(time.time() - t0, 1))
                cfg = load_detector_config(overrides={"train": {"seed": seed, **train_over}})
                t0 = time.time()
                ckpt = train(data, cfg, progress=False, log=lambda s: None)
                ev = evaluate([r.gt for r in test.records], predict(ckpt, test.records, 16), classes)
                results[key] = {**info, "map50": ev.map50, "ap50": ev.ap50, "train_seconds": round(time.time() - t0),
                                "epochs": ckpt.extra.get("epochs_done"), "budget": train_over}
                save()
                print(f"{key}: mAP@0.5 {ev.map50:.3f} ({json.dumps(info)})", flush=True)
    print("\n| seed | noisy | " + " | ".join(f"curated@{n:g} (gap closed)" for n in args.review) + " | true |")
    print("|---|---|" + "---|" * len(args.review) + "---|")
    for seed in args.seeds:
        r = {k.split("/")[1]: v["map50"] for k, v in results.items() if k.startswith(f"seed{seed}/")}
        if "noisy" not in r or "true" not in r:
            continue
        gap = r["true"] - r["noisy"]
        cells = [(f"{r[f'curated@{n:g}']:.3f} ({(r[f'curated@{n:g}'] - r['noisy']) / gap:+.0%})" if gap > 0 else
                  f"{r[f'curated@{n:g}']:.3f} (no gap: the truth did not train better)")
                 if f"curated@{n:g}" in r else "-" for n in args.review]
        print(f"| {seed} | {r['noisy']:.3f} | " + " | ".join(cells) + f" | {r['true']:.3f} |")
    # over the seeds that finished a share: the mean mAP of each variant and the share of the mean
    # gap that the mean curated mAP closes (a ratio of means: a seed with a small gap does not swing it)
    per = {k: [results[f"seed{s}/{k}"]["map50"] for s in args.seeds if f"seed{s}/{k}" in results]
           for k in ["noisy", "true"] + [f"curated@{n:g}" for n in args.review]}
    cells = []
    for n in args.review:
        seeds = [s for s in args.seeds if all(f"seed{s}/{k}" in results for k in ("noisy", "true", f"curated@{n:g}"))]
        if not seeds:
            cells.append("-")
            continue
        m = {k: float(np.mean([results[f"seed{s}/{k}"]["map50"] for s in seeds])) for k in ("noisy", "true", f"curated@{n:g}")}
        gap = m["true"] - m["noisy"]
        cells.append(f"{m[f'curated@{n:g}']:.3f} ({(m[f'curated@{n:g}'] - m['noisy']) / gap:+.0%}, {len(seeds)} seeds)"
                     if gap > 0 else f"{m[f'curated@{n:g}']:.3f} (no gap)")
    if per["noisy"] and per["true"]:
        print(f"| mean | {np.mean(per['noisy']):.3f} | " + " | ".join(cells) + f" | {np.mean(per['true']):.3f} |")
    sys.stdout.flush()
    os._exit(0)  # FiftyOne's exit handler would look for the private database, already stopped (it hangs)


if __name__ == "__main__":
    sys.exit(main())
