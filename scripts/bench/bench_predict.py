#!/usr/bin/env python
"""`cvcurate predict` end to end on NEU-DET, and where its time goes.

  python scripts/bench/bench_predict.py --work /tmp/benchpred [--runtime torch onnx] [--rounds 2]

Imports NEU-DET (all 1,200 images) into a database of its own in ``WORK/db`` (once), then per round
and runtime, alternated (this machine's timings drift between rounds: compare within a round):

* **end to end**: ``cvcurate predict neu --model neu-det --runtime R`` as a subprocess, wall time
  from the command to its exit (start-up, reading the dataset, decoding, the network, the
  post-processing, writing every box to the store), images per second;
* **the split**, in this process, the same steps one at a time on the same images:
  start-up (a fresh interpreter importing the CLI, torch and torchvision and loading the
  checkpoint; on onnx, the CLI and the torch-free detector's cached card and network), decode/resize (:func:`cvcurate.detector.predict.decode`, one thread), the network
  (backbone and heads only, on the decoded batches), the post-processing (anchors, box decoding,
  NMS, boxes back to each image's frame: the rest of a batch), the store write
  (``store.write_detections`` of the boxes). The end-to-end run overlaps decoding with the network
  (a thread), so the parts add up to more than the whole.

Close other jobs first (or SIGSTOP them): the figures are for quiet cores.
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


def split(labels, runtime: str, batch: int, threads: int) -> dict:
    """Seconds of each step, one at a time (see the module docstring)."""
    if runtime == "onnx":
        return split_lite(labels, batch, threads)
    import numpy as np
    import torch

    from cvcurate.detector import predict as P
    from cvcurate.detector.checkpoint import load_checkpoint, resolve_model_path
    from cvcurate.detector.runtime import _Core

    torch.set_num_threads(threads)
    startup, inner = _startup("import cvcurate.cli, torch, torchvision; "
                              "from cvcurate.detector.checkpoint import load_checkpoint, resolve_model_path; "
                              "load_checkpoint(resolve_model_path('neu-det')).model()")
    ck = load_checkpoint(resolve_model_path("neu-det"))
    model, size = ck.model().eval(), ck.input_size
    run = P._runner(model, size, torch.device("cpu"), runtime)
    recs = labels.records
    batches = [recs[i:i + batch] for i in range(0, len(recs), batch)]
    t0 = time.perf_counter()
    imgs = [P.decode(b, size) for b in batches]
    decode = time.perf_counter() - t0
    core = _Core(model).eval()
    net = post_all = 0.0
    anns = []
    with torch.inference_mode():
        P._boxes(run, torch.device("cpu"), size, batches[0], imgs[0])  # warm
        for b, im in zip(batches, imgs):
            x = torch.from_numpy(np.stack(im)).float().div_(255.0)[:, None]
            xt = model.transform(list(x))[0].tensors
            t0 = time.perf_counter()
            core(xt)
            net += time.perf_counter() - t0
            t0 = time.perf_counter()
            anns += P._boxes(run, torch.device("cpu"), size, b, im)
            post_all += time.perf_counter() - t0
    return _rest(labels, anns, startup, inner, decode, net, post_all)


def split_lite(labels, batch: int, threads: int) -> dict:
    """The same steps on the torch-free ONNX path (:mod:`cvcurate.detector.lite`), which
    ``--runtime onnx`` takes on the CPU: start-up is the CLI and the cached card and network."""
    import numpy as np

    from cvcurate.detector import lite
    from cvcurate.detector.images import decode as decode_batch
    from cvcurate.detector.images import to_record_frame

    startup, inner = _startup("import cvcurate.cli; from cvcurate.detector import lite; lite.load('neu-det')")
    det = lite.load("neu-det", threads=threads)
    size = det.size
    recs = labels.records
    batches = [recs[i:i + batch] for i in range(0, len(recs), batch)]
    t0 = time.perf_counter()
    imgs = [decode_batch(b, size) for b in batches]
    decode = time.perf_counter() - t0
    mean = np.asarray(det.card.mean, np.float32)[None, :, None, None]
    std = np.asarray(det.card.std, np.float32)[None, :, None, None]
    net = post_all = 0.0
    anns = []
    det(imgs[0])  # warm
    for b, im in zip(batches, imgs):
        x = (np.stack(im).astype(np.float32)[:, None] / np.float32(255.0) - mean) / std
        t0 = time.perf_counter()
        det.session.run(None, {"x": x})
        net += time.perf_counter() - t0
        t0 = time.perf_counter()
        anns += [to_record_frame(r, size, *o) for r, o in zip(b, det(im))]
        post_all += time.perf_counter() - t0
    return _rest(labels, anns, startup, inner, decode, net, post_all)


def _startup(code: str) -> tuple[float, float]:
    """A fresh interpreter running ``code``: wall seconds, and the seconds it measured inside."""
    t0 = time.perf_counter()
    inner = float(subprocess.check_output(
        [sys.executable, "-c", f"import time; t=time.perf_counter(); {code}; print(time.perf_counter()-t)"],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")}).decode().split()[-1])
    return time.perf_counter() - t0, inner


def _rest(labels, anns, startup, inner, decode, net, post_all) -> dict:
    from cvcurate import store

    t0 = time.perf_counter()
    store.write_detections("neu", "predictions_split", labels.records, anns, labels.classes)
    write = time.perf_counter() - t0
    return {"startup_s": round(startup, 2), "startup_in_interpreter_s": round(inner, 2), "decode_resize_s": round(decode, 2),
            "network_s": round(net, 2), "post_processing_s": round(post_all - net, 2), "store_write_s": round(write, 2),
            "boxes": int(sum(len(a) for a in anns))}


def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--work", type=Path, required=True, help="working folder (its database is kept)")
    ap.add_argument("--runtime", nargs="+", default=["torch", "onnx"],
                    help="torch, onnx, or either with +flip (predict --flip-check: end to end only)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--no-split", action="store_true", help="end to end only")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    def run() -> int:
        from cvcurate import formats, store
        from cvcurate.stages.imports import import_dataset

        if not store.exists("neu"):
            import_dataset(args.data, "neu", formats.ImportOptions(voc_origin="1"))
        labels = store.read("neu")
        n = len(labels.records)
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CVCURATE_PROGRESS": "0"}
        # the network exported and its card cached once, as after a first run
        if any(r.startswith("onnx") for r in args.runtime):
            from cvcurate.detector import lite

            lite.load("neu-det")
        rows = []
        for rnd in range(args.rounds):
            for rt in args.runtime:
                base, _, flip = rt.partition("+")
                cmd = [sys.executable, "-c", "from cvcurate.cli import main; main()", "predict", "neu", "--model",
                       "neu-det", "--runtime", base, "--batch-size", str(args.batch_size)]
                cmd += ["--flip-check"] if flip else []
                t0 = time.perf_counter()
                out = subprocess.run(cmd, cwd=args.work, env=env, capture_output=True, text=True)
                secs = time.perf_counter() - t0
                if out.returncode:
                    print(out.stdout[-2000:], out.stderr[-2000:])
                    return out.returncode
                row = {"round": rnd, "runtime": rt, "images": n, "end_to_end_s": round(secs, 2),
                       "images_per_s": round(n / secs, 1)}
                if not args.no_split and not flip:
                    row.update(split(labels, rt, args.batch_size, os.cpu_count() or 1))
                rows.append(row)
                print(json.dumps(row), flush=True)
        (args.work / "result.json").write_text(json.dumps(rows, indent=1))
        return 0

    from cvcurate.store import private_database

    with private_database(args.work / "db"):
        rc = run()
    sys.stdout.flush()
    os._exit(rc)  # FiftyOne's exit handlers can hang after a private database


if __name__ == "__main__":
    main()
