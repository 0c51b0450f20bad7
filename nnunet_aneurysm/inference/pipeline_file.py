"""The pipeline file: one small versioned JSON file naming everything a prediction needs.

Paths inside are relative to the file, so a folder holding the file and its models can be zipped
and moved. Written by the demo and by ``nnunet-aneurysm pipeline init``; read by
``predict-series`` and ``load_pipeline``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from nnunet_aneurysm import __version__
from nnunet_aneurysm.labels import SUBMISSION_COLUMNS
from nnunet_aneurysm.roi import RoiSettings

FORMAT = "nnunet-aneurysm pipeline"
VERSION = 1


@dataclass
class ModelEntry:
    """An nnU-Net model folder (``<trainer>__<plans>__<configuration>``) and the folds to ensemble."""

    folder: str  # relative to the pipeline file
    folds: list[int]
    checkpoint: str = "checkpoint_final.pth"


@dataclass
class Pipeline:
    stage1: ModelEntry
    stage2: ModelEntry
    roi: dict = field(default_factory=lambda: asdict(RoiSettings()))
    flip_tta: bool = True
    graph: dict | None = None  # vessel-graph settings (postprocessing), None: no graph step
    gat: str | None = None  # folder of the per-fold GAT models, relative to the file
    stacker: str | None = None  # folder of the stacker, relative to the file
    fallback_probabilities: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SUBMISSION_COLUMNS, 0.5))
    plugin_version: str = __version__
    path: Path | None = None  # where it was read from (not saved)

    def resolve(self, relative: str) -> Path:
        """A path of the file, absolute."""
        return (self.path.parent if self.path else Path.cwd()) / relative

    def roi_settings(self) -> RoiSettings:
        return RoiSettings(tuple(self.roi["size_mm"]), float(self.roi["spacing_mm"]),
                           float(self.roi["vessel_threshold"]))

    def choose(self, folds: list[int] | None = None, checkpoint: str | None = None,
               flip_tta: bool | None = None) -> Pipeline:
        """This pipeline with other folds, checkpoint file or flip TTA for both stages (``predict-series -f``,
        ``-chk``, ``--disable_tta``); the models checked like the file's own (one-line ValueError)."""
        stages = {name: replace(entry, folds=list(folds) if folds else entry.folds,
                                checkpoint=checkpoint or entry.checkpoint)
                  for name, entry in (("stage1", self.stage1), ("stage2", self.stage2))}
        where = self.path or Path.cwd() / "pipeline.json"
        try:
            for name, entry in stages.items():
                _check_model(where, name, asdict(entry))
        except ValueError as err:
            raise ValueError(f"folds {stages['stage1'].folds} and {stages['stage1'].checkpoint} chosen, but {err}") \
                from None
        return replace(self, **stages, flip_tta=self.flip_tta if flip_tta is None else flip_tta)

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        body = {"format": FORMAT, "version": VERSION, **{k: v for k, v in asdict(self).items() if k != "path"}}
        tmp = path.with_suffix(path.suffix + ".partial")
        tmp.write_text(json.dumps(body, indent=2))
        os.replace(tmp, path)
        self.path = path
        return path


def relative_to(target: Path, pipeline_file: Path) -> str:
    """``target`` as a path relative to the pipeline file's folder."""
    return os.path.relpath(Path(target).resolve(), Path(pipeline_file).resolve().parent)


def _fail(path: Path, key: str, problem: str):
    raise ValueError(f"{path}: {key}: {problem}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_keys(path: Path, where: str, body, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """``body`` is a JSON object with every required key and no key outside required + optional."""
    if not isinstance(body, dict):
        _fail(path, where or "the file", f"a JSON object, not {type(body).__name__}")
    prefix = f"{where}." if where else ""
    for key in body:
        if key not in required and key not in optional:
            _fail(path, prefix + key, "unknown key")
    for key in required:
        if key not in body:
            _fail(path, prefix + key, "missing")


def _check_folder(path: Path, key: str, value) -> None:
    """A folder relative to the pipeline file (or null), which must exist."""
    if value is None:
        return
    if not isinstance(value, str):
        _fail(path, key, f"a folder (text) or null, not {type(value).__name__}")
    if not (path.parent / value).is_dir():
        _fail(path, key, f"no folder {path.parent / value}")


def _check_model(path: Path, name: str, entry) -> None:
    _check_keys(path, name, entry, ("folder", "folds"), ("checkpoint",))
    folds, checkpoint = entry["folds"], entry.get("checkpoint", ModelEntry.checkpoint)
    if not isinstance(folds, list) or not folds or not all(isinstance(f, int) and not isinstance(f, bool)
                                                           for f in folds):
        _fail(path, f"{name}.folds", f"a non-empty list of integers, not {folds!r}")
    if not isinstance(checkpoint, str):
        _fail(path, f"{name}.checkpoint", f"a file name (text), not {type(checkpoint).__name__}")
    _check_folder(path, f"{name}.folder", entry["folder"])
    folder = path.parent / entry["folder"]
    for fold in folds:
        if not (folder / f"fold_{fold}" / checkpoint).is_file():
            _fail(path, f"{name}.folds", f"fold {fold} has no fold_{fold}/{checkpoint} in {folder}")


def _check_roi(path: Path, roi) -> None:
    _check_keys(path, "roi", roi, ("size_mm", "spacing_mm", "vessel_threshold"))
    size = roi["size_mm"]
    if not isinstance(size, list) or len(size) != 3 or not all(_is_number(v) and v > 0 for v in size):
        _fail(path, "roi.size_mm", f"a list of 3 positive numbers (mm), not {size!r}")
    if not _is_number(roi["spacing_mm"]) or roi["spacing_mm"] <= 0:
        _fail(path, "roi.spacing_mm", f"a positive number (mm), not {roi['spacing_mm']!r}")
    if not _is_number(roi["vessel_threshold"]) or not 0 < roi["vessel_threshold"] < 1:
        _fail(path, "roi.vessel_threshold", f"a number in (0, 1), not {roi['vessel_threshold']!r}")


def check_pipeline_body(path: Path, body) -> None:
    """Every key of a pipeline file: present, known, of its type, its paths existing (relative to ``path``).
    The first defect is a one-line ValueError naming its key (``stage2.folds: ...``)."""
    required = ("format", "version", "stage1", "stage2", "roi", "fallback_probabilities")
    _check_keys(path, "", body, required, tuple(f.name for f in fields(Pipeline) if f.name not in (*required, "path")))
    if body["format"] != FORMAT:
        _fail(path, "format", f"{body['format']!r}: not an nnunet-aneurysm pipeline file")
    if body["version"] != VERSION:
        _fail(path, "version", f"pipeline format version {body['version']!r}; this plugin reads {VERSION}")
    for name in ("stage1", "stage2"):
        _check_model(path, name, body[name])
    _check_roi(path, body["roi"])
    if not isinstance(body.get("flip_tta", True), bool):
        _fail(path, "flip_tta", f"true or false, not {type(body['flip_tta']).__name__}")
    if not isinstance(body.get("graph"), (dict, type(None))):
        _fail(path, "graph", f"a JSON object or null, not {type(body['graph']).__name__}")
    for name in ("gat", "stacker"):
        _check_folder(path, name, body.get(name))
    fallback = body["fallback_probabilities"]
    _check_keys(path, "fallback_probabilities", fallback, SUBMISSION_COLUMNS)
    for column, value in fallback.items():
        if not _is_number(value) or not 0 <= value <= 1:
            _fail(path, f"fallback_probabilities.{column}", f"a number in [0, 1], not {value!r}")
    if not isinstance(body.get("plugin_version", ""), str):
        _fail(path, "plugin_version", f"text, not {type(body['plugin_version']).__name__}")


def read_pipeline(path: Path | str) -> Pipeline:
    """Read and check a pipeline file; a one-line ValueError names what is wrong (and its key)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no pipeline file {path}")
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON ({err.msg}, line {err.lineno})") from None
    check_pipeline_body(path, body)
    body = {k: v for k, v in body.items() if k not in ("format", "version")}
    pipeline = Pipeline(stage1=ModelEntry(**body.pop("stage1")), stage2=ModelEntry(**body.pop("stage2")), **body)
    pipeline.path = path.resolve()
    return pipeline
