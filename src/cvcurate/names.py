"""Names the stages share: stored fields, saved views, the issue taxonomy, and the rule that picks
the predictions.

One home for each name a second module reads, so that a field written by one stage is found by
the others under the same spelling (the review tags are in :mod:`cvcurate.decisions`, with what
they decide). Plain constants and functions: importing it costs nothing.
"""

from __future__ import annotations

from typing import Iterable

GT_FIELD = "ground_truth"
PRED_FIELD = "predictions"  # what 'cvcurate predict' (and import of predictions) writes
OOF_FIELD = "predictions_oof"  # what 'cvcurate train --folds K' writes: out-of-fold, preferred by every reader
PRED_FIELDS = (OOF_FIELD, PRED_FIELD)  # in the order readers prefer them
# per-prediction numbers 'predict --flip-check' keeps as attributes of each predicted box
# (cvcurate.detector.flipcheck): the store writes and reads them, the scorer's error models read them
PRED_ATTRIBUTES = ("flip_iou", "flip_conf")
# the lock purposes of the commands that write predictions alone: a reader of the labels, the tags
# and the score runs reads beside them (store.read_lock)
PREDICTION_WRITERS = ("predict", "train --folds", "predict --from-file")

# what a score run writes (stages.score declares them; review, gate, export read them)
FIX_FIELD = "cvc_fixes"  # proposed fixes, as boxes labelled "#<box> <action> <class>" ("+ add <class>": a new box)
SUSPECTS_FIELD = "cvc_suspects"  # the suspect boxes themselves, labelled "#<box> <issue type>"
SCORE_FIELD = "cvc_score"  # an image's score: the probability that at least one of its possible errors is real
TOP_P_FIELD = "cvc_top_p"  # the highest p of an image's issues: an image is in a queue when it is >= queue_min_p
REASON_FIELD = "cvc_reason"  # the top issue of the image, "type: reason", first in the App's sidebar
ISSUES_FIELD = "cvc_issues"  # "type (score): reason", best first (for people: readers use the run's record)


class Attr:
    """The attributes of a stored fix or suspect box (plain detection dicts: ``d[Attr.TARGET]``)."""

    ACTION = "cvc_action"  # add, relabel, move, remove, clip, merge, split
    TYPE = "cvc_type"  # the issue type that proposes it
    CLASS = "cvc_class"  # the class name after the fix
    TARGET = "cvc_target"  # the id of the given box it changes (a suspect: the box it is about)
    REASON = "cvc_reason"
    OTHERS = "cvc_others"  # merge: the ids of the boxes merged into the target, comma-separated
    GROUP = "cvc_group"  # split: the pieces of one box share it
    ISSUE = "cvc_issue"  # the id of the issue (cvcurate decide takes it)
    ADDED_BY = "cvc_added_by"  # a box an applied fix added: the fix's id


FIX_ATTRS = (Attr.ACTION, Attr.TYPE, Attr.CLASS, Attr.TARGET, Attr.REASON, Attr.OTHERS, Attr.GROUP, Attr.ISSUE)
SUSPECT_ATTRS = (Attr.TYPE, Attr.REASON, Attr.ISSUE, Attr.TARGET)


# what the augment stage writes on the samples it adds (export and the leakage checks read them)
AUGMENTED_TAG = "augmented"
AUGMENT_FIELD = "cvc_augment"  # per-sample provenance

# review queues: each groups issue types a reviewer handles the same way
QUEUES: dict[str, tuple[str, ...]] = {
    "overlooked": ("overlooked",),
    "swap": ("swap",),
    "badloc": ("badloc", "spurious"),
    "geometry": ("degenerate", "out_of_image"),
    "conventions": ("convention",),  # boxes that break a labeling convention the team adopted
    "inconsistent": ("split", "merged", "fragment", "style_fragmented", "style_merged", "size_outlier", "class_conflict",
                     "rare_class_mix"),
    "duplicates": ("duplicate", "near_duplicate", "leakage"),
    "image": ("blur", "underexposed", "overexposed", "unreadable"),
}
ISSUE_TYPES = tuple(t for types in QUEUES.values() for t in types)

# issue types that say "this label is wrong" (not an image or style remark): the gate's and the
# report's expected label errors count these
LABEL_ERROR_TYPES = ("overlooked", "swap", "badloc", "spurious", "degenerate", "out_of_image", "duplicate",
                     "class_conflict", "split", "merged", "fragment", "convention")
# facts, not estimates: a box without area or outside the image is wrong by definition
CERTAIN_TYPES = ("degenerate", "out_of_image", "unreadable")
# the box types: one of them per given box at most (the learned model's and the curves' types)
BOX_TYPES = ("swap", "badloc", "spurious", "split", "merged")


def quoted(name: object) -> str:
    """A class name as text shows it: in single quotes, so that class ``3`` never reads as a count
    (``"1 '3' box(es) here"``, ``"box 4 ('crazing')"``)."""
    return f"'{name}'"


def default_pred_field(fields: Iterable[str]) -> str | None:
    """The predictions a reader uses when none is named: out-of-fold, else the model's, else none."""
    have = set(fields)
    return next((f for f in PRED_FIELDS if f in have), None)


def queue_field(queue: str) -> str:
    """A sample's best p among a queue's issues."""
    return f"cvc_{queue}"


def queue_reason_field(queue: str) -> str:
    """The top issue of a queue on a sample; the queue's views show it as ``cvc_reason``, so a
    tile of the swap queue shows its swap, not the image's top issue of another kind."""
    return f"cvc_reason_{queue}"


def view_name(queue: str, everything: bool = False) -> str:
    """The saved view of a queue: its issues at p >= the run's threshold, or all it lists."""
    return f"cvc-{queue}-all" if everything else f"cvc-{queue}"


def in_sample_remedy(name: str, inside: int, total: int) -> str:
    """What to do about predictions of a model that trained on ``inside`` of the ``total`` images
    of dataset ``name``, cheapest first (the in-sample warnings and the gate say it)."""
    from .errors import shell_arg

    n = shell_arg(name)
    out = []
    if inside < total:
        out.append(f"'cvcurate score {n} --only-out-of-sample' scores the {total - inside} images it did not "
                   f"train on, now")
    out.append(f"'cvcurate train {n} --folds 5 --init synth' gives every image an out-of-fold prediction from "
               f"synthetic weights fine-tuned on the other folds (a fraction of training from scratch; "
               f"--init neu-det where those weights never saw these images)")
    return "remedies, cheapest first: " + "; ".join(out)

