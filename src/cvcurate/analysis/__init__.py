"""Error analysis for the people who decide what to fix: label-issue rates per slice with
intervals, plots, thumbnails of the top issues, the class-balance plan, as HTML / Markdown / JSON.

Pure: plain data in (:class:`~cvcurate.analysis.render.ReportInput`), files out; never touches the
store. The report stage gathers the input from the store.

* :func:`compute_slices`, :func:`slice_table_markdown`, :func:`wilson`, :func:`class_balance`
  (:mod:`.slices`)
* :func:`build_report`, :func:`write_report`, :func:`make_report`, :class:`ReportInput` (:mod:`.render`)
* :func:`pr_curves` (:mod:`.curves`): what ``evaluation["pr_curves"]`` holds
"""

from __future__ import annotations

from .curves import pr_curves
from .render import Report, ReportInput, build_report, make_report, to_html, to_markdown, write_report
from .slices import (NO_AUGMENT, Slice, SliceResult, class_balance, compute_slices, slice_table_markdown,
                     wilson)

__all__ = ["pr_curves", "Report", "ReportInput", "build_report", "make_report", "to_html", "to_markdown",
           "write_report", "NO_AUGMENT", "Slice", "SliceResult", "class_balance", "compute_slices",
           "slice_table_markdown", "wilson"]
