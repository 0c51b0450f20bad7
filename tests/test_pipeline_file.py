"""The pipeline file is checked as it is read: each defect is one line naming its key, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnunet_aneurysm.inference.pipeline_file import read_pipeline
from tests.fake_pipeline import fake_model, write_fake_pipeline


@pytest.fixture
def pipeline_file(tmp_path) -> Path:
    return write_fake_pipeline(tmp_path)


def test_a_complete_file_reads(pipeline_file):
    pipeline = read_pipeline(pipeline_file)
    assert pipeline.stage2.folds == [0, 1] and pipeline.roi_settings().vessel_threshold == 0.3
    assert pipeline.resolve(pipeline.gat).is_dir()


def _edited(pipeline_file: Path, edit) -> Path:
    body = json.loads(pipeline_file.read_text())
    edit(body)
    pipeline_file.write_text(json.dumps(body))
    return pipeline_file


BROKEN = {
    "stage2 missing": (lambda b: b.pop("stage2"), "stage2: missing"),
    "an unknown key": (lambda b: b.update(stage3={}), "stage3: unknown key"),
    "an unknown key of a model": (lambda b: b["stage1"].update(fold=[0]), "stage1.fold: unknown key"),
    "an empty roi": (lambda b: b.update(roi={}), "roi.size_mm: missing"),
    "roi not an object": (lambda b: b.update(roi=[72, 72, 96]), "roi: a JSON object, not list"),
    "two ROI sizes": (lambda b: b["roi"].update(size_mm=[72, 72]), "roi.size_mm: a list of 3 positive numbers"),
    "a threshold of 1.5": (lambda b: b["roi"].update(vessel_threshold=1.5), "roi.vessel_threshold: a number in (0, 1)"),
    "folds as text": (lambda b: b["stage1"].update(folds="0 1"), "stage1.folds: a non-empty list of integers"),
    "no folds": (lambda b: b["stage2"].update(folds=[]), "stage2.folds: a non-empty list of integers"),
    "flip_tta as text": (lambda b: b.update(flip_tta="yes"), "flip_tta: true or false, not str"),
    "a model folder that is not there": (lambda b: b["stage2"].update(folder="../gone"), "stage2.folder: no folder"),
    "a fold without its checkpoint": (lambda b: b["stage2"].update(folds=[0, 7]),
                                      "stage2.folds: fold 7 has no fold_7/checkpoint_final.pth"),
    "a checkpoint no fold has": (lambda b: b["stage1"].update(checkpoint="checkpoint_best.pth"),
                                 "stage1.folds: fold 0 has no fold_0/checkpoint_best.pth"),
    "a stacker folder that is not there": (lambda b: b.update(stacker="../nowhere"), "stacker: no folder"),
    "gat not a path": (lambda b: b.update(gat=3), "gat: a folder (text) or null, not int"),
    "a fallback column missing": (lambda b: b["fallback_probabilities"].pop("Aneurysm Present"),
                                  "fallback_probabilities.Aneurysm Present: missing"),
    "a fallback column unknown": (lambda b: b["fallback_probabilities"].update(Other=0.1),
                                  "fallback_probabilities.Other: unknown key"),
    "a fallback probability of 2": (lambda b: b["fallback_probabilities"].update({"Aneurysm Present": 2}),
                                    "fallback_probabilities.Aneurysm Present: a number in [0, 1]"),
    "a model that is null": (lambda b: b.update(stage1=None), "stage1: a JSON object, not NoneType"),
}


@pytest.mark.parametrize("defect", sorted(BROKEN))
def test_each_defect_is_one_line_naming_its_key(pipeline_file, defect):
    edit, expected = BROKEN[defect]
    with pytest.raises(ValueError) as caught:
        read_pipeline(_edited(pipeline_file, edit))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{pipeline_file}: ") and expected in message, message


def test_folds_and_checkpoint_chosen_at_prediction_are_checked_like_the_file(pipeline_file):
    fake_model(pipeline_file.parent.parent, "stage1", folds=(0,), checkpoint="checkpoint_best.pth")
    fake_model(pipeline_file.parent.parent, "stage2", folds=(0,), checkpoint="checkpoint_best.pth")
    chosen = read_pipeline(pipeline_file).choose(folds=[0], checkpoint="checkpoint_best.pth")
    assert (chosen.stage1.folds, chosen.stage2.checkpoint) == ([0], "checkpoint_best.pth")
    with pytest.raises(ValueError, match="stage1.folds: fold 1 has no fold_1/checkpoint_best.pth"):
        read_pipeline(pipeline_file).choose(folds=[0, 1], checkpoint="checkpoint_best.pth")
