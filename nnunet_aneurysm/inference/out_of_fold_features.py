"""The out-of-fold feature table of the training series (``nnunet-aneurysm features``): each case of the
stage-2 ROI dataset predicted by the stage-2 fold model that did not train on it, its vessel graph built
and its meta-features read out (``postprocessing/features.py``). The stacker and the GATs train on it.

Models run here, in inference; postprocessing only turns the arrays into graphs and table rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from tqdm import tqdm

from nnunet_aneurysm.geometry import Geometry, geometry_of
from nnunet_aneurysm.inference.stage2 import Stage2Model
from nnunet_aneurysm.inference.stage2_settings import stage2_roi_settings
from nnunet_aneurysm.labels import SUBMISSION_COLUMNS
from nnunet_aneurysm.metadata import MetadataTable
from nnunet_aneurysm.parts import part_of, write_whole
from nnunet_aneurysm.postprocessing.features import fold_row, save_graph, series_graph, vessel_volume_mm3
from nnunet_aneurysm.stages import ARTERY_CHANNEL, channel_file


def read_roi_case(raw: Path, case: str) -> tuple[list[np.ndarray], Geometry]:
    """Stage 2's input channels of a case of the ROI dataset ([z, y, x] each), and the ROI grid."""
    images = [sitk.ReadImage(str(raw / "imagesTr" / channel_file(case, c))) for c in range(ARTERY_CHANNEL + 1)]
    return [sitk.GetArrayFromImage(i).astype(np.float32) for i in images], geometry_of(images[0])


def out_of_fold_features(raw: Path, stage2_dir: Path, out: Path, device: str = "cpu",
                         progress: bool = True, num_parts: int = 1, part_id: int = 0) -> pd.DataFrame | None:
    """The out-of-fold table of a stage-2 ROI dataset's training series (without GAT columns: those need
    the per-fold GATs, trained on these graphs). Resumable: each case's row is kept in ``out/rows``.
    ``num_parts``/``part_id``: this job does cases part_id, part_id + num_parts, ... (``parts.py``); None until
    every part's rows are there."""
    metadata_table = pd.read_csv(raw / "metadata.csv", dtype={"case_id": str})
    threshold = stage2_roi_settings(stage2_dir, raw).vessel_threshold  # the one the ROIs were cut at
    vectors = MetadataTable.read(raw / "metadata.csv")
    (out / "rows").mkdir(parents=True, exist_ok=True)
    folds = sorted(metadata_table["fold"].unique())
    mine = set(part_of(sorted(metadata_table["case_id"]), num_parts, part_id))
    bar = tqdm(total=len(mine), desc="out-of-fold features", unit="case", disable=not progress)
    for fold in folds:
        cases = [c for c in metadata_table.loc[metadata_table["fold"] == fold, "case_id"] if c in mine]
        todo = [c for c in cases if not (out / "rows" / f"{c}.json").is_file()]
        bar.update(len(cases) - len(todo))
        if not todo:
            continue
        if not (stage2_dir / f"fold_{fold}" / "checkpoint_final.pth").is_file():
            raise FileNotFoundError(f"stage 2 has no trained fold {fold} in {stage2_dir}: out-of-fold features need "
                                    f"every fold of the dataset's splits")
        model = Stage2Model(stage2_dir, [int(fold)], torch.device(device))
        for case in todo:
            channels, roi = read_roi_case(raw, case)
            metadata = vectors.lookup([case])[0]
            prediction = model.predict(channels, roi, metadata)
            graph = series_graph(channels, prediction.fold_probabilities[0], roi.spacing, threshold)
            save_graph(graph, out / "graphs", case)
            volume = vessel_volume_mm3(channels, roi.spacing, threshold)
            row = {"case_id": case, "fold": int(fold), "source_fold": int(fold),
                   **fold_row(prediction.folds[0], graph, None, volume, metadata)}
            write_whole(out / "rows" / f"{case}.json", json.dumps(row))
            bar.update()
    bar.close()
    if not all((out / "rows" / f"{c}.json").is_file() for c in metadata_table["case_id"]):
        return None  # other parts still have rows to write
    rows = [json.loads((out / "rows" / f"{c}.json").read_text()) for c in metadata_table["case_id"]]
    return pd.DataFrame(rows).merge(metadata_table[["case_id", *SUBMISSION_COLUMNS]], on="case_id")
