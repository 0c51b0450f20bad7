"""Run one of our planners on a raw dataset, the way nnUNetv2_plan_experiment would."""

from __future__ import annotations

from pathlib import Path

from nnunet_aneurysm.nnunet_env import dataset_name, require_env
from nnunet_aneurysm.planners.base import AneurysmPlanner


def plan_dataset(dataset: str, planner: type[AneurysmPlanner], vram_gb: float = 16.0,
                 plans_name: str | None = None, cpu_schedule: dict | None = None,
                 num_processes: int = 2, fullres_schedule: dict | None = None) -> tuple[str, Path]:
    """Fingerprint (if missing) and plan; returns the plans identifier and the plans file."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset
    from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id

    preprocessed = require_env("nnUNet_raw", "nnUNet_preprocessed")["nnUNet_preprocessed"]
    name = dataset_name(dataset)
    if not (preprocessed / name / "dataset_fingerprint.json").is_file():
        extract_fingerprint_dataset(convert_dataset_name_to_id(name), num_processes=num_processes,
                                    check_dataset_integrity=True, clean=True, verbose=False)
    instance = planner(name, gpu_memory_target_in_gb=vram_gb, plans_name=plans_name, cpu_schedule=cpu_schedule,
                       fullres_schedule=fullres_schedule)
    instance.plan_experiment()
    return instance.plans_identifier, preprocessed / name / f"{instance.plans_identifier}.json"
