#!/usr/bin/env python
"""Out-of-fold predictions on NEU-DET through the CLI: wall time, mAP, and a predictions file for
``bench_errors.py --neu-predictions``.

  python scripts/bench/bench_kfold.py --work /work/kfold-synth --folds 5 --init synth [--epochs 12]

Imports NEU-DET (all 1,200 images, 1-based VOC) into a database of its own in ``WORK/db``, runs
``cvcurate train neu --folds K [--init M] [--epochs E]`` as a subprocess in ``--work`` (so a killed
run resumes from ``neu_kfold/`` there: run the same command again), times it, then reads the
out-of-fold predictions back and reports mAP@0.5 (pycocotools, :mod:`cvcurate.detector.evaluate`) on
all images and on the 240 held-out images of ``holdout_split(labels, 0.2, seed 0)`` (the split the
shipped ``neu-det`` checkpoint did not train on, where its own mAP is measured). Writes
``WORK/oof_predictions.json`` (COCO-style rows with the original file names, absolute pixels) and
``WORK/result.json`` (a second call reads the stored predictions again, training nothing). Every fold's model never saw the images it predicts; with ``--init`` the
starting weights must never have seen NEU-DET (``synth`` never did; ``neu-det`` is refused).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts" / "bench"))

import common  # noqa: E402


def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--work", type=Path, required=True, help="working folder (kept: the k-fold resumes from it)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--init", default=None, help="starting weights (synth, or a checkpoint path)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--flip-check", action="store_true", help="train --folds K --flip-check: the predictions carry "
                    "the flip check (kept in oof_predictions.json)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    def run() -> int:
        from cvcurate import formats, store
        from cvcurate.detector.data import holdout_split
        from cvcurate.detector.evaluate import evaluate
        from cvcurate.stages.imports import import_dataset

        if not store.exists("neu"):
            import_dataset(args.data, "neu", formats.ImportOptions(voc_origin="1"))
        cmd = [sys.executable, "-c", "from cvcurate.cli import main; main()", "train", "neu", "--folds",
               str(args.folds)]
        cmd += ["--init", args.init] if args.init else []
        cmd += ["--epochs", str(args.epochs)] if args.epochs else []
        cmd += ["--config", str(args.config)] if args.config else []
        cmd += ["--flip-check"] if args.flip_check else []
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        print(" ".join(cmd[3:]), flush=True)
        timing = args.work / "seconds.json"
        if "predictions_oof" not in store.field_names("neu"):
            t0 = time.perf_counter()
            with open(args.work / "train.log", "a") as log:
                rc = subprocess.call(cmd, cwd=args.work, env=env, stdout=log, stderr=subprocess.STDOUT)
            seconds = time.perf_counter() - t0
            if rc:
                print(f"the k-fold stopped (exit {rc}); see {args.work / 'train.log'}; run again to resume")
                return rc
            timing.write_text(json.dumps({"seconds_of_the_call_that_finished": seconds}))
        seconds = json.loads(timing.read_text())["seconds_of_the_call_that_finished"] if timing.is_file() else None
        import fiftyone as fo

        fo.load_dataset("neu").reload()  # the subprocess added the field: this process's view of it is stale
        from cvcurate.names import PRED_ATTRIBUTES

        labels = store.read("neu", pred_field="predictions_oof", pred_attributes=PRED_ATTRIBUTES)
        gts, preds = [r.gt for r in labels.records], [r.pred for r in labels.records]
        all_ = evaluate(gts, preds, labels.classes)
        _, ho = holdout_split(labels, 0.2, seed=0)
        held = evaluate([gts[i] for i in ho], [preds[i] for i in ho], labels.classes)
        from cvcurate.formats.predictions import write_coco_results

        write_coco_results(args.work / "oof_predictions.json", labels, preds)
        res = {"command": " ".join(cmd[3:]), "seconds_this_call": seconds, "threads": os.cpu_count(),
               "map50_all": all_.map50, "map50_heldout240": held.map50, "ap50_heldout240": held.ap50,
               "ap50_all": all_.ap50, "images": len(labels.records)}
        (args.work / "result.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return 0

    from cvcurate.store import private_database

    with private_database(args.work / "db"):  # kept in WORK: the predictions survive a failure after the k-fold
        rc = run()
    sys.stdout.flush()
    os._exit(rc)  # FiftyOne's exit handlers can hang after a private database (as bench_engines does)


if __name__ == "__main__":
    main()
