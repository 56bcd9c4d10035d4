"""Benchmark: finding injected label errors on NEU-DET, cvcurate vs cleanlab alone vs FiftyOne.

Data: the fixed, seeded 20% of the NEU-DET dev split that the shipped ``neu-det`` detector never
trained on (checked against the checkpoint's data fingerprint), so every method gets the same
out-of-sample predictions. Errors are injected with ``cvcurate.corrupt`` (rate 0.1, seeds 0-2).

Methods, each given the same labels and predictions:
* cvcurate: ``cvcurate.scoring.score`` (ObjectLab with calibrated thresholds + model-free checks
  + pixel checks), image score = its combined ranking;
* cleanlab alone: ``cleanlab.object_detection.rank.get_label_quality_scores``, image score = 1 - q;
* FiftyOne Brain ``compute_mistakenness``: image score = max(mistakenness, mistakenness_loc of its
  boxes) + [possible_missing > 0] + [possible_spurious > 0] (all its sample outputs, so it is not
  handicapped by reading only one of them).

Metrics: average precision of finding corrupted images (overall, and per error type against the
clean images), precision@k with k = the number of images of that type. Throughput: images/s at
``--throughput-images`` images (the held-out images repeated), store writes included.

    python scripts/bench/bench_score.py [--seeds 0 1 2] [--throughput-images 10000]
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ["CVCURATE_PROGRESS"] = "0"

import common  # noqa: E402  (scripts/bench/common.py)
import numpy as np  # noqa: E402



def cleanlab_inputs(labels, preds):
    k = len(labels.classes)
    lab = [{"bboxes": r.gt.xyxy.astype(np.float32), "labels": r.gt.class_id} for r in labels.records]
    pr = []
    for p in preds:
        per = []
        for c in range(k):
            m = p.class_id == c
            per.append(np.hstack([p.xyxy[m], p.confidence[m][:, None]]).astype(np.float32))
        pr.append(np.array(per, dtype=object))
    return lab, pr


def score_cleanlab(labels, preds):
    from cleanlab.object_detection.rank import get_label_quality_scores

    lab, pr = cleanlab_inputs(labels, preds)
    return 1.0 - get_label_quality_scores(lab, pr, verbose=False)


def score_fiftyone(labels, preds, name):
    import fiftyone.brain as fob

    from cvcurate import store

    if store.exists(name):
        store.delete(name)
    store.write(labels, name)
    recs = store.read(name).records
    by_path = {r.filepath: i for i, r in enumerate(labels.records)}
    store.write_detections(name, "predictions", recs, [preds[by_path[r.filepath]] for r in recs], labels.classes)
    ds = store.load(name)
    fob.compute_mistakenness(ds, "predictions", label_field="ground_truth", progress=False)
    paths, mist, miss, spur = ds.values(["filepath", "mistakenness", "possible_missing", "possible_spurious"])
    loc = ds.values("ground_truth.detections.mistakenness_loc")
    out = np.zeros(len(labels.records))
    for p, m, a, b, lo in zip(paths, mist, miss, spur, loc):
        vals = [v for v in ([m] + list(lo or [])) if v is not None]
        out[by_path[p]] = (max(vals) if vals else 0.0) + float((a or 0) > 0) + float((b or 0) > 0)
    store.delete(name)
    return out


def score_cvcurate(labels, preds, feats):
    from cvcurate.scoring import score

    return score(labels, predictions=preds, features=feats).image_score


def metrics(scores, corrupted, errors_by_type, n_images):
    from sklearn.metrics import average_precision_score

    y = np.zeros(n_images, bool)
    y[list(corrupted)] = True
    out = {"overall": (average_precision_score(y, scores), _p_at_k(scores, y))}
    clean = ~y
    for t, idx in errors_by_type.items():
        m = clean.copy()
        m[list(idx)] = True
        yt = np.zeros(n_images, bool)
        yt[list(idx)] = True
        out[t] = (average_precision_score(yt[m], scores[m]), _p_at_k(scores[m], yt[m]))
    return out


def _p_at_k(scores, y):
    k = int(y.sum())
    top = np.argsort(-scores, kind="stable")[:k]
    return float(y[top].mean()) if k else float("nan")


def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--throughput-images", type=int, default=10000)
    ap.add_argument("--skip-fiftyone-throughput", action="store_true")
    ap.add_argument("--throughput-only", action="store_true", help="Skip the accuracy part (3 seeds, FiftyOne).")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cvcurate_bench_preds.npz")
    args = ap.parse_args()
    if not (args.data / "images").is_dir():
        print(f"skipped: {args.data} is absent")
        return 0
    from cvcurate import corrupt, formats, store
    from cvcurate.detector.checkpoint import load_checkpoint
    from cvcurate.detector.data import data_fingerprint, holdout_split, subset
    from cvcurate.detector.predict import predict
    from cvcurate.scoring import QUEUES
    from cvcurate.scoring.images import image_features
    try:  # the run writer: stages/score_write.py since session 30
        from cvcurate.stages.score_write import _sample_rows, write_score_run
    except ImportError:  # an older tree (--tree / PYTHONPATH before/after measures)
        from cvcurate.stages.score import _sample_rows, write_score_run
    from cvcurate.types import Annotations

    labels, _ = formats.load(args.data, formats.ImportOptions(voc_origin="1"))  # NEU-DET is 1-based (README)
    train_idx, held_idx = holdout_split(labels, 0.2, 0)
    ckpt = load_checkpoint("neu-det", classes=labels.classes)
    if ckpt.data_sha256 != data_fingerprint(labels, [labels.records[i] for i in train_idx]):
        print("warning: the neu-det checkpoint was not trained on the complementary 80%: "
              "its predictions may not be out-of-sample")
    held = subset(labels, held_idx)
    # the cache holds the predictions of one checkpoint on one set of images: used only for the same
    # weights and images (a stale cache of another checkpoint would be measured silently otherwise)
    import hashlib

    key = hashlib.sha256(ckpt.data_sha256.encode() + repr(sorted(ckpt.state_dict)).encode()
                         + b"".join(v.numpy().tobytes()[:4096] for _, v in sorted(ckpt.state_dict.items()))
                         + data_fingerprint(held).encode()).hexdigest()[:16]
    z = np.load(args.cache, allow_pickle=True) if args.cache.is_file() else None
    if z is not None and "key" in z.files and str(z["key"]) == key:
        preds = [Annotations(x, c, confidence=s) for x, c, s in zip(z["xyxy"], z["cls"], z["conf"])]
    else:
        if z is not None:
            print(f"the prediction cache {args.cache} is of other weights or images: predicting again")
        t = time.perf_counter()
        preds = predict(ckpt, held.records, batch_size=16)
        print(f"predicted {len(held)} held-out images in {time.perf_counter() - t:.1f} s")
        np.savez(args.cache, key=np.array(key), xyxy=np.array([p.xyxy for p in preds], dtype=object),
                 cls=np.array([p.class_id for p in preds], dtype=object),
                 conf=np.array([p.confidence for p in preds], dtype=object))
    feats = image_features([r.filepath for r in held.records])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"held-out images: {len(held)}, boxes {held.num_boxes}, predictions/image "
          f"{np.mean([len(p) for p in preds]):.1f}")

    results: dict[str, dict[str, list]] = {"cvcurate": {}, "cleanlab": {}, "fiftyone": {}}
    for seed in ([] if args.throughput_only else args.seeds):
        res = corrupt.corrupt(held, rate=args.rate, seed=seed)
        index = {r.filepath: i for i, r in enumerate(res.labels.records)}
        by_type: dict[str, set[int]] = {}
        for e in res.errors:
            by_type.setdefault(e.type, set()).add(index[e.filepath])
        corrupted = {index[e.filepath] for e in res.errors}
        scores = {
            "cvcurate": score_cvcurate(res.labels, preds, feats),
            "cleanlab": score_cleanlab(res.labels, preds),
            "fiftyone": score_fiftyone(res.labels, preds, f"bench_fo_{seed}"),
        }
        for method, s in scores.items():
            for key, val in metrics(s, corrupted, by_type, len(res.labels)).items():
                results[method].setdefault(key, []).append(val)
    keys = ["overall"] + [t for t in corrupt.ERROR_TYPES if t in results["cvcurate"]] if not args.throughput_only else []
    print(f"\nAP (and precision@k) over seeds {args.seeds}, rate {args.rate}:")
    print("| error type | cvcurate AP | cleanlab AP | FiftyOne AP | cvcurate P@k | cleanlab P@k | FiftyOne P@k |")
    print("|---|---|---|---|---|---|---|")
    for k in keys:
        ap_ = [np.mean([v[0] for v in results[m][k]]) for m in results]
        pk = [np.mean([v[1] for v in results[m][k]]) for m in results]
        print(f"| {k} | " + " | ".join(f"{v:.3f}" for v in ap_) + " | " + " | ".join(f"{v:.3f}" for v in pk) + " |")

    # throughput at N images: the held-out images repeated, with unique paths for the store
    n = args.throughput_images
    reps = int(np.ceil(n / len(held)))
    big_recs, big_preds = [], []
    for r_ in range(reps):
        for rec, p in zip(held.records, preds):
            if len(big_recs) == n:
                break
            big_recs.append(type(rec)(filepath=rec.filepath if r_ == 0 else f"{rec.filepath}#{r_}",
                                      width=rec.width, height=rec.height, gt=rec.gt, split=rec.split))
            big_preds.append(p)
    big = type(held)(list(held.classes), big_recs)
    name = "bench_throughput"
    if store.exists(name):
        store.delete(name)
    store.write(big, name)
    stored = store.read(name)
    order = {r.filepath: i for i, r in enumerate(big.records)}
    big_preds = [big_preds[order[r.filepath]] for r in stored.records]
    real_paths = [r.filepath.split("#")[0] for r in stored.records]
    t = time.perf_counter()
    f_big = image_features(real_paths)
    from cvcurate.scoring import score

    result = score(stored, predictions=big_preds, features=f_big)
    t_compute = time.perf_counter() - t
    rows = _sample_rows(result)
    run = {"bench": True}
    if hasattr(store, "put_record"):  # the run's typed record (commits before it had none)
        run.update(store.put_record(name, "score", result.issues))
    write_score_run(name, rows, list(QUEUES), stored.classes, run)
    if hasattr(store, "drop_old_records"):
        store.drop_old_records(name, "score")
    t_ours = time.perf_counter() - t
    cal = result.calibration
    learned = ", ".join(k for k, m in (("box model", getattr(cal, "model", None)),
                                        ("overlooked model", getattr(cal, "overlooked_model", None))) if m is not None)
    print(f"cvcurate at {n} images: pixels + scoring {t_compute:.1f} s (calibration {cal.seconds:.1f} s: "
          f"{learned or 'the curves only'}), store writes {t_ours - t_compute:.1f} s")
    t = time.perf_counter()
    score_cleanlab(stored, big_preds)
    t_cl = time.perf_counter() - t
    print(f"\nthroughput at {n} images (store writes included for cvcurate and FiftyOne):")
    print(f"| cvcurate | {n / t_ours:.0f} img/s |")
    print(f"| cleanlab get_label_quality_scores | {n / t_cl:.0f} img/s (compute only) |")
    if not args.skip_fiftyone_throughput:
        t = time.perf_counter()
        score_fiftyone(stored, big_preds, "bench_fo_throughput")
        t_fo = time.perf_counter() - t
        print(f"| FiftyOne compute_mistakenness | {n / t_fo:.0f} img/s |")
    store.delete(name)
    return 0


if __name__ == "__main__":
    sys.exit(common.run_on_private_database(main))
