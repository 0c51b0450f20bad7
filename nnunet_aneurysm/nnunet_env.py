"""nnU-Net's environment as our verbs meet it: the three folders, dataset names, model folders,
and the one error type a user sees (one line, exit status 2).

Every module that needs nnU-Net's folders asks here, so the checks are written once.
"""

from __future__ import annotations

import os
from pathlib import Path


class UserInputError(Exception):
    """Bad input from the user: printed as one line, exit status 2, no traceback."""


def require_env(*names: str) -> dict[str, Path]:
    """The named nnU-Net folder variables (``nnUNet_raw``...), or a one-line error naming the first unset one."""
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise UserInputError(f"the environment variable {missing[0]} is not set")
    return {n: Path(os.environ[n]) for n in names}


def dataset_name(dataset: str | int) -> str:
    """``102``, ``"102"`` or ``"Dataset102_RSNAAneurysms"`` -> the dataset's full name (looked up, like nnU-Net
    does, in whichever of ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` are set)."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    folders = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
    if not any(os.environ.get(n) for n in folders):
        raise UserInputError(f"none of the environment variables {', '.join(folders)} is set: cannot find "
                             f"dataset {dataset}")
    value = int(dataset) if str(dataset).isdigit() else str(dataset)
    try:
        return maybe_convert_to_dataset_name(value)
    except RuntimeError as err:
        raise UserInputError(str(err).splitlines()[0]) from None


def model_folder(dataset: str | int, trainer: str, plans: str, configuration: str) -> Path:
    """``$nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>``, which must exist."""
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    require_env("nnUNet_results")
    folder = Path(get_output_folder(dataset_name(dataset), trainer, plans, configuration))
    if not folder.is_dir():
        raise UserInputError(f"no trained model in {folder}")
    return folder


def trained_folds(folder: Path, checkpoint: str = "checkpoint_final.pth") -> list[int]:
    """Numeric folds of a model folder that have ``checkpoint``, sorted."""
    folds = [p.name.split("_", 1)[1] for p in folder.glob("fold_*") if (p / checkpoint).is_file()]
    return sorted(int(f) for f in folds if f.isdigit())


def our_trainers_visible() -> None:
    """Let nnU-Net's trainer lookup (``-tr``, and checkpoints naming our trainers) find our classes."""
    from nnunet_aneurysm.nnunet_ext import FOLDER

    os.environ.setdefault("nnUNet_extTrainer", str(FOLDER))
