"""Parameters, forward+backward time and peak memory of our networks vs nnU-Net's PlainConvUNet.

All figures come from one run on the same patch, and are printed as ratios to PlainConvUNet
configured the way nnU-Net's planner configures it for that patch (and, for the AKOrN and PINN
additions, as overhead over their own backbone). Each network runs in a fresh subprocess so
peak memory (CPU: max RSS growth; CUDA: max allocated) is its own. The kernels a step launches are
counted too: on a GPU, small-tensor work (AKOrN's Euler loop) costs launches, not FLOPs.

    python benchmarks/networks.py --patch 96 96 96 --threads 2 [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time

import torch

NUM_CLASSES = 14
PINN_POINTS = 1024  # interior collocation points per sample (the trainer's default)


def plain_conv_unet(patch):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, pools, kernels, _, _ = get_pool_and_conv_props([1.0, 1.0, 1.0], patch, 4, 999999)
    n = len(pools)
    return PlainConvUNet(1, n, [min(320, 32 * 2**i) for i in range(n)], torch.nn.Conv3d, kernels, pools,
                         [2] * n, NUM_CLASSES, [2] * (n - 1), True, torch.nn.InstanceNorm3d,
                         {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU, {"inplace": True})


def build(name, patch):
    from nnunet_aneurysm.metadata import METADATA_DIM, polarity_gain_weights
    from nnunet_aneurysm.networks.segformer3d import SegFormer3D
    from nnunet_aneurysm.networks.waveformer import WaveFormer

    stage2 = {"artery_channel": 2, "classification_outputs": NUM_CLASSES, "metadata_dim": 7}  # as the planner fills
    return {
        "PlainConvUNet": lambda: plain_conv_unet(patch),
        "SegFormer3D": lambda: SegFormer3D(1, NUM_CLASSES),
        "SegFormer3D+refine": lambda: SegFormer3D(1, NUM_CLASSES, refine_head=True),
        "SegFormer3D+refine+meta": lambda: SegFormer3D(1, NUM_CLASSES, refine_head=True, metadata_dim=METADATA_DIM,
                                                       input_gain=polarity_gain_weights()),  # stage 1 as planned
        "WaveFormer": lambda: WaveFormer(3, NUM_CLASSES, **stage2),
        "WaveFormer+AKOrN": lambda: WaveFormer(3, NUM_CLASSES, akorn={}, **stage2),
        "WaveFormer+AKOrN+PINN": lambda: WaveFormer(3, NUM_CLASSES, akorn={}, pinn={}, **stage2),
    }[name]()


def example_input(name, batch, patch, device):
    """Stage 2's networks read image, vessel probability and artery labels; the others one image channel."""
    if not name.startswith("WaveFormer"):
        return torch.randn(batch, 1, *patch, device=device)
    x = torch.randn(batch, 3, *patch, device=device)
    x[:, 1] = torch.rand(batch, *patch, device=device)
    x[:, 2] = torch.randint(0, 14, (batch, *patch), device=device).float()
    return x


def step(model, x, device):
    """One training step's forward + backward: the series heads for stage 2's networks, plus the float64
    physics loss where there is a PINN head (as the trainer computes it)."""
    from nnunet_aneurysm.losses.physics import physics_loss

    with torch.autocast(device.type, enabled=device.type == "cuda"):
        if x.shape[1] == 3:
            seg, aux = model(x, return_aux=True)
            loss = seg.float().mean() + aux["class_logits"].float().mean()
        else:
            seg, aux = model(x), None
            loss = seg.float().mean()
    if aux is not None and aux["pinn_code"] is not None:
        coords = (torch.rand(x.shape[0], PINN_POINTS, 3, device=device, dtype=torch.float64) * 2 - 1) * 20
        code, head = aux["pinn_code"], model.pinn_head
        terms = physics_loss(lambda c: head.field(c, code), coords, coords[:, :256], 100.0,
                             field_with_derivatives=lambda c: head.field_with_derivatives(c, code))
        loss = loss + terms["total"].float()
    loss.backward()


# aten ops that only re-describe or allocate memory: no kernel runs for them
NO_KERNEL_OPS = {
    "aten::_reshape_alias", "aten::_unsafe_view", "aten::alias", "aten::as_strided", "aten::as_strided_",
    "aten::chunk", "aten::detach", "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::expand",
    "aten::flatten", "aten::lift_fresh", "aten::mH", "aten::mT", "aten::narrow", "aten::numpy_T",
    "aten::permute", "aten::reshape", "aten::resize_", "aten::resolve_conj", "aten::resolve_neg",
    "aten::result_type", "aten::select", "aten::set_", "aten::slice", "aten::split", "aten::squeeze",
    "aten::t", "aten::to", "aten::transpose", "aten::unbind", "aten::unflatten", "aten::unsqueeze",
    "aten::view"}


def kernels_per_step(model, x, device) -> int:
    """Kernels one training step launches: on CUDA the profiler's kernel count; on the CPU the innermost
    aten ops that compute (views, allocations and no-op casts left out), which a GPU launches about once
    each. Where a step is launch-bound (small tensors: AKOrN's Euler loop on 4^3 regions), time follows
    this count, not the FLOPs. The CPU count is a proxy: it also counts the per-batch clones of
    ``bmm``'s CPU backward, which a GPU does not launch."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    model.zero_grad(set_to_none=True)
    with profile(activities=activities) as prof:
        step(model, x, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.events()
    if device.type == "cuda":
        return sum(e.device_type == torch.autograd.DeviceType.CUDA for e in events)
    computes = [e for e in events if e.name.startswith("aten::") and e.name not in NO_KERNEL_OPS]
    return sum(not any(c.name.startswith("aten::") and c.name not in NO_KERNEL_OPS for c in e.cpu_children)
               for e in computes)  # innermost computing ops only: aten::conv3d -> ... -> one kernel


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(name, patch, batch, threads, device_name, repeats, queue):
    torch.set_num_threads(threads)
    rss_before = current_rss_bytes()  # after imports, before the model exists
    torch.manual_seed(0)
    device = torch.device(device_name)
    torch.backends.cudnn.benchmark = True  # as nnU-Net's trainer sets it
    model = build(name, patch).to(device).train()
    x = example_input(name, batch, patch, device)
    for _ in range(3):  # warm-up (and cuDNN's algorithm search on CUDA)
        step(model, x, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        step(model, x, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:  # peak resident set over what the process held before building the model
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    queue.put({"name": name, "params": sum(p.numel() for p in model.parameters()),
               "seconds": statistics.median(times), "peak_bytes": peak, "kernels": kernels_per_step(model, x, device)})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs=3, default=[96, 96, 96])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median round is printed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="*", default=None, help="subset of networks")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    names = args.only or ["PlainConvUNet", "SegFormer3D", "SegFormer3D+refine", "SegFormer3D+refine+meta", "WaveFormer",
                          "WaveFormer+AKOrN", "WaveFormer+AKOrN+PINN"]
    ctx = mp.get_context("spawn")
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for round_ in range(args.rounds):  # networks interleaved: a busy spell of a shared machine hits them all
        for name in names:
            queue = ctx.Queue()
            proc = ctx.Process(target=measure, args=(name, args.patch, args.batch, args.threads, args.device,
                                                     args.repeats, queue))
            proc.start()
            proc.join()
            if proc.exitcode != 0 or queue.empty():
                raise SystemExit(f"{name} failed (exit {proc.exitcode}): see the traceback above")
            runs[name].append(queue.get())
            print(f"round {round_ + 1}: {name} {runs[name][-1]['seconds']:.3f} s", flush=True)
    rows = {name: {"params": r[0]["params"], "seconds": statistics.median(x["seconds"] for x in r),
                   "peak_bytes": max(x["peak_bytes"] for x in r), "kernels": r[0]["kernels"]}
            for name, r in runs.items()}

    base = rows.get("PlainConvUNet")
    print(f"\npatch {args.patch}, batch {args.batch}, {args.threads} threads, device {args.device}, "
          f"median over {args.rounds} interleaved rounds of the median of {args.repeats} fwd+bwd after 3 warm-ups")
    print(f"{'network':24s} {'params (M)':>10s} {'s/step':>8s} {'peak MB':>9s} "
          f"{'x faster':>9s} {'x fewer params':>15s} {'mem ratio':>10s} {'kernels':>8s}")
    for name, r in rows.items():
        ratios = ("", "", "")
        if base:
            ratios = (f"{base['seconds'] / r['seconds']:.2f}", f"{base['params'] / r['params']:.2f}",
                      f"{r['peak_bytes'] / base['peak_bytes']:.2f}")
        print(f"{name:24s} {r['params'] / 1e6:10.2f} {r['seconds']:8.3f} {r['peak_bytes'] / 1e6:9.0f} "
              f"{ratios[0]:>9s} {ratios[1]:>15s} {ratios[2]:>10s} {r['kernels']:8d}")
    for extra, backbone in (("WaveFormer+AKOrN", "WaveFormer"), ("WaveFormer+AKOrN+PINN", "WaveFormer+AKOrN"),
                            ("SegFormer3D+refine+meta", "SegFormer3D+refine")):
        if extra in rows and backbone in rows:
            overhead = rows[extra]["seconds"] / rows[backbone]["seconds"] - 1
            more = rows[extra]["kernels"] / rows[backbone]["kernels"] - 1
            print(f"overhead of {extra} over {backbone}: {100 * overhead:+.1f} % time, {100 * more:+.1f} % kernels "
                  f"per step (what a launch-bound GPU step pays)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
