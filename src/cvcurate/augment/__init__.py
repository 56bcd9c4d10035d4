"""Augmentation for under-represented defect classes (pure compute: no store, no fiftyone).

* :mod:`.plan`: how many samples each class needs and which images they start from;
* :mod:`.pipeline`: albumentations 2.0.x pipelines in ``configs/augment/*.yaml``, validated;
* :mod:`.copypaste`: rare-class defect copy-paste (Simple Copy-Paste, Ghiasi et al. 2021);
* :mod:`.gpu`: the batched path on tensors (CUDA, or the CPU in tests); imports torch lazily;
* :mod:`.run`: writing the samples with provenance, deterministic for a seed, resumable.

Typical use (what the stage does)::

    pipe = load_pipeline("steel")
    cp = pipe.settings.copy_paste
    plan = make_plan(labels, None, n_paste=cp.per_sample if cp.enabled else (0, 0), seed=0)
    print(plan.table())                      # --dry-run stops here
    result = run_augmentation(labels, plan, pipe, out_dir, workers=2, progress=callback)

(:func:`plan_and_run` does both.)
"""

from .copypaste import Cut, Donor, Pasted, cut_defect, paste_defects, soft_mask
from .pipeline import (
    AugmentSettings,
    CopyPasteConfig,
    Pipeline,
    apply,
    dump_pipeline,
    leaf_variants,
    load_pipeline,
    pipeline_from_text,
    save_pipeline,
)
from .plan import (
    BALANCE,
    MAX_TARGET,
    YOLO_MIN_IMAGES,
    YOLO_MIN_INSTANCES,
    ClassRow,
    Job,
    Plan,
    check_target,
    extend_plan,
    make_plan,
)
from .run import (
    RunResult,
    Sample,
    plan_and_run,
    read_samples,
    remove_run,
    run_augmentation,
    written_indices,
)
from .workers import sample_rng

__all__ = [
    "BALANCE",
    "YOLO_MIN_IMAGES",
    "YOLO_MIN_INSTANCES",
    "AugmentSettings",
    "ClassRow",
    "CopyPasteConfig",
    "Cut",
    "Donor",
    "Job",
    "Pasted",
    "Pipeline",
    "Plan",
    "RunResult",
    "Sample",
    "apply",
    "cut_defect",
    "dump_pipeline",
    "MAX_TARGET",
    "check_target",
    "extend_plan",
    "leaf_variants",
    "load_pipeline",
    "make_plan",
    "paste_defects",
    "pipeline_from_text",
    "plan_and_run",
    "read_samples",
    "remove_run",
    "run_augmentation",
    "sample_rng",
    "save_pipeline",
    "soft_mask",
    "written_indices",
]
