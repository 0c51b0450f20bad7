"""Run one of our planners on a raw dataset, the way nnUNetv2_plan_experiment would."""

from __future__ import annotations

import os
from pathlib import Path

from nnunet_aneurysm.planners.base import AneurysmPlanner


def _dataset_name(dataset: str) -> str:
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_aneurysm.cli import UserInputError

    for var in ("nnUNet_raw", "nnUNet_preprocessed"):
        if not os.environ.get(var):
            raise UserInputError(f"the environment variable {var} is not set")
    try:
        return maybe_convert_to_dataset_name(int(dataset) if dataset.isdigit() else dataset)
    except RuntimeError as err:
        raise UserInputError(str(err).splitlines()[0]) from None


def plan_dataset(dataset: str, planner: type[AneurysmPlanner], vram_gb: float = 16.0,
                 plans_name: str | None = None, cpu_schedule: dict | None = None,
                 num_processes: int = 2) -> tuple[str, Path]:
    """Fingerprint (if missing) and plan; returns the plans identifier and the plans file."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id

    name = _dataset_name(dataset)
    if not (Path(nnUNet_preprocessed) / name / "dataset_fingerprint.json").is_file():
        extract_fingerprint_dataset(convert_dataset_name_to_id(name), num_processes=num_processes,
                                    check_dataset_integrity=True, clean=True, verbose=False)
    instance = planner(name, gpu_memory_target_in_gb=vram_gb, plans_name=plans_name, cpu_schedule=cpu_schedule)
    instance.plan_experiment()
    return instance.plans_identifier, Path(nnUNet_preprocessed) / name / f"{instance.plans_identifier}.json"
