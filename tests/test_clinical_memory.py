"""Stage 1 -> ROI on a mid-size scan stays within a few bytes per scan voxel: the 14-class probabilities
never come back to the scan's grid (14 float32 channels alone are 56 bytes per voxel)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration
BYTES_PER_VOXEL_LIMIT = 12.0  # the scan itself is 4; the full-grid 14-class export alone is 56

CHILD = """
import json, sys
import numpy as np, psutil, torch
from nnunet_aneurysm.geometry import Geometry
from nnunet_aneurysm.inference.pipeline_file import read_pipeline
from nnunet_aneurysm.inference.roi_dataset import roi_channels
from nnunet_aneurysm.inference.stage1 import Stage1Model
torch.set_num_threads(2)
pipeline = read_pipeline(sys.argv[1])
model = Stage1Model(pipeline.resolve(pipeline.stage1.folder), pipeline.stage1.folds)
shape = tuple(json.loads(sys.argv[2]))
extent = np.array([180.0, 220.0, 220.0])  # mm: a whole head, the same at every matrix size
scan = Geometry(np.array([-110.0, -100.0, -80.0]), np.eye(3)[0], np.eye(3)[1], tuple(extent / shape))
z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
c = np.array(shape) / 2
image = np.full(shape, -1000.0, np.float32)  # float32 from the start: no float64 copy inflates the peak
image[((z - c[0]) / (0.3 * shape[0])) ** 2 + ((y - c[1]) / (0.35 * shape[1])) ** 2
      + ((x - c[2]) / (0.3 * shape[2])) ** 2 < 1] = 400.0
def high_water():  # bytes: the process's peak resident memory since the last reset (VmHWM)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current resident size: the setup's peak is not counted
before = psutil.Process().memory_info().rss
vessels = model.predict(image, scan, None)
roi, channels = roi_channels(image, scan, vessels, pipeline.roi_settings())
peak = high_water()
print(json.dumps({"grown": peak - before, "voxels": image.size, "grid": list(vessels.probabilities.shape),
                  "scan": list(shape), "roi": list(channels[1].shape)}))
"""


def _grown(pipeline, shape, repeats: int = 2) -> dict:
    """The child's measurement with the least growth of ``repeats`` runs: the peak of one run varies by up to
    ~75 MB (allocator and thread timing; measured 0.35-0.42 GB at 128 x 128 x 100), the least is what the step
    needs."""
    runs = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-c", CHILD, str(pipeline), json.dumps(shape)], capture_output=True,
                              text=True, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return min(runs, key=lambda run: run["grown"])


def test_stage1_and_roi_memory_grows_a_few_bytes_per_scan_voxel(quick_demo):
    """The same head at 128 x 128 x 100 and 320 x 320 x 250: stage 1's own grid is the same (it follows the
    millimetres), so the difference in peak memory is what each scan voxel costs (24 M voxels apart, so the
    run-to-run noise is a few bytes per voxel at most, the 14-class export 56)."""
    pipeline = quick_demo / "pipeline" / "pipeline.json"
    small, large = _grown(pipeline, [100, 128, 128]), _grown(pipeline, [250, 320, 320])
    assert large["grid"] == small["grid"] and large["grid"][0] == 14 and large["grid"][1:] != large["scan"]
    slope = (large["grown"] - small["grown"]) / (large["voxels"] - small["voxels"])
    assert slope < BYTES_PER_VOXEL_LIMIT, (slope, small, large)
