"""Which torch device a verb runs on.

nnU-Net's verbs default to ``cuda``; ours do where torch can use a GPU and run on the CPU otherwise,
saying which in one line. A device asked for by name that cannot be used is a one-line error before
any model is loaded: predicting on a device that fails gives every series the fallback row, which
is no answer.
"""

from __future__ import annotations

from nnunet_aneurysm.nnunet_env import UserInputError


def cuda_problem() -> str | None:
    """Why torch cannot compute on the first CUDA device, or None when it can (a one-element tensor is made)."""
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"its CUDA {torch.version.cuda} build sees no GPU"
        return f"torch sees no CUDA device (torch {torch.__version__}: {build})"
    try:
        torch.zeros(1, device="cuda")
    except RuntimeError as err:
        return str(err).strip().splitlines()[0]
    return None


def default_device() -> str:
    """``cuda`` where torch can use it, else ``cpu``."""
    return "cpu" if cuda_problem() else "cuda"


def choose_device(requested: str | None) -> tuple[str, str | None]:
    """The device for ``-device`` (None: not given) and the line to tell the user (None when they chose)."""
    if requested is None:
        if cuda_problem():
            return "cpu", "device: cpu (torch sees no usable CUDA device; -device cuda to insist)"
        import torch

        return "cuda", f"device: cuda ({torch.cuda.get_device_name(0)}; -device cpu to run on the CPU)"
    if requested == "cuda":
        problem = cuda_problem()
        if problem:
            raise UserInputError(f"-device cuda cannot be used: {problem}; run with -device cpu")
    return requested, None
