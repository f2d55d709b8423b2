"""Evaluation: exact search and relevant ranks (search), trec_eval-compatible metrics (metrics)."""
