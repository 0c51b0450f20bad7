"""The pipeline file: one small versioned JSON file naming everything a prediction needs.

Paths inside are relative to the file, so a folder holding the file and its models can be zipped
and moved. Written by the demo and by ``nnunet-aneurysm pipeline init``; read by
``predict-series`` and ``load_pipeline``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
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


def read_pipeline(path: Path | str) -> Pipeline:
    """Read and check a pipeline file; a one-line ValueError names what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no pipeline file {path}")
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON ({err.msg}, line {err.lineno})") from None
    if body.get("format") != FORMAT:
        raise ValueError(f"{path} is not an nnunet-aneurysm pipeline file")
    if body.get("version") != VERSION:
        raise ValueError(f"{path} has pipeline format version {body.get('version')}; this plugin reads {VERSION}")
    body = {k: v for k, v in body.items() if k not in ("format", "version")}
    pipeline = Pipeline(stage1=ModelEntry(**body.pop("stage1")), stage2=ModelEntry(**body.pop("stage2")), **body)
    pipeline.path = path.resolve()
    missing = set(SUBMISSION_COLUMNS) - set(pipeline.fallback_probabilities)
    if missing:
        raise ValueError(f"{path}: fallback_probabilities lack {sorted(missing)}")
    for name, entry in (("stage1", pipeline.stage1), ("stage2", pipeline.stage2)):
        folder = pipeline.resolve(entry.folder)
        absent = [f for f in entry.folds if not (folder / f"fold_{f}" / entry.checkpoint).is_file()]
        if absent:
            raise ValueError(f"{path}: {name} model {folder} lacks folds {absent} ({entry.checkpoint})")
    return pipeline
