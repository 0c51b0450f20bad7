"""Peak memory and seconds per series of ``convert`` and of ``roi-dataset``'s work on one case, at clinical size.

Each measurement runs in a process of its own (``inference.measure``: the kernel's high-water mark of that
process, watched and stopped before the machine runs out). convert: ``convert_series`` of one generated CTA
(DICOM -> the two raw datasets' NIfTI files, spheres, vessel labels). roi-dataset: one case as the verb does
it - the raw image read, stage 1 predicted (5 folds, flip TTA), the ROI found and its three channels and
label written. Bytes per voxel: the growth above the process's memory before the step, over the scan's voxels;
``resources.py``'s worker sizing uses these figures.

    python benchmarks/clinical_steps.py --pipeline demo_run/pipeline/pipeline.json --cache clinical_series
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from inference import _peak_rss, _rss, five_fold_copy, measure, series_folder  # noqa: E402


def child(job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    out = Path(job["out"])
    root = Path(job["folder"]).parent.parent
    if job["kind"] == "convert":
        from nnunet_aneurysm.dataset_conversion.convert import Targets, convert_series, dataset_folders

        vessels, aneurysms = dataset_folders(out, 901, 902)
        for folder in (vessels, aneurysms):
            for sub in ("imagesTr", "labelsTr"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
        before, start = _rss(), time.perf_counter()
        row = convert_series(root, Path(job["folder"]).name, [], Targets(vessels, aneurysms, 4.0), False)
        voxels = int(np.prod([int(v) for v in row["shape"].split("x")]))
        return {"seconds": time.perf_counter() - start, "before": before, "peak": _peak_rss(), "voxels": voxels,
                "status": row["status"]}
    import SimpleITK as sitk

    from nnunet_aneurysm.geometry import read_geometry
    from nnunet_aneurysm.inference.pipeline_file import read_pipeline
    from nnunet_aneurysm.inference.roi_dataset import write_roi_case
    from nnunet_aneurysm.inference.stage1 import Stage1Model

    pipeline = read_pipeline(job["pipeline"])
    model = Stage1Model(pipeline.resolve(pipeline.stage1.folder), pipeline.stage1.folds)
    for sub in ("imagesTr", "labelsTr", "rois"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    before, start = _rss(), time.perf_counter()
    image = sitk.GetArrayFromImage(sitk.ReadImage(job["image"])).astype(np.float32, copy=False)
    scan = read_geometry(job["image"])
    vessels = model.predict(image, scan, None)
    empty = pd.DataFrame(columns=["case_id", "class_id", "x_mm", "y_mm", "z_mm"])
    write_roi_case(out, "case", image, scan, vessels, pipeline.roi_settings(), empty, 4.0, True)
    return {"seconds": time.perf_counter() - start, "before": before, "peak": _peak_rss(),
            "voxels": int(image.size), "status": "ok"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, help="a pipeline file (stage 1 for roi-dataset)")
    parser.add_argument("--cache", type=Path, help="folder of the generated clinical-size series")
    parser.add_argument("--cases", nargs="+", default=["512x400", "512x600"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit-gb", type=float, default=20.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return
    if args.cache is None or args.pipeline is None:
        parser.error("--cache and --pipeline are required")
    from nnunet_aneurysm.inference.pipeline_file import read_pipeline

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        five = five_fold_copy(read_pipeline(args.pipeline), tmp / "five").path
        for case in args.cases:
            folder = series_folder(args.cache, case)
            job = {"threads": args.threads, "kind": "convert", "folder": str(folder), "out": str(tmp / f"raw_{case}")}
            converted = measure(job, args.memory_limit_gb * 1e9, __file__)
            rows.append({"step": "convert (one series)", "case": case, **_figures(converted)})
            image = tmp / f"raw_{case}" / "Dataset902_RSNAAneurysms" / "imagesTr" / f"{folder.name}_0000.nii.gz"
            job = {"threads": args.threads, "kind": "roi", "folder": str(folder), "image": str(image),
                   "pipeline": str(five), "out": str(tmp / f"roi_{case}")}
            rows.append({"step": "roi-dataset (one case, 5 folds + flip TTA)", "case": case,
                         **_figures(measure(job, args.memory_limit_gb * 1e9, __file__))})
            print(rows[-2], rows[-1], flush=True)
    pd.set_option("display.width", 200)
    print(f"\nper series at clinical size ({args.threads} threads, cpu); peak = the process's high-water mark")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.2f}"))


def _figures(result: dict) -> dict:
    if result.get("killed") or result.get("failed"):
        return {"state": "killed" if result.get("killed") else result["failed"], "peak GB": result["peak"] / 1e9}
    return {"voxels (M)": result["voxels"] / 1e6, "seconds": result["seconds"], "peak GB": result["peak"] / 1e9,
            "bytes/voxel above start": (result["peak"] - result["before"]) / result["voxels"],
            "state": result["status"]}


if __name__ == "__main__":
    main()
