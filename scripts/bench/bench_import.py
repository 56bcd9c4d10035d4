"""Benchmark: images/s importing the NEU-DET dev split into FiftyOne.

cvcurate's importer (parse, check every image, rescale, report, bulk write) against FiftyOne's own
``fo.Dataset.from_dir(..., dataset_type=fo.types.VOCDetectionDataset)``, in one run, on a
throwaway database. Goal: at least 2x FiftyOne's own importer.

    python scripts/bench/bench_import.py [--data ../shared/data/neu-det] [--repeats 3]
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time

os.environ["CVCURATE_PROGRESS"] = "0"

import common  # noqa: E402  (scripts/bench/common.py)



def main() -> int:
    ap = common.parser(__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not (args.data / "images").is_dir():
        print(f"skipped: {args.data} is absent")
        return 0
    from cvcurate import store
    from cvcurate.stages import imports as importer

    fo = store._fo()
    fo.Dataset("warmup").delete()  # start the database before timing
    n_images = sum(1 for _ in (args.data / "images").iterdir())
    ours, theirs = [], []
    for rep in range(args.repeats):
        t = time.perf_counter()
        res = importer.import_dataset(args.data, f"bench_cvcurate_{rep}")
        ours.append(time.perf_counter() - t)
        assert res.report.images_read == n_images and res.write.added == n_images
        t = time.perf_counter()
        ds = fo.Dataset.from_dir(dataset_dir=str(args.data), dataset_type=fo.types.VOCDetectionDataset,
                                 data_path="images", labels_path="annotations", name=f"bench_fo_{rep}",
                                 progress=False)
        theirs.append(time.perf_counter() - t)
        assert len(ds) == n_images, len(ds)
        boxes_fo = ds.count("ground_truth.detections")
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"fiftyone {fo.__version__}")
    print(f"images: {n_images}, boxes: cvcurate {res.report.boxes_imported}, fiftyone {boxes_fo}")
    print(f"cvcurate import:            {n_images / ours_s:8.0f} images/s  (median of {args.repeats}: {ours_s:.2f} s)")
    print(f"fo.Dataset.from_dir (VOC):  {n_images / theirs_s:8.0f} images/s  (median of {args.repeats}: {theirs_s:.2f} s)")
    ratio = theirs_s / ours_s
    print(f"speed-up: {ratio:.1f}x (goal >= 2x): {'PASS' if ratio >= 2 else 'FAIL'}")
    print(f"| import NEU-DET ({n_images} img) | {n_images / ours_s:.0f} img/s | {n_images / theirs_s:.0f} img/s | {ratio:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(common.run_on_private_database(main))
