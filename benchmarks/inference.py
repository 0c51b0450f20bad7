"""Seconds per series of each prediction step (read, stage 1, ROI, stage 2, postprocessing), with 1 and
5 fold models, with and without flip TTA, on generated series of two sizes.

Uses a finished demo (its pipeline file and models). Where the demo trained fewer than five folds, the
5-fold timing runs on copies of its fold models (time does not depend on the weights); the table says
so. Anchor: the RSNA 2025 1st place needed 18 s per series on 2 x T4 for its whole pipeline.

    python benchmarks/inference.py --workdir demo_run [--sizes 64 128] [--series 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from nnunet_aneurysm.inference.pipeline_file import read_pipeline
from nnunet_aneurysm.inference.series import SeriesPipeline


def five_fold_copy(pipeline, out: Path):
    """A pipeline whose stage-1/stage-2/GAT models have folds 0-4 (copies of the trained ones)."""
    def copy_folds(folder: Path, folds, name: str) -> Path:
        target = out / name
        for f in range(5):
            shutil.copytree(folder / f"fold_{folds[f % len(folds)]}", target / f"fold_{f}", dirs_exist_ok=True)
        for extra in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
            if (folder / extra).is_file():
                shutil.copyfile(folder / extra, target / extra)
        return target

    stage1 = copy_folds(pipeline.resolve(pipeline.stage1.folder), pipeline.stage1.folds, "stage1")
    stage2 = copy_folds(pipeline.resolve(pipeline.stage2.folder), pipeline.stage2.folds, "stage2")
    gat = copy_folds(pipeline.resolve(pipeline.gat), pipeline.stage2.folds, "gat") if pipeline.gat else None
    copy = replace(pipeline, stage1=replace(pipeline.stage1, folder=str(stage1), folds=list(range(5))),
                   stage2=replace(pipeline.stage2, folder=str(stage2), folds=list(range(5))),
                   gat=str(gat) if gat else None,
                   stacker=str(pipeline.resolve(pipeline.stacker)) if pipeline.stacker else None)
    copy.path = out / "pipeline.json"
    return copy


def main():
    from nnunet_aneurysm.dataset_conversion.synthetic import generate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--series", type=int, default=3, help="series per size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipeline = read_pipeline(args.workdir / "pipeline" / "pipeline.json")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        variants = {1: replace(pipeline, stage1=replace(pipeline.stage1, folds=pipeline.stage1.folds[:1]),
                               stage2=replace(pipeline.stage2, folds=pipeline.stage2.folds[:1])),
                    5: five_fold_copy(pipeline, tmp / "five")}
        variants[1].path = pipeline.path
        for size in args.sizes:
            generate(tmp / f"series_{size}", args.series, seed=777, size=size, progress=False)
            folders = sorted((tmp / f"series_{size}" / "series").iterdir())
            for folds, base in variants.items():
                for tta in (False, True):
                    model = SeriesPipeline(replace(base, flip_tta=tta), args.device)
                    model.run(folders[0])  # warm-up (first-call allocations)
                    steps = []
                    for folder in folders:
                        start = time.perf_counter()
                        result = model.run(folder)
                        steps.append({**result.seconds, "total": time.perf_counter() - start})
                    rows.append({"size": size, "folds": folds, "flip TTA": tta,
                                 **pd.DataFrame(steps).mean().round(2).to_dict()})
                    print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(f"\nseconds per series ({args.series} series per size, {args.device}, {args.threads} threads; "
          f"5 folds: copies of the demo's {len(pipeline.stage2.folds)} trained folds)")
    print(table.to_string(index=False))
    print(f"anchor: 18 s per series on 2 x T4 for the 1st place's whole pipeline; ours, 5 folds + TTA at the larger "
          f"size: {table[(table['folds'] == 5) & table['flip TTA']]['total'].iloc[-1]:.1f} s")


if __name__ == "__main__":
    main()
