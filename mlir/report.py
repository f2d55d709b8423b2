"""``python -m mlir.report <sweep dir> [--out DIR] [--hybrid-alpha 0.5|dev] [--metric map]``.

Kept so the documented command and imports keep working; the study's report lives in
:mod:`mlir.study` (runs, statistics, answer, rendering) and this module only forwards to it.
"""

from __future__ import annotations

import sys

from mlir.study.report import SweepReport, build_report, main, write_report

__all__ = ["SweepReport", "build_report", "main", "write_report"]

if __name__ == "__main__":
    sys.exit(main())
