"""shrink: a reproducible pipeline that compresses an image classifier end to end."""

__version__ = "0.1.0"
