"""FastAPI service that embeds items with an exported encoder and indexes them in FAISS."""

__version__ = "0.1.0"
