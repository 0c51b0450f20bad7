"""Peak memory and seconds per step of ``predict-series`` on clinical-size series, beside nnU-Net's own
predictor on the same volume, in the same run.

Every measurement runs in a process of its own: its peak resident memory is the kernel's high-water mark
for that process (``ru_maxrss``), and the growth above the memory held once the models are loaded is
divided by the scan's voxels (bytes per voxel). This process watches each child and stops it before the
machine runs out (``--memory-limit-gb``); a stopped child is reported as killed above that figure.

Cases are generated once into ``--cache`` (a whole-head CTA, 220 mm field of view, axial, single-frame
DICOM; a 512 x 512 x 400 series takes ~2 minutes): ``256`` is 256^3, ``512x400`` is 512 x 512 x 400.
Variants: 1 and 5 fold models, with and without flip TTA; where the pipeline has fewer than five folds,
the 5-fold variant runs on copies of its fold models (time does not depend on the weights).
The reference: nnU-Net's predictor with stage 1's model and the same folds on the same volume, as
``nnUNetv2_predict`` runs it (probabilities exported to the scan's grid, segmentation returned).
``--curve`` adds the memory curve (5 folds + flip TTA, ours and the reference) from 64^3 to 512 x 512 x 600.

    python benchmarks/inference.py --workdir demo_run --cache clinical_series [--curve] [--cases 256 512x400]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

CURVE = ("64", "128", "256", "512x200", "512x400", "512x600")
TARGET = {"case": "512x400", "peak_gb": 8.0, "seconds": 120.0}  # issue's target: 5 folds + flip TTA, 2 cores


def case_shape(case: str) -> tuple[int, int]:
    """'256' -> (256, 256): matrix and slices; '512x400' -> (512, 400)."""
    size, _, slices = case.partition("x")
    return int(size), int(slices or size)


def series_folder(cache: Path, case: str) -> Path:
    """The case's DICOM folder, generated on first use (one CTA with an aneurysm, whole-head field of view)."""
    from nnunet_aneurysm.dataset_conversion.synthetic import HEAD_FOV_MM, generate

    root = cache / f"cta_{case}"
    if not (root / "train.csv").is_file():
        size, slices = case_shape(case)
        print(f"generating the {case} series in {root}", flush=True)
        generate(root, 1, seed=4242, size=size, fov_mm=HEAD_FOV_MM, slices=slices, progress=False,
                 forced=[{"modality": "CTA", "orientation": "axial", "multiframe": False, "n_aneurysms": 1}])
    return next((root / "series").iterdir())


def five_fold_copy(pipeline, out: Path):
    """A pipeline whose stage-1/stage-2/GAT models have folds 0-4 (copies of the trained ones), saved in ``out``."""
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
    copy.save(out / "pipeline.json")
    return copy


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kB


def child(job: dict) -> dict:
    """One measurement, in this (fresh) process: ``ours`` runs the pipeline's ``run``; ``nnunet`` nnU-Net's
    predictor with stage 1's model."""
    import torch

    torch.set_num_threads(job["threads"])
    from nnunet_aneurysm.inference.pipeline_file import read_pipeline

    pipeline = read_pipeline(job["pipeline"])
    if job["kind"] == "ours":
        from nnunet_aneurysm.inference.series import SeriesPipeline

        model = SeriesPipeline(replace(pipeline, flip_tta=job["tta"]), "cpu")
        loaded = _rss()
        start = time.perf_counter()
        result = model.run(job["folder"])
        seconds = {**result.seconds, "total": time.perf_counter() - start}
        return {"seconds": seconds, "loaded": loaded, "peak": _peak_rss(), "source": result.source,
                "voxels": int(np.prod(result.volume.array.shape)), "reasons": result.reasons}
    from nnunet_aneurysm.dataset_conversion.dicom_reader import read_series
    from nnunet_aneurysm.inference.nnunet_io import load_predictor, nnunet_properties

    predictor = load_predictor(pipeline.resolve(pipeline.stage1.folder), pipeline.stage1.folds, torch.device("cpu"))
    loaded = _rss()
    start = time.perf_counter()
    volume = read_series(job["folder"])
    read = time.perf_counter() - start
    predictor.predict_single_npy_array(volume.array[None], nnunet_properties(volume.geometry), None, None, False)
    seconds = {"read": read, "stage1": time.perf_counter() - start - read, "total": time.perf_counter() - start}
    return {"seconds": seconds, "loaded": loaded, "peak": _peak_rss(), "source": "nnU-Net predictor",
            "voxels": int(np.prod(volume.array.shape)), "reasons": []}


def measure(job: dict, limit_bytes: float, script: str = __file__) -> dict:
    """Run ``script --child JOB`` in a child process, watching its memory; the child's own figures (its last line
    of output, JSON), or a 'killed' row."""
    errors = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, script, "--child", json.dumps(job)], stdout=subprocess.PIPE,
                            stderr=errors, text=True)
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if peak > limit_bytes:
            proc.kill()
            proc.wait()
            return {"killed": True, "peak": peak}
        time.sleep(0.05)
    out = proc.stdout.read().strip().splitlines()
    if proc.returncode != 0 or not out:
        errors.seek(0)
        print(errors.read()[-3000:], file=sys.stderr)
        return {"killed": False, "failed": f"exit {proc.returncode}", "peak": peak}
    return json.loads(out[-1])


def row(case: str, kind: str, folds: int, tta: bool, result: dict) -> dict:
    out = {"case": case, "predictor": kind, "folds": folds, "flip TTA": tta}
    if result.get("killed") or result.get("failed"):
        state = "killed" if result.get("killed") else result["failed"]
        return {**out, "peak GB": result["peak"] / 1e9, "state": f"{state} (above {result['peak'] / 1e9:.1f} GB)"}
    grown = (result["peak"] - result["loaded"]) / result["voxels"]
    seconds = {f"s {k}": round(v, 1) for k, v in result["seconds"].items()}
    return {**out, "voxels (M)": result["voxels"] / 1e6, "peak GB": result["peak"] / 1e9,
            "bytes/voxel above loaded": grown, **seconds, "state": result["source"]}


def plot_curve(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, group in table.groupby("predictor"):
        voxels = [case_shape(c)[0] ** 2 * case_shape(c)[1] / 1e6 for c in group["case"]]
        ax.plot(voxels, group["peak GB"], marker="o", label=kind)
        for v, p, s in zip(voxels, group["peak GB"], group["state"]):
            if str(s).startswith("killed"):
                ax.annotate("killed", (v, p))
    ax.set_xlabel("scan voxels (millions)")
    ax.set_ylabel("peak resident memory (GB)")
    ax.set_title("predict-series, 5 folds + flip TTA, one series")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="a finished demo (its pipeline/pipeline.json)")
    parser.add_argument("--pipeline", type=Path, help="a pipeline file (instead of --workdir)")
    parser.add_argument("--cache", type=Path, help="folder for the generated clinical-size series (required)")
    parser.add_argument("--cases", nargs="+", default=["256", "512x400"])
    parser.add_argument("--curve", action="store_true", help=f"also the memory curve over {', '.join(CURVE)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit-gb", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=None, help="where the table, json and curve go")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return
    if args.cache is None:
        parser.error("--cache is required")
    from nnunet_aneurysm.inference.pipeline_file import read_pipeline

    pipeline = read_pipeline(args.pipeline or args.workdir / "pipeline" / "pipeline.json")
    out = args.out or pipeline.path.parent.parent / "benchmarks" / "inference"
    out.mkdir(parents=True, exist_ok=True)
    limit = args.memory_limit_gb * 1e9
    rows, curve = [], []
    with tempfile.TemporaryDirectory() as tmp:
        one = replace(pipeline, stage1=replace(pipeline.stage1, folds=pipeline.stage1.folds[:1]),
                      stage2=replace(pipeline.stage2, folds=pipeline.stage2.folds[:1]))
        for name in ("stage1", "stage2"):
            entry = getattr(one, name)
            setattr(one, name, replace(entry, folder=str(pipeline.resolve(entry.folder))))
        one.gat = str(pipeline.resolve(one.gat)) if one.gat else None
        one.stacker = str(pipeline.resolve(one.stacker)) if one.stacker else None
        files = {1: str(one.save(Path(tmp) / "one.json")), 5: str(five_fold_copy(pipeline, Path(tmp) / "five").path)}
        base = {"threads": args.threads}
        for case in args.cases:
            folder = str(series_folder(args.cache, case))
            for folds in (1, 5):
                for tta in (False, True):
                    job = {**base, "kind": "ours", "pipeline": files[folds], "tta": tta, "folder": folder}
                    rows.append(row(case, "ours", folds, tta, measure(job, limit)))
                    print(rows[-1], flush=True)
            job = {**base, "kind": "nnunet", "pipeline": files[5], "tta": False, "folder": folder}
            rows.append(row(case, "nnU-Net predictor (stage 1 model)", 5, False, measure(job, limit)))
            print(rows[-1], flush=True)
        if args.curve:
            for case in CURVE:
                folder = str(series_folder(args.cache, case))
                for kind, label, tta in (("ours", "ours (5 folds, flip TTA)", True),
                                         ("nnunet", "nnU-Net predictor (stage 1 model, 5 folds)", False)):
                    job = {**base, "kind": kind, "pipeline": files[5], "tta": tta, "folder": folder}
                    curve.append(row(case, label, 5, tta, measure(job, limit)))
                    print(curve[-1], flush=True)
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    print(f"\npredict-series on one generated CTA per case ({args.threads} threads, cpu; 5 folds: copies of the "
          f"pipeline's {len(pipeline.stage1.folds)} trained folds), peak = the process's resident high-water mark")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    target = table[(table["case"] == TARGET["case"]) & (table["predictor"] == "ours") & (table["folds"] == 5)
                   & table["flip TTA"]]
    if len(target) and "s total" in target:
        t = target.iloc[0]
        print(f"target ({TARGET['case']}, 5 folds + flip TTA): peak {t['peak GB']:.2f} GB (<= {TARGET['peak_gb']}), "
              f"{t['s total']:.0f} s (<= {TARGET['seconds']:.0f}); anchor: the RSNA 1st place's whole pipeline, 18 s "
              f"per series on 2 x T4")
    table.to_csv(out / "inference.csv", index=False)
    if curve:
        curve = pd.DataFrame(curve)
        print("\nmemory curve (one series each):")
        print(curve.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        curve.to_csv(out / "memory_curve.csv", index=False)
        plot_curve(curve, out / "memory_curve.png")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
