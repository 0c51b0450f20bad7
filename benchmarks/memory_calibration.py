"""Planner memory estimate vs the real peak GPU memory of one nnU-Net-style training step.

The step is what nnU-Net's trainer does: autocast forward, loss, scaled backward, SGD with
Nesterov momentum. Needs CUDA; prints measured / estimated per network and patch.

    python benchmarks/memory_calibration.py
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

from nnunet_aneurysm.networks.segformer3d import SegFormer3D
from nnunet_aneurysm.networks.waveformer import WaveFormer
from nnunet_aneurysm.planners.memory import CUDA_OVERHEAD_BYTES, training_memory_bytes

NETWORKS = {
    "SegFormer3D": partial(SegFormer3D, 1, 14, True),
    "WaveFormer+AKOrN+PINN": partial(WaveFormer, 1, 14, True, akorn={}, pinn={}),
}


def measured_peak(build, patch, batch, make_input=None) -> int:
    """``max_memory_allocated`` (bytes) over two steps; ``make_input(batch, patch)``: the input (default one
    random image channel), on CUDA."""
    torch.backends.cudnn.benchmark = True
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = build().cuda().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    scaler = torch.amp.GradScaler("cuda")
    x = make_input(batch, patch) if make_input else torch.randn(batch, 1, *patch, device="cuda")
    for _ in range(2):  # the second step has the momentum buffers
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda"):
            out = model(x)
            loss = sum(o.float().mean() for o in out) if isinstance(out, list) else out.float().mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del model, optimizer, x
    return peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", nargs="+", default=["64,64,64", "96,96,96", "128,128,128", "64,160,160"])
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    print(f"{'network':24s} {'patch':>12s} {'measured GB':>12s} {'estimated GB':>13s} {'ratio':>6s}")
    for name, build in NETWORKS.items():
        for text in args.patches:
            patch = [int(v) for v in text.split(",")]
            # the CUDA context and allocator slack are in the estimate but not in max_memory_allocated
            estimate = training_memory_bytes(build, 1, patch, args.batch) - CUDA_OVERHEAD_BYTES
            peak = measured_peak(build, patch, args.batch)
            print(f"{name:24s} {text:>12s} {peak / 1e9:12.2f} {estimate / 1e9:13.2f} {peak / estimate:6.2f}")


if __name__ == "__main__":
    main()
