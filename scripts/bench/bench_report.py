"""Time the report (compute and rendering, no store) of a synthetic 10,000-image dataset (~3 boxes per image,
~500 issues). The stage adds pixel reading for brightness (the score stage's features) and, with
predictions, an evaluation.

    python scripts/bench/bench_report.py /tmp/report-bench 10000
"""
import sys, time
from pathlib import Path
import cv2
import numpy as np

t0 = time.perf_counter()
from cvcurate.analysis import ReportInput, make_report, pr_curves
from cvcurate.detector.evaluate import EvalResult
from cvcurate.types import Annotations, ImageRecord, Issue, LabelSet
from cvcurate.scoring import QUEUES
t_import = time.perf_counter() - t0

out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/rep/bench")
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
rng = np.random.default_rng(0)
classes = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
W = H = 200
recs = []
for i in range(n):
    k = rng.poisson(3)
    xy = rng.uniform(0, 150, (k, 2)); wh = rng.uniform(5, 120, (k, 2))
    b = np.concatenate([xy, np.minimum(xy + wh, 200)], 1)
    recs.append(ImageRecord(str(out / "img" / f"{i:05d}.png"), W, H, Annotations(b, rng.integers(0, 6, k)),
                            split="train" if i % 5 else "val"))
labels = LabelSet(classes, recs)
types = [t for ts in QUEUES.values() for t in ts]
issues = []
for i in rng.choice(n, 500, replace=False):
    r = recs[i]; t = types[rng.integers(len(types))]
    box = int(rng.integers(len(r.gt))) if len(r.gt) and t not in ("overlooked", "blur") else None
    issues.append(Issue(r.filepath, t, float(rng.uniform()), f"synthetic {t}", box=box,
                        data={"pred_box": [10, 10, 60, 60], "pred_class": 1} if t == "overlooked" else {}))
img_dir = out / "img"; img_dir.mkdir(parents=True, exist_ok=True)
for iss in issues:
    if not Path(iss.filepath).exists():
        cv2.imwrite(iss.filepath, rng.integers(80, 180, (H, W), dtype=np.uint8))
preds = []
for r in recs:
    p = r.gt.xyxy + rng.normal(0, 4, r.gt.xyxy.shape)
    preds.append(Annotations(p, r.gt.class_id, rng.uniform(0.3, 1, len(p))))
ev = EvalResult(classes, 0.6, 0.4, {c: 0.6 for c in classes}, {c: 0.4 for c in classes},
                {c: 1 for c in classes}, {c: 1 for c in classes},
                (rng.integers(0, 50, (7, 7))).tolist(), classes + ["background"], n, 0.25).to_dict()
t1 = time.perf_counter()
ev["pr_curves"] = pr_curves([r.gt for r in recs], preds, classes)
t_pr = time.perf_counter() - t1
inp = ReportInput(labels, issues, brightness=rng.uniform(40, 200, n), sources=["a" if i % 3 else "b" for i in range(n)],
                  evaluation=ev, title="bench")
t2 = time.perf_counter()
rep, paths = make_report(inp, out / "report")
t_rep = time.perf_counter() - t2
print(f"images {n}, boxes {labels.num_boxes}, issues {len(issues)}, thumbs {len(rep.thumbs)}")
print(f"import {t_import:.2f}s, pr_curves {t_pr:.2f}s, report {t_rep:.2f}s, html {paths['html'].stat().st_size/1e6:.2f} MB")
