"""The hybrid-batch study: from a sweep's job directories to a tested, plain-language answer.

* :mod:`mlir.study.runs`: discovering the jobs (arm, fold, seed) and their per-question scores;
* :mod:`mlir.study.stats`: the statistics (unit of replication: the training run), pure numpy/scipy;
* :mod:`mlir.study.answer`: the verdicts and sentences, by fixed rules;
* :mod:`mlir.study.render`: report.md, report.csv, significance.csv and the figures;
* :mod:`mlir.study.summary`: summary.md, the README's block of the answer, and splicing it in;
* :mod:`mlir.study.report`: :func:`~mlir.study.report.build_report`, ``write_report`` and the CLI
  (``python -m mlir.report <sweep dir>``).

Design and calibration: ``docs/statistics.md``.
"""
