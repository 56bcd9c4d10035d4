"""cvcurate: find and fix what is wrong with object-detection datasets before training."""

__version__ = "0.1.0"
