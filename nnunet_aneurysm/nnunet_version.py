"""The nnunetv2 versions this plugin supports, declared once, and the guard its nnU-Net-facing rooms run on import.

Why: our planners and trainers subclass nnU-Net's classes and override their hooks, and our inference calls
nnU-Net's predictor internals; another nnU-Net minor release may rename any of them, which would surface as
an obscure AttributeError deep in training. ``planners``, ``trainers`` and ``inference/nnunet_io.py`` call
:func:`require_supported_nnunetv2` before importing nnunetv2, so an unsupported version is one line naming
both versions. ``pyproject.toml`` pins the version the project is tested with, inside this range.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet

from nnunet_aneurysm.nnunet_env import UserInputError

SUPPORTED_NNUNETV2 = ">=2.8.1,<2.9"  # PEP 440; an unparsable version is outside it


class UnsupportedNnunetVersion(UserInputError, ImportError):
    """The installed nnunetv2 is outside :data:`SUPPORTED_NNUNETV2` (an ImportError: raised while importing)."""


def installed_nnunetv2_version() -> str | None:
    """The installed nnunetv2's version (from its package metadata, without importing it); None if absent."""
    try:
        return version("nnunetv2")
    except PackageNotFoundError:
        return None


def require_supported_nnunetv2() -> str:
    """The installed nnunetv2's version, or a one-line :class:`UnsupportedNnunetVersion`."""
    installed = installed_nnunetv2_version()
    fix = f"pip install 'nnunetv2{SUPPORTED_NNUNETV2}'"
    if installed is None:
        raise UnsupportedNnunetVersion(f"nnunetv2 is not installed; nnunet-aneurysm supports nnunetv2 "
                                       f"{SUPPORTED_NNUNETV2}: {fix}")
    if not SpecifierSet(SUPPORTED_NNUNETV2).contains(installed, prereleases=True):
        raise UnsupportedNnunetVersion(f"nnunetv2 {installed} is installed; nnunet-aneurysm supports nnunetv2 "
                                       f"{SUPPORTED_NNUNETV2}: {fix}")
    return installed
