"""The package version, on its own so that any layer may read it without importing the
public functions of `ltsweep/__init__.py` (which reach up to `store` and `planning`)."""

__version__ = "0.1.0"
