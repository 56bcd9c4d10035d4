"""In-process companion of ``bench_errors.py`` for fast iteration: the same data and the same
independent error generator (imported from ``bench_errors``), scored by ``cvcurate.scoring.score``
in this process under several configurations at once, the predictions and pixel features made
once per dataset and cached.

It skips what makes ``bench_errors`` slow and tree-agnostic (writing VOC copies, three CLI calls per
copy, the store), so it measures only the scoring of the tree it runs from (``PYTHONPATH``), on the
labels as this script builds them (floats, no importer). Headline figures come from
``bench_errors.py``; this is for comparing settings and code changes in minutes.

    python scripts/bench/errors_quick.py --seeds 5 --variant base --variant rounds60:model.max_iter=60

``--flip-check``: the predictions carry ``predict --flip-check``'s numbers.

``--variant NAME[:KEY=VALUE,...]``: a configuration; keys are ``ScoreConfig`` paths (below
``calibration`` unless they start with ``objectlab.``, ``geometry.``, ``images.``, ``weights.``) (``copies``, ``model.max_iter``, ...). Prints per variant and dataset the mean AP,
recall@K per type, share of corrupted images in the queues, share of the labels as given flagged,
expected - given, truth ECE (synthetic), and the scoring seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("CVCURATE_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_errors as be  # noqa: E402
import numpy as np  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "cvcurate-errors-quick"


def labelset(images: list, classes: list[str]):
    from cvcurate.types import Annotations, ImageRecord, LabelSet

    idx = {c: i for i, c in enumerate(classes)}
    recs = [ImageRecord(filepath=str(im.src), width=im.w, height=im.h,
                        gt=Annotations(np.asarray(im.boxes, np.float64).reshape(-1, 4),
                                       np.array([idx[c] for c in im.cls], np.int64)))
            for im in images]
    return LabelSet(list(classes), recs)


def dataset(ds: str, args) -> tuple[list, list[str]]:
    if ds == "neu":
        return be.load_neu(args.data)
    folder = CACHE / f"synth-{args.synth_seed}-{args.synth_images}"
    if not (folder / "coco" / "labels.json").is_file():
        subprocess.run([sys.executable, "-c", "from cvcurate.cli import main; main()", "synth", str(folder),
                        "--images", str(args.synth_images), "--seed", str(args.synth_seed)], check=True,
                       stdout=subprocess.DEVNULL)
    return be.load_synth(folder)


def predictions(ds: str, labels, flip_check: bool = False) -> list:
    from cvcurate.detector.checkpoint import NAMED
    from cvcurate.names import PRED_ATTRIBUTES
    from cvcurate.types import Annotations

    # the images and the weights that predicted them: a cache of other weights is never read
    weights = hashlib.sha256(Path(NAMED[be.MODEL[ds]]).read_bytes()).hexdigest()
    key = hashlib.sha256(("".join(r.filepath for r in labels.records) + weights).encode()).hexdigest()[:12]
    path = CACHE / f"preds-{ds}-{key}{'-flip' if flip_check else ''}.npz"
    keys = PRED_ATTRIBUTES if flip_check else ()
    if path.is_file():
        z = np.load(path, allow_pickle=True)
        return [Annotations(x, c, confidence=s, data={k: z[k][i] for k in keys})
                for i, (x, c, s) in enumerate(zip(z["xyxy"], z["cls"], z["conf"]))]
    from cvcurate.detector.checkpoint import load_checkpoint
    from cvcurate.detector.predict import predict

    ckpt = load_checkpoint(be.MODEL[ds])
    mapping = ckpt.class_map(labels.classes)
    preds = [Annotations(p.xyxy, mapping[p.class_id], confidence=p.confidence, data=p.data)
             for p in predict(ckpt, labels.records, batch_size=16, flip_check=flip_check)]
    np.savez(path, xyxy=np.array([p.xyxy for p in preds] + [None], dtype=object)[:-1],
             cls=np.array([p.class_id for p in preds] + [None], dtype=object)[:-1],
             conf=np.array([p.confidence for p in preds] + [None], dtype=object)[:-1],
             **{k: np.array([p.data[k] for p in preds] + [None], dtype=object)[:-1] for k in keys})
    return preds


def thin(preds: list, max_boxes: int, min_conf: float) -> list:
    """Fewer predictions per image, as a predict keeping fewer boxes would write them."""
    out = []
    for p in preds:
        keep = np.argsort(-p.confidence, kind="stable")
        keep = keep[p.confidence[keep] >= min_conf]
        if max_boxes:
            keep = keep[:max_boxes]
        keep = np.sort(keep)
        out.append(p[keep])
    return out


def config(spec: str):
    from cvcurate.scoring import ScoreConfig

    cfg = ScoreConfig()
    for kv in filter(None, spec.split(",")):
        k, v = kv.split("=", 1)
        if k.startswith("weights."):  # a model-free type's prior weight
            cfg.weights[k.split(".", 1)[1]] = float(v)
            continue
        obj = cfg if k.split(".")[0] in ("objectlab", "geometry", "images", "calibration") else cfg.calibration
        *parents, leaf = k.split(".")
        for p in parents:
            obj = getattr(obj, p)
        cur = getattr(obj, leaf)
        setattr(obj, leaf, (v.lower() in ("1", "true", "yes")) if isinstance(cur, bool) else type(cur)(v))
    cfg.check()
    return cfg


def reaggregate(result, how: str, list_min_p: float) -> None:
    """A diagnostic: the image score recomputed from the same units (listed issues, and the boxes'
    and predictions' units below ``list_min_p``) by another rule: ``max`` (the largest p),
    ``top2`` (noisy-or of the two largest), ``pow:G`` (noisy-or of p**G)."""
    recs = result.labels.records
    idx = {r.filepath: i for i, r in enumerate(recs)}
    units: list[list[float]] = [[] for _ in recs]
    for iss in result.issues:
        units[idx[iss.filepath]].append(float(iss.score))
    ol = result.objectlab
    if ol is not None and ol.probabilities is not None:
        pr, sg = ol.probabilities, ol.signals
        for p, im in ((pr.best, sg.given.image), (pr.overlooked, sg.pred.image)):
            for pi, ii in zip(np.asarray(p, float), np.asarray(im, int)):
                if pi < list_min_p:
                    units[ii].append(float(pi))
    out = np.zeros(len(recs))
    for i, u in enumerate(units):
        u = np.clip(np.sort(np.asarray(u, float))[::-1], 0, 1)
        if not len(u):
            continue
        if how == "max":
            out[i] = u[0]
        elif how == "top2":
            out[i] = 1 - np.prod(1 - u[:2])
        elif how.startswith("pow:"):
            out[i] = 1 - np.prod(1 - u ** float(how[4:]))
        elif how == "noisy_or":
            out[i] = 1 - np.prod(1 - u)
        else:
            raise SystemExit(f"unknown --image-score {how}")
    result.image_score = out


_DONORS: list = []  # the labels being scored, as the benchmark's images (spurious boxes are copied from them)


def oracle_injector() -> None:
    """A diagnostic, never a product figure: calibration injects the benchmark's own errors
    (``bench_errors.apply_one``) instead of ``cvcurate.corrupt``'s for the types both have (split
    stays the tool's): how far the ranking gets when the error model learns the very errors it is
    measured on, i.e. what the evidence allows, the injector's mismatch aside."""
    import cvcurate.corrupt as corrupt
    from cvcurate.types import Annotations

    orig = corrupt.apply_error
    as_bench = {"swap": "swap", "badloc": "badloc", "overlooked": "dropped", "spurious": "spurious",
                "merge": "merged", "degenerate": "degenerate"}

    def apply(kind, rec, rng, num_classes, sizes):
        bk = as_bench.get(kind)
        if bk is None:
            return orig(kind, rec, rng, num_classes, sizes)
        im = be.Img(Path(rec.filepath), rec.width, rec.height, np.asarray(rec.gt.xyxy, float).copy(),
                    [str(int(c)) for c in rec.gt.class_id])
        donors = [d for d in _DONORS if str(d.src) != str(rec.filepath)]
        got = be.apply_one(bk, 0, [im] + donors, [str(c) for c in range(num_classes)], rng)
        if got is None:
            return None
        new, e = got
        rec.gt = Annotations(new.boxes.reshape(-1, 4), np.array([int(c) for c in new.cls], np.int64))
        err = corrupt.InjectedError(type=kind, filepath=rec.filepath)
        err.boxes = [] if e.box is None else [int(e.box)]
        err.original, err.original_class = list(e.original), [int(c) for c in e.original_class]
        return err

    corrupt.apply_error = apply


def set_donors(labels) -> None:
    _DONORS[:] = [be.Img(Path(r.filepath), r.width, r.height, np.asarray(r.gt.xyxy, float),
                         [str(int(c)) for c in r.gt.class_id]) for r in labels.records]


def run_doc(result) -> tuple[dict[str, float], dict]:
    from cvcurate.scoring.summary import run_summary

    ids = [Path(r.filepath).stem for r in result.labels.records]
    scores = dict(zip(ids, result.image_score.tolist()))
    issues = [{"filepath": i.filepath, "box": i.box, "score": i.score, "type": i.type,
               "data": {"pred_box": list(map(float, i.data["pred_box"]))} if "pred_box" in i.data else {}}
              for i in result.issues]
    summ = run_summary(result)
    return scores, {"issues": issues, "queue_min_p": result.queue_min_p,
                    "expected_label_errors": summ["expected_label_errors"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", choices=["neu", "synth"], default=["neu", "synth"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--data", type=Path, default=be.NEU_DET)
    ap.add_argument("--synth-images", type=int, default=300)
    ap.add_argument("--synth-seed", type=int, default=31)
    ap.add_argument("--no-pixels", action="store_true")
    ap.add_argument("--flip-check", action="store_true",
                    help="predictions with predict --flip-check's agreement with the mirrored images")
    ap.add_argument("--variant", action="append", default=[], help="NAME[:KEY=VALUE,...] (repeatable)")
    ap.add_argument("--max-boxes", type=int, default=0,
                    help="keep only each image's N most confident predictions (0: all, as predicted)")
    ap.add_argument("--min-conf", type=float, default=0.0, help="drop predictions below this confidence")
    ap.add_argument("--oracle-injector", action="store_true",
                    help="diagnostic: calibrate on the benchmark's own injected errors (see oracle_injector)")
    ap.add_argument("--image-score", action="append", default=[],
                    help="also rank images by another rule over the same units (diagnostic): max, top2, "
                         "noisy_or, pow:G (repeatable); a row per variant and rule")
    args = ap.parse_args()
    from cvcurate.scoring import score
    from cvcurate.scoring.images import image_features

    CACHE.mkdir(exist_ok=True)
    if args.oracle_injector:
        oracle_injector()
        print("ORACLE INJECTOR: calibration learns the benchmark's own errors (a diagnostic upper bound)")
    variants = [(v.split(":", 1)[0], config(v.split(":", 1)[1] if ":" in v else "")) for v in (args.variant or ["base"])]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for ds in args.datasets:
        images, classes = dataset(ds, args)
        given_ls = labelset(images, classes)
        preds = thin(predictions(ds, given_ls, args.flip_check), args.max_boxes, args.min_conf)
        print(f"predictions per image: {np.mean([len(p) for p in preds]):.1f} (--max-boxes {args.max_boxes}, "
              f"--min-conf {args.min_conf:g})")
        feats = None if args.no_pixels else image_features([r.filepath for r in given_ls.records])
        copies = [be.inject(images, classes, args.rate, s) for s in seeds]
        print(f"\n{ds}: {len(images)} images, seeds {list(seeds)}")
        print("| variant | AP | recall@K swap/badloc/dropped/spurious/merged/degen | in queues | given flagged "
              "| exp - given (inj) | truth ECE | s/copy |")
        print("|---|---|---|---|---|---|---|---|")
        rules = [None] + args.image_score
        for (vname, cfg), rule in ((v, r) for v in variants for r in rules):
            name = vname if rule is None else f"{vname} / {rule}"
            t = time.perf_counter()

            def scored(ls):
                set_donors(ls)
                res = score(ls, predictions=preds, features=feats, cfg=cfg)
                if rule is not None:
                    reaggregate(res, rule, cfg.calibration.list_min_p)
                return run_doc(res)

            g_scores, g_doc = scored(given_ls)
            fl = be.flagged_images(g_doc)
            ms = []
            for imgs, errors in copies:
                sc, doc = scored(labelset(imgs, classes))
                ids = [Path(im.src).stem for im in imgs]
                ms.append(be.copy_metrics(sc, doc, g_doc, errors, ids, ds == "synth"))
            secs = (time.perf_counter() - t) / (len(copies) + 1)

            def mean(f):
                v = [f(m) for m in ms]
                v = [x for x in v if x is not None and x == x]
                return float(np.mean(v)) if v else float("nan")

            rec = "/".join(f"{mean(lambda m, t=t: m['types'][t]['recall_at_k']):.2f}" for t in be.TYPES)
            inj = mean(lambda m: m["injected"])
            print(f"| {name} | {mean(lambda m: m['ap']):.3f} | {rec} | {mean(lambda m: m['in_queues']):.2f} "
                  f"| {len(fl) / len(images):.3f} | {mean(lambda m: m['expected_minus_given']):+.1f} ({inj:.0f}) "
                  f"| {mean(lambda m: m['truth_ece']):.3f} | {secs:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
