"""The installed package's version (a leaf module: imports nothing of patternsearch)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("patternsearch")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
