"""Conversion throughput of our DICOM -> NIfTI path as a ratio to dcm2niix on the same series.

Both run one series at a time in one process (dcm2niix as a subprocess, gzip on, like ours);
synthetic series are generated first, in the competition layout.

    python benchmarks/conversion.py --series 12 --size 96
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nnunet_aneurysm.dataset_conversion.dicom_reader import read_series
from nnunet_aneurysm.dataset_conversion.synthetic import generate
from nnunet_aneurysm.geometry import write_nifti


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=12)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--multiframe-fraction", type=float, default=0.25)
    args = parser.parse_args()
    dcm2niix = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truths = generate(tmp / "rsna", args.series, seed=11, size=args.size,
                          multiframe_fraction=args.multiframe_fraction, workers=2, progress=False)
        voxels = sum(t.shape[0] * t.shape[1] * t.shape[2] for t in truths)
        folders = [tmp / "rsna" / "series" / t.series_uid for t in truths]
        timings = {}
        for name in ("ours", "dcm2niix", "ours (again)"):
            out = tmp / name.replace(" ", "_").replace("(", "").replace(")", "")
            out.mkdir()
            start = time.perf_counter()
            for i, folder in enumerate(folders):
                if name.startswith("ours"):
                    volume = read_series(folder)
                    write_nifti(volume.array, volume.geometry, out / f"{i}.nii.gz")
                else:
                    subprocess.run([dcm2niix, "-z", "y", "-b", "n", "-f", str(i), "-o", str(out), str(folder)],
                                   check=True, capture_output=True)
            timings[name] = time.perf_counter() - start
    ours = min(timings["ours"], timings["ours (again)"])
    print(f"{args.series} series, {voxels / 1e6:.1f} M voxels, size {args.size}, "
          f"{sum(t.multiframe for t in truths)} multi-frame")
    for name, seconds in timings.items():
        rate = voxels / seconds / 1e6
        print(f"{name:14s} {seconds:7.2f} s  {args.series / seconds:6.2f} series/s  {rate:6.2f} Mvox/s")
    print(f"throughput ratio ours / dcm2niix: {timings['dcm2niix'] / ours:.2f} (best of our two runs)")


if __name__ == "__main__":
    main()
