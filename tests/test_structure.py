"""The package's rooms keep their walls: data flows one way, and the rules below hold from now on.

Every import statement of every module is read (module level and inside functions alike).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nnunet_aneurysm"
NOT_IN_NETWORKS = ("pandas", "nnunetv2", "batchgenerators", "batchgeneratorsv2", "dynamic_network_architectures")


def _imports(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(module, names) of every import in a file; relative imports resolved against the package."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = path.relative_to(PACKAGE.parent).with_suffix("").parts[: -node.level]
                module = ".".join([*parts, module] if module else parts)
            out.append((module, tuple(alias.name for alias in node.names)))
    return out


def _room(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _all_imports():
    for path in sorted(PACKAGE.rglob("*.py")):
        for module, names in _imports(path):
            yield path, module, names


def test_networks_and_losses_are_plain_torch():
    allowed = ("nnunet_aneurysm.networks", "nnunet_aneurysm.losses")
    offenders = []
    for path, module, _ in _all_imports():
        if _room(path) not in ("networks", "losses"):
            continue
        if module.split(".")[0] in NOT_IN_NETWORKS:
            offenders.append(f"{path.name}: {module}")
        if module.startswith("nnunet_aneurysm") and not module.startswith(allowed):
            offenders.append(f"{path.name}: {module}")
    assert not offenders


def test_only_the_cli_imports_the_cli():
    offenders = [f"{path.name}: {module}" for path, module, names in _all_imports()
                 if path.name != "cli.py" and (module == "nnunet_aneurysm.cli" or
                                               (module == "nnunet_aneurysm" and "cli" in names))]
    assert not offenders


def test_inference_never_reaches_into_training():
    """Inference may name trainer classes (nnU-Net rebuilds networks through them), nothing else of trainers/."""
    offenders = []
    for path, module, names in _all_imports():
        if _room(path) != "inference" or not module.startswith("nnunet_aneurysm.trainers"):
            continue
        if module != "nnunet_aneurysm.trainers" or not all(n.endswith("Trainer") for n in names):
            offenders.append(f"{path.name}: {module} {names}")
    assert not offenders


def test_the_rules_see_imports_inside_functions():
    """The walker is not blind to the package's habit of importing heavy modules inside verbs."""
    cli = [module for module, _ in _imports(PACKAGE / "cli.py")]
    assert "nnunet_aneurysm.dataset_conversion.convert" in cli


def test_postprocessing_never_reaches_into_inference():
    """Postprocessing takes arrays and graphs and never runs a model: inference calls it, never the reverse."""
    offenders = [f"{path.name}: {module}" for path, module, names in _all_imports()
                 if _room(path) == "postprocessing" and (module.startswith("nnunet_aneurysm.inference") or
                                                         (module == "nnunet_aneurysm" and "inference" in names))]
    assert not offenders, offenders
