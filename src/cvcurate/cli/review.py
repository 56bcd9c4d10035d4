"""Review commands: review (the App on ranked queues, or progress) and apply (confirmed fixes, undo)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError, shell_arg
from ..stages import apply as apply_stage
from ..stages import review as review_lib
from ..scoring import QUEUES
from . import app
from .common import say, serve_app, wait_option

QUEUE_CHOICES = ["all", *QUEUES]


@app.command("review")
def review_cmd(
    name: str = typer.Argument(..., help="Dataset name (scored with 'cvcurate score')."),
    queue: Optional[str] = typer.Option(None, "--queue", "-q", help=f"Queue to open: {', '.join(QUEUE_CHOICES)} "
                                        "[default: print the queue overview]."),
    top: Optional[int] = typer.Option(None, "--top", min=1, help="Open only the first N samples of the queue."),
    min_score: Optional[float] = typer.Option(None, "--min-score", min=0.0, max=1.0,
                                              help="Open only samples whose queue score (the largest p of its "
                                              "issues in the queue) is at least this; may go below the queue "
                                              "threshold."),
    everything: bool = typer.Option(False, "--all", help="Every listed issue of the queue, also those below the "
                                    "queue threshold (p < calibration.queue_min_p, 0.5 by default)."),
    port: int = typer.Option(5151, "--port", help="Port of the App (1-65535, free on --address)."),
    address: str = typer.Option("127.0.0.1", "--address", help="Address to serve on (0.0.0.0 for all)."),
    remote: bool = typer.Option(False, "--remote", help="Serve for a browser on another machine and print the "
                                "URL, instead of opening a local browser."),
    summary: bool = typer.Option(False, "--summary", help="Show review progress per queue (fixes confirmed, "
                                 "rejected, open, applied) and exit."),
) -> None:
    """Open the FiftyOne App on a ranked review queue, or show the queues and review progress.

    Without --queue: the queue overview (samples per queue, the expected number of real errors in
    it, the sum of its issues' probabilities p, and its estimated precision, their mean). A queue
    holds the issues with p >= 0.5 (calibration.queue_min_p in configs/score.yaml); --all shows the
    rest too. Each queue is a saved view (cvc-<queue>, cvc-<queue>-all with --all, also in the App's
    sidebar when opened without cvcurate) sorted by the queue's score; --top and --min-score cut it to what a reviewer can finish. The sidebar
    shows each sample's issues (cvc_issues) and the ground truth, predictions and proposed fixes
    (cvc_fixes: boxes labelled '#<box> <action> <class>') as layers over the image. Tag a fix box with
    error:confirmed or error:rejected, or a whole sample (all of its fixes or none); then
    'cvcurate apply NAME' applies the confirmed fixes. Ctrl-C closes.

    Examples:

      cvcurate review neu

      cvcurate review neu --queue swap --top 50 --remote --port 5151

      cvcurate review neu --summary
    """
    if queue is not None and queue not in QUEUE_CHOICES:
        raise InputError(f"unknown --queue {queue!r}: use one of {', '.join(QUEUE_CHOICES)}")
    if summary:
        rows = review_lib.summary(name)
        say(f"review progress of {name}:")
        say(f"{'queue':<14}{'samples':>8}{'fixes':>7}{'confirmed':>11}{'rejected':>10}{'open':>7}{'applied':>9}")
        for p in rows:
            say(f"{p.queue:<14}{p.samples:>8}{p.fixes:>7}{p.confirmed:>11}{p.rejected:>10}{p.open:>7}{p.applied:>9}")
        return
    review_lib.check_port(address, port)  # before anything slow: a bad port is a usage error
    if queue is None:
        sizes = review_lib.overview(name, min_score, everything)
        say(f"review queues of {name}" + (f" (--min-score {min_score:g})" if min_score is not None else "")
            + (" (--all)" if everything else "") + ":")
        say(f"{'queue':<14}{'samples':>8}{'shown':>8}{'issues':>8}{'expected errors':>17}{'est. precision':>16}")
        for q in sizes:
            if q.expected is None:
                say(f"{q.queue:<14}{q.samples:>8}{q.shown:>8}{'-':>8}{'n/a (score again)':>17}{'n/a':>16}")
                continue
            est = f"{q.estimated_precision:.2f}" if q.estimated_precision is not None else "-"
            say(f"{q.queue:<14}{q.samples:>8}{q.shown:>8}{q.flagged:>8}{q.expected:>17.1f}{est:>16}")
        say("expected errors: the sum of p of the queue's issues; estimated precision (est. precision): their mean (p: the calibrated "
            "probability that an issue is a real error)")
        say(f"open one: cvcurate review {shell_arg(name)} --queue swap --top 50")
        return
    session = review_lib.open_app(name, queue, port=port, address=address, remote=remote, top=top,
                                  min_score=min_score, everything=everything)
    host = "localhost" if address in ("0.0.0.0", "127.0.0.1") else address
    cut = "".join([f", top {top}" if top else "", f", score >= {min_score:g}" if min_score is not None else ""])
    view = review_lib.view_name(queue, everything or min_score is not None)
    serve_app(session, f"http://{host}:{port}/", f"queue {queue!r} of {name} (view {view}{cut})")


@app.command("decide")
def decide_cmd(
    name: str = typer.Argument(..., help="Dataset name (scored with 'cvcurate score')."),
    confirm: Optional[list[str]] = typer.Option(None, "--confirm", help="Issue id to confirm (repeat the option)."),
    reject: Optional[list[str]] = typer.Option(None, "--reject", help="Issue id to reject (repeat the option)."),
    from_file: Optional[Path] = typer.Option(None, "--from-file", help="CSV with columns issue_id and decision "
                                             "(confirm/reject): issues.csv of 'cvcurate score' with its decision "
                                             "column filled in."),
    wait: float = wait_option(),
) -> None:
    """Record review decisions from the command line, without the App.

    Issue ids are the issue_id column of the score run's issues.csv (and "id" in scores.json):
    <sample id>:<box>:<type>. A decision tags the issue's proposed fixes (and its suspect box)
    with error:confirmed or error:rejected, exactly as a reviewer does in the App; then
    'cvcurate apply NAME' applies the confirmed fixes. Re-scoring keeps the decisions.

    Examples:

      cvcurate decide neu --confirm 65a1f0c2e4b0a1b2c3d4e5f6:1:swap --reject 65a1f0c2e4b0a1b2c3d4e5f7:0:badloc

      cvcurate decide neu --from-file neu_scores/issues.csv   (its decision column filled in: confirm or reject)
    """
    yes, no = list(confirm or []), list(reject or [])
    if from_file is not None:
        c2, r2 = review_lib.read_decisions(from_file)
        yes += c2
        no += r2
    if not yes and not no:
        raise InputError("nothing to decide: give --confirm ID, --reject ID or --from-file decisions.csv")
    res = review_lib.decide(name, confirm=yes, reject=no, wait=wait)
    if res.confirmed or res.rejected:
        say(f"{name}: {res.confirmed} issue(s) confirmed, {res.rejected} rejected; {res.fixes_tagged} proposed fix(es) "
            f"tagged" + (f"; {len(res.without_fix)} of them propose no fix (recorded on the suspect box)"
                         if res.without_fix else ""))
    if res.unknown:
        raise InputError(f"{len(res.unknown)} issue id(s) not in the last score run of {name!r}: "
                         f"{', '.join(res.unknown[:5])}{' ...' if len(res.unknown) > 5 else ''} "
                         f"(ids are the issue_id column of issues.csv of the last score); "
                         f"{'the other decisions were recorded' if res.confirmed or res.rejected else 'nothing was recorded'}")
    if res.confirmed:
        say(f"apply them with: cvcurate apply {shell_arg(name)}")


@app.command("apply")
def apply_cmd(
    name: str = typer.Argument(..., help="Dataset name."),
    undo: bool = typer.Option(False, "--undo", help="Undo the last applied change set (or --change)."),
    change: Optional[str] = typer.Option(None, "--change", help="Change set id to undo."),
    log_dir: Optional[Path] = typer.Option(None, "--log-dir", help="Where change logs go [default: NAME_changes/]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change, change nothing."),
    force: bool = typer.Option(False, "--force", help="With --undo: restore the labels of before also on samples "
                               "whose boxes changed since the change set was applied (their later edits are lost)."),
    wait: float = wait_option(),
) -> None:
    """Apply the fixes reviewers confirmed to the ground truth in the store, or undo them.

    A confirmed swap takes the predicted class, a confirmed overlooked box is added, a
    confirmed badloc takes the predicted box, a confirmed spurious, degenerate or duplicate box
    is removed. Every change is logged with the ground truth before and after, so it can be
    undone. Source annotation files are never touched.

    Examples:

      cvcurate apply neu

      cvcurate apply neu --undo
    """
    if undo or change:
        cs = apply_stage.undo(name, change, force=force, wait=wait)
        say(f"undone {cs.change_id}: {len(cs.changes)} sample(s) of {name} restored")
        return
    if force:
        raise InputError("--force goes with --undo")
    cs = apply_stage.apply(name, log_dir=log_dir, dry_run=dry_run, wait=wait)
    if not cs.changes:
        say(f"no confirmed fixes to apply in {name} (tag fixes or samples 'error:confirmed' in the App)")
        return
    what = ", ".join(f"{k} {v}" for k, v in cs.by_action().items())
    for s in cs.skipped:
        say(f"skipped {Path(s['filepath'] or '?').name}: {s['why']}")
    if dry_run:
        say(f"would apply {cs.applied} fix(es) to {len(cs.changes)} sample(s) of {name}: {what}")
        for line in apply_stage.describe_changes(cs):
            say(f"  {line}")
        return
    say(f"applied {cs.applied} fix(es) to {len(cs.changes)} sample(s) of {name}: {what}; "
        f"change {cs.change_id}, log {cs.log_path}; undo with 'cvcurate apply {shell_arg(name)} --undo'")
