"""nnU-Net v2 plugin for the RSNA 2025 intracranial aneurysm pipeline."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nnunet-aneurysm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
