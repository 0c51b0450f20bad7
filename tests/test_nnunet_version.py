"""The supported nnunetv2 range is declared once and checked when the nnU-Net-facing rooms are imported."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from nnunet_aneurysm import nnunet_version
from nnunet_aneurysm.cli import main
from nnunet_aneurysm.nnunet_version import SUPPORTED_NNUNETV2, UnsupportedNnunetVersion, require_supported_nnunetv2

NNUNET_FACING = ("nnunet_aneurysm.planners", "nnunet_aneurysm.trainers", "nnunet_aneurysm.inference.nnunet_io")


@pytest.mark.parametrize("installed, supported", [("2.8.1", True), ("2.8.4", True), ("2.8.0", False),
                                                  ("2.9.0", False), ("2.9.0rc1", False), ("3.0", False)])
def test_the_range_admits_2_8_patch_releases_only(monkeypatch, installed, supported):
    monkeypatch.setattr(nnunet_version, "installed_nnunetv2_version", lambda: installed)
    if supported:
        assert require_supported_nnunetv2() == installed
    else:
        with pytest.raises(UnsupportedNnunetVersion, match=re.escape(f"nnunetv2 {installed} is installed")):
            require_supported_nnunetv2()


@pytest.mark.parametrize("module", NNUNET_FACING)
def test_importing_a_nnunet_facing_module_with_another_nnunetv2_is_one_line_naming_both(monkeypatch, module):
    monkeypatch.setattr(nnunet_version, "installed_nnunetv2_version", lambda: "2.9.0")
    monkeypatch.delitem(sys.modules, module, raising=False)  # imported afresh, as a new process would
    with pytest.raises(ImportError) as raised:
        importlib.import_module(module)
    message = str(raised.value)
    assert "\n" not in message and "2.9.0" in message and SUPPORTED_NNUNETV2 in message


def test_the_command_line_says_so_in_one_line_with_exit_status_2(monkeypatch, capsys):
    monkeypatch.setattr(nnunet_version, "installed_nnunetv2_version", lambda: None)
    monkeypatch.delitem(sys.modules, "nnunet_aneurysm.planners", raising=False)
    assert main(["ext-path"]) == 2
    assert capsys.readouterr().err == (f"nnunet-aneurysm: error: nnunetv2 is not installed; nnunet-aneurysm supports "
                                       f"nnunetv2 {SUPPORTED_NNUNETV2}: pip install 'nnunetv2{SUPPORTED_NNUNETV2}'\n")


def test_the_tested_pin_lies_in_the_supported_range():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    pins = re.findall(r'^\s*"nnunetv2==([^"]+)"', pyproject, re.MULTILINE)
    assert len(pins) == 1 and SpecifierSet(SUPPORTED_NNUNETV2).contains(pins[0])
