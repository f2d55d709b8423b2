"""mlir: multilingual dense retrieval trained with hybrid monolingual / cross-lingual batches."""

__version__ = "0.1.0"
