"""A DICOM series in, 14 probabilities out: the pipeline a user (or the competition's server) calls.

DICOM (the converter's reader) -> stage 1 (fold ensemble, flip TTA) -> vessel region of interest
-> stage 2 (fold models, flip TTA) -> [vessel graph -> GAT -> stacker] -> one row in submission
column order. Every step that fails falls back to the previous step's answer, and a series that
cannot be read gets the pipeline file's fallback row (the training prevalence of each column); a
series in which stage 1 finds no vessel is read in a box centred on the scan, as roi-dataset did
in training. The reasons are recorded, never raised to the caller. Models are loaded once; one that
cannot be loaded is raised (:class:`ModelLoadError`), since no series could be predicted without it.
Many series to a submission file: ``submission.py``.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nnunet_aneurysm.dataset_conversion.dicom_reader import Volume, read_series
from nnunet_aneurysm.inference.pipeline_file import Pipeline, read_pipeline
from nnunet_aneurysm.inference.roi_dataset import roi_channels
from nnunet_aneurysm.inference.stage1 import Stage1Model, VesselPrediction
from nnunet_aneurysm.inference.stage2 import Stage2Model, Stage2Prediction
from nnunet_aneurysm.labels import ID_COLUMN, SUBMISSION_COLUMNS
from nnunet_aneurysm.metadata import encode_metadata, metadata_from_header
from nnunet_aneurysm.roi import Roi

log = logging.getLogger("nnunet_aneurysm.predict")


# SeriesResult.seconds keys, in the order the steps run (stage1_preprocess is part of stage1)
STEP_SECONDS = ("read", "stage1_preprocess", "stage1", "roi", "stage2", "postprocessing")


@dataclass
class SeriesResult:
    series_uid: str
    probabilities: np.ndarray  # [14], submission column order
    source: str  # which step produced them: "stacker", "stage2", "fallback"
    reasons: list[str] = field(default_factory=list)  # why a step fell back, and what the reader repaired
    seconds: dict[str, float] = field(default_factory=dict)  # per step
    volume: Volume | None = None
    vessels: VesselPrediction | None = None
    roi: Roi | None = None
    channels: list[np.ndarray] | None = None  # stage 2's inputs on the ROI grid
    stage2: Stage2Prediction | None = None
    metadata: np.ndarray | None = None
    graphs: list | None = None  # per fold model: the vessel graph with its GAT scores
    candidates: pd.DataFrame | None = None  # GAT candidates in patient coordinates (mm)
    fold_features: pd.DataFrame | None = None  # the stacker's input, one row per fold model

    def row(self) -> dict:
        return {ID_COLUMN: self.series_uid, **dict(zip(SUBMISSION_COLUMNS, map(float, self.probabilities)))}


class ModelLoadError(RuntimeError):
    """A model named by the pipeline file cannot be loaded (one line: which, from where, why). No series can
    be predicted then, so it is raised, unlike the failures of one series."""


def _load(what: str, folder: Path, load):
    try:
        return load()
    except Exception as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [""]
        reason = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]  # torch's "Error(s) in loading...:"
        raise ModelLoadError(f"cannot load {what} from {folder}: {type(err).__name__}: {reason}") from err


class SeriesPipeline:
    """The models of a pipeline file, loaded once; :meth:`predict` is the competition's ``predict(series_path)``.

    ``device``: None is cuda where torch can use it, else cpu. ``tile_step_size``: nnU-Net's sliding-window
    step of both stages, a fraction of the patch (``-step_size``; 0.5 is nnU-Net's, larger is faster).
    A model that cannot be loaded raises :class:`ModelLoadError`."""

    def __init__(self, pipeline: Pipeline, device: str | torch.device | None = None, tile_step_size: float = 0.5):
        from nnunet_aneurysm.device import default_device

        self.pipeline, self.device = pipeline, torch.device(device or default_device())
        stage1, stage2 = pipeline.resolve(pipeline.stage1.folder), pipeline.resolve(pipeline.stage2.folder)
        self.stage1 = _load(f"stage 1 (folds {pipeline.stage1.folds}, {pipeline.stage1.checkpoint})", stage1,
                            lambda: Stage1Model(stage1, pipeline.stage1.folds, self.device, pipeline.flip_tta,
                                                pipeline.stage1.checkpoint))
        self.stage2 = _load(f"stage 2 (folds {pipeline.stage2.folds}, {pipeline.stage2.checkpoint})", stage2,
                            lambda: Stage2Model(stage2, pipeline.stage2.folds, self.device, pipeline.flip_tta,
                                                checkpoint=pipeline.stage2.checkpoint))
        for model in (self.stage1, self.stage2):  # nnU-Net's predictor reads it at every sliding-window pass
            model.predictor.tile_step_size = tile_step_size
        self.roi_settings = pipeline.roi_settings()
        self.fallback = np.array([pipeline.fallback_probabilities[c] for c in SUBMISSION_COLUMNS], float)
        from nnunet_aneurysm.postprocessing.stacker import Stacker
        from nnunet_aneurysm.postprocessing.training import load_fold_gats

        folds = pipeline.stage2.folds
        self.gats = _load(f"the GATs of folds {folds}", pipeline.resolve(pipeline.gat),
                          lambda: load_fold_gats(pipeline.resolve(pipeline.gat), folds)) if pipeline.gat else {}
        self.stacker = _load("the stacker", pipeline.resolve(pipeline.stacker),
                             lambda: Stacker.load(pipeline.resolve(pipeline.stacker))) if pipeline.stacker else None

    def predict(self, series_path: str | Path) -> pd.DataFrame:
        """One row: the 14 probabilities in competition order (the competition passes only the folder)."""
        return pd.DataFrame([self.run(series_path).row()]).drop(columns=[ID_COLUMN])

    def run(self, series_path: str | Path) -> SeriesResult:
        """Every step of one series, with its intermediate outputs, timings and fallback reasons."""
        series_path = Path(series_path)
        result = SeriesResult(series_path.name, self.fallback.copy(), "fallback")
        steps = (("read", self._read), ("stage1", self._stage1), ("roi", self._roi), ("stage2", self._stage2),
                 ("postprocessing", self._postprocess))
        for name, step in steps:
            start = time.perf_counter()
            try:
                done = step(result, series_path)
            except Exception as err:  # a failing step falls back; the caller never sees it
                done = False
                result.reasons.append(f"{name} failed: {type(err).__name__}: {err}")
                log.debug("%s", traceback.format_exc())
            result.seconds[name] = time.perf_counter() - start
            if not done:
                break
        for reason in result.reasons:
            log.warning("%s: %s", result.series_uid, reason)
        return result

    def _read(self, result: SeriesResult, path: Path) -> bool:
        result.volume = read_series(path, lenient=True)
        result.reasons += [f"read: {warning}" for warning in result.volume.warnings]
        uid = result.volume.header.get("SeriesInstanceUID")
        result.series_uid = uid or result.series_uid
        result.metadata = encode_metadata(*metadata_from_header(result.volume.header))
        return True

    def _stage1(self, result: SeriesResult, path: Path) -> bool:
        result.vessels = self.stage1.predict(result.volume.array, result.volume.geometry, result.metadata)
        result.seconds["stage1_preprocess"] = self.stage1.seconds["preprocess"]  # part of stage1's seconds
        return True

    def _roi(self, result: SeriesResult, path: Path) -> bool:
        result.roi, result.channels = roi_channels(result.volume.array, result.volume.geometry, result.vessels,
                                                   self.roi_settings)
        if result.roi.fallback:  # as in training (roi-dataset): stage 2 reads the box centred on the scan
            result.reasons.append("stage 1 found no vessel: ROI centred on the scan")
        return True

    def _stage2(self, result: SeriesResult, path: Path) -> bool:
        result.stage2 = self.stage2.predict(result.channels, result.roi.geometry, result.metadata)
        result.probabilities, result.source = result.stage2.series, "stage2"
        return True

    def _postprocess(self, result: SeriesResult, path: Path) -> bool:
        """Graph -> GAT -> stacker, once per fold model; the stacker's outputs averaged over them."""
        if self.stacker is None and not self.gats:
            return True
        from nnunet_aneurysm.postprocessing.features import fold_row, series_graph, vessel_volume_mm3
        from nnunet_aneurysm.postprocessing.gat import graph_candidates

        geometry = result.roi.geometry
        volume = vessel_volume_mm3(result.channels, geometry.spacing, self.roi_settings.vessel_threshold)
        rows, result.graphs, candidates = [], [], []
        for fold, readout, fold_map in zip(self.pipeline.stage2.folds, result.stage2.folds,
                                           result.stage2.fold_probabilities):
            graph = series_graph(result.channels, fold_map, geometry.spacing, self.roi_settings.vessel_threshold)
            gat = self.gats.get(int(fold))
            rows.append({**fold_row(readout, graph, gat, volume, result.metadata), "source_fold": int(fold)})
            if gat is not None:
                scores = gat.score(graph)
                result.graphs.append((graph, scores))
                candidates.append(graph_candidates(graph, scores, geometry).assign(fold=fold))
        result.fold_features = pd.DataFrame(rows)
        if candidates:
            result.candidates = pd.concat(candidates, ignore_index=True)
        if self.stacker is not None:
            result.probabilities = self.stacker.predict(result.fold_features).mean(axis=0)
            result.source = "stacker"
        return True


def load_pipeline(path: str | Path, device: str | None = None) -> SeriesPipeline:
    """``load_pipeline(FILE).predict(series_path)`` -> a one-row DataFrame of the 14 columns. ``device``: None is
    cuda where torch can use it, else cpu."""
    return SeriesPipeline(read_pipeline(path), device)
