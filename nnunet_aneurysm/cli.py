"""``nnunet-aneurysm <verb>``: the steps nnU-Net has no verb for.

Every verb has ``--help``; heavy imports happen inside the verbs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class UserInputError(Exception):
    """Bad input from the user: printed as one line, exit status 2, no traceback."""


def _ext_path(args: argparse.Namespace) -> int:
    from nnunet_aneurysm import nnunet_ext

    print(Path(nnunet_ext.__file__).resolve().parent)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from nnunet_aneurysm.planners import PLANNERS
    from nnunet_aneurysm.planners.run import plan_dataset

    schedule = {k: v for k, v in (("num_epochs", args.cpu_epochs),
                                  ("num_iterations_per_epoch", args.cpu_iterations),
                                  ("num_val_iterations_per_epoch", args.cpu_val_iterations))
                if v is not None}
    plans_name, plans_file = plan_dataset(args.dataset, PLANNERS[args.planner], args.vram_gb,
                                          args.plans_name, schedule, args.num_processes)
    print(f"Plans written to {plans_file}")
    print(f"Next: nnUNetv2_preprocess -d {args.dataset} -plans_name {plans_name} -c 3d_fullres")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from nnunet_aneurysm.planners import PLANNERS

    parser = argparse.ArgumentParser(prog="nnunet-aneurysm", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("ext-path", help="print the folder to export as nnUNet_extTrainer",
                         description="Print the folder that holds our trainers for nnU-Net: "
                                     "export nnUNet_extTrainer=$(nnunet-aneurysm ext-path)")
    p.set_defaults(func=_ext_path)

    p = verbs.add_parser("plan", help="plan a dataset with one of our planners",
                         description="Extract the fingerprint if missing, then write plans with our "
                                     "planner (3d_fullres sized for --vram-gb, plus 3d_cpu). "
                                     "Preprocess afterwards with stock nnUNetv2_preprocess.")
    p.add_argument("-d", "--dataset", required=True, help="dataset id or DatasetXXX_Name")
    p.add_argument("--planner", required=True, choices=sorted(PLANNERS))
    p.add_argument("--vram-gb", type=float, default=16.0, help="GPU memory target (default 16, a T4)")
    p.add_argument("--plans-name", default=None, help="plans identifier (default: the planner's)")
    p.add_argument("--cpu-epochs", type=int, default=None, help="epochs of the 3d_cpu configuration")
    p.add_argument("--cpu-iterations", type=int, default=None, help="iterations per 3d_cpu epoch")
    p.add_argument("--cpu-val-iterations", type=int, default=None,
                   help="validation iterations per 3d_cpu epoch")
    p.add_argument("-np", "--num-processes", type=int, default=2, help="fingerprint worker processes")
    p.set_defaults(func=_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserInputError as err:
        print(f"nnunet-aneurysm {args.verb}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
