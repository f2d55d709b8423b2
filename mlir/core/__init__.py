"""Foundations every layer uses: one-line user errors, data/cache paths, config resolvers and
validation, logging with redaction. Nothing here imports training, evaluation or the study."""
