"""How much of a pre-train step is the model, and how much is getting the views ready?

For each SSL method, side by side in one process, images/s of
  (a) the full step, as `ltsweep.train.selfsup.loop.pretrain` does it: read uint8 images from an
      `ArrayImageSet` by index, two-view augmentation (`ltsweep.augment.two_views`),
      normalise, forward, backward, optimiser step (+ BYOL's EMA update);
  (b) the bare model step on float views prepared beforehand: the same forward, backward,
      optimiser step and `after_step`.
and, for scale, (c) the input pipeline of (a) alone (read, augment, normalise).
The ratio (a)/(b) is the share of the model's throughput the input pipeline leaves; near 1
means the pipeline is not the bottleneck. Steps of (a) and (b) alternate, so a machine whose
load changes during the run slows both alike; warm-up steps are not timed.

    python benchmarks/bench_pretrain.py --width 64 --image-size 32 --batch 128 --steps 5

Images are random uint8 (content does not change the cost); heads have the paper's sizes
unless overridden.

Precision and memory format:

    python benchmarks/bench_pretrain.py --compare-precision     # < 3 min: width 16, one method
    python benchmarks/bench_pretrain.py --speed-table --write   # ~10 min: 4 methods x 3 widths

run the full step (read, augment, normalise, forward, backward, optimiser) under several
settings side by side, interleaved step by step: fp32 NCHW (what the CPU ran before), each
option alone, and the default (`execution` left at auto, resolved for this machine). Each
block also times a bare 2048^2 matmul in fp32 and in bf16, interleaved with the steps, and
reports a step's FLOPs (torch's FLOP counter, forward + backward, the model only) per second
as a share of those rates. On a CPU shared with other jobs, `--threads 1 --clock cpu` measures the
work itself rather than the wait for a core.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

import numpy as np
import torch
from results_md import publish

from ltsweep.augment import Normalize, two_views
from ltsweep.data.base import ArrayImageSet
from ltsweep.device import Speed, autocast, pick_device, to_device
from ltsweep.models.resnet import build_encoder
from ltsweep.sweep import precision
from ltsweep.sweep.schema import ExecutionSettings
from ltsweep.sweep.ssl_settings import SSL_SETTINGS, SSLSettings
from ltsweep.train.selfsup.base import REGISTRY, SSLMethod, build_method
from ltsweep.train.selfsup.loop import make_optimizer

MEAN = (0.49, 0.48, 0.45)
STD = (0.25, 0.24, 0.26)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(REGISTRY), choices=list(REGISTRY))
    p.add_argument(
        "--width", type=int, default=64, help="ResNet18 first-stage channels (64 = standard)"
    )
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed steps of each kind")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each kind first")
    p.add_argument("--pool", type=int, default=2048, help="images in the ArrayImageSet read from")
    p.add_argument("--proj-hidden", type=int, default=None, help="override the paper's head sizes")
    p.add_argument("--proj-dim", type=int, default=None)
    p.add_argument("--pred-hidden", type=int, default=None)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only, as in the loop)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="wall: elapsed time; cpu: this process's CPU time, steadier on a shared machine\n"
        "(CPU only; with N threads it counts N busy threads N times)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--compare-precision",
        action="store_true",
        help="fp32 NCHW against the default at width 16 (--methods' first), one summary line",
    )
    p.add_argument(
        "--speed-table",
        action="store_true",
        help="every method x --widths x setting; with --write, RESULTS.md's section",
    )
    p.add_argument("--widths", type=int, nargs="+", default=[8, 16, 64])
    p.add_argument("--write", action="store_true", help="write the speed table to RESULTS.md")
    p.add_argument(
        "--gpu-table",
        metavar="FILE",
        help="every method at --width under fp32, the default (auto) and the default with\n"
        "torch.compile; the markdown table goes to FILE (benchmarks/gpu_acceptance.sh)",
    )
    p.add_argument(
        "--compile-methods",
        type=int,
        default=None,
        help="with --gpu-table: compile only the first N methods (compiling takes minutes\n"
        "on a CPU); default: all",
    )
    return p.parse_args(argv)


def settings_for(name: str, args: argparse.Namespace) -> SSLSettings:
    cls = SSL_SETTINGS[name]
    fields: dict[str, object] = {"batch_size": args.batch}
    for key in ("proj_hidden", "proj_dim", "pred_hidden"):
        value = getattr(args, key)
        if value is not None and key in cls.model_fields:
            fields[key] = value
    return cls(**fields)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_method(
    name: str, args: argparse.Namespace, device: torch.device
) -> tuple[float, float, float]:
    """Images/s of one method's full step, bare model step, and input pipeline alone."""
    settings = settings_for(name, args)
    torch.manual_seed(args.seed)
    method: SSLMethod = build_method(name, build_encoder(width=args.width), settings).to(device)
    if device.type == "cuda":
        method.to(memory_format=torch.channels_last)
    method.train()
    opt = make_optimizer(method.parameters(), settings)
    rng = np.random.default_rng(args.seed)
    shape = (args.pool, 3, args.image_size, args.image_size)
    images = ArrayImageSet(
        rng.integers(0, 256, size=shape, dtype=np.uint8), np.zeros(args.pool, dtype=np.int64)
    )
    normalize = Normalize(MEAN, STD, device)
    aug_gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    order_gen = torch.Generator().manual_seed(args.seed)
    batch = min(args.batch, args.pool)

    def model_step(v1: torch.Tensor, v2: torch.Tensor) -> None:
        with autocast(device, args.amp):
            loss = method.loss(v1, v2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.after_step(0.5)

    def prepare() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(len(images), generator=order_gen)[:batch].numpy()
        x = to_device(images.images(idx), device)
        v1, v2 = two_views(x, settings.augment, aug_gen)
        v1, v2 = normalize(v1), normalize(v2)
        if device.type == "cuda":
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        return v1, v2

    ready = prepare()  # the bare step's input, built once, outside the timing

    def full() -> None:
        model_step(*prepare())

    def bare() -> None:
        model_step(*ready)

    def views() -> None:
        prepare()

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    timed: dict[Callable[[], None], float] = {full: 0.0, bare: 0.0, views: 0.0}
    for i in range(args.warmup + args.steps):
        for step in (full, bare, views):
            sync(device)
            t0 = clock()
            step()
            sync(device)
            if i >= args.warmup:
                timed[step] += clock() - t0
    n = batch * args.steps
    return n / timed[full], n / timed[bare], n / timed[views]


SPEEDS = {
    "fp32 NCHW (before)": Speed(),
    "channels-last": Speed("fp32", "channels_last"),
    "bf16": Speed("bf16", "contiguous"),
    "bf16 + channels-last": Speed("bf16", "channels_last"),
}


def default_speed(device: torch.device) -> Speed:
    """What `execution` left at auto resolves to for a unit on `device`, on this machine."""
    ex = ExecutionSettings(device=device.type)
    return Speed.of(precision.resolve(ex, 1 if device.type == "cuda" else 0))


def matmul_rates(device: torch.device, n: int = 2048) -> dict[str, Callable[[], None]]:
    """One bare n x n matmul per call, fp32 and bf16 (the FLOP rates the steps are read against)."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        out[name] = lambda a=a, b=b: torch.mm(a, b)
    return out


def step_flops(name: str, args: argparse.Namespace, width: int, device: torch.device) -> float:
    """FLOPs of one training step's forward + backward (torch's counter; model only)."""
    from torch.utils.flop_counter import FlopCounterMode

    settings = settings_for(name, args)
    torch.manual_seed(args.seed)
    method = build_method(name, build_encoder(width=width), settings).to(device).train()
    v = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    with FlopCounterMode(display=False) as counter:
        method.loss(v, v.clone()).backward()
    return float(counter.get_total_flops())


def speed_block(
    name: str,
    width: int,
    speeds: dict[str, Speed],
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[dict[str, float], dict[str, float], float]:
    """Images/s of the full step under each speed, matmul GFLOP/s, and FLOPs per step.

    Every setting gets its own model from the same seed; steps of all settings and the two
    matmuls alternate, so load that changes during the block slows all alike.
    """
    settings = settings_for(name, args)
    rng = np.random.default_rng(args.seed)
    shape = (args.pool, 3, args.image_size, args.image_size)
    images = ArrayImageSet(
        rng.integers(0, 256, size=shape, dtype=np.uint8), np.zeros(args.pool, dtype=np.int64)
    )
    normalize = Normalize(MEAN, STD, device)
    batch = min(args.batch, args.pool)
    steps: dict[str, Callable[[], None]] = {}
    for label, speed in speeds.items():
        torch.manual_seed(args.seed)
        method = build_method(name, build_encoder(width=width), settings).to(device)
        speed.model(method).train()
        opt = make_optimizer(method.parameters(), settings)
        aug_gen = torch.Generator(device=device).manual_seed(args.seed + 1)
        order_gen = torch.Generator().manual_seed(args.seed)
        loss_fn = speed.compiled(method.loss)

        def step(
            method=method,
            opt=opt,
            aug_gen=aug_gen,
            order_gen=order_gen,
            speed=speed,
            loss_fn=loss_fn,
        ):
            idx = torch.randperm(len(images), generator=order_gen)[:batch].numpy()
            x = to_device(images.images(idx), device)
            v1, v2 = two_views(x, settings.augment, aug_gen)
            v1, v2 = speed.input(normalize(v1)), speed.input(normalize(v2))
            with autocast(device, speed):
                loss = loss_fn(v1, v2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            method.after_step(0.5)

        steps[label] = step
    mm = matmul_rates(device)
    calls: dict[str, Callable[[], None]] = {**steps, **{f"matmul {k}": f for k, f in mm.items()}}
    timed = dict.fromkeys(calls, 0.0)
    for i in range(args.warmup + args.steps):
        for label, fn in calls.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if i >= args.warmup:
                timed[label] += time.perf_counter() - t0
    img_s = {k: batch * args.steps / timed[k] for k in steps}
    gflops = {k: 2 * 2048**3 * args.steps / timed[f"matmul {k}"] / 1e9 for k in mm}
    return img_s, gflops, step_flops(name, args, width, device)


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}/{five:.2f}/{fifteen:.2f}"


def speed_table(args: argparse.Namespace, device: torch.device) -> str:
    default = default_speed(device)
    speeds = dict(SPEEDS)
    default_label = next((k for k, v in speeds.items() if v == default), None)
    if default_label is None:
        speeds["default"] = default
        default_label = "default"
    lines = [
        "| method | width | setting | img/s | x fp32 NCHW | model GFLOP/s | % of bf16 matmul "
        "| % of fp32 matmul | load avg |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for width in args.widths:
        for name in args.methods:
            img_s, mm, flops = speed_block(name, width, speeds, args, device)
            base = img_s["fp32 NCHW (before)"]
            for label, rate in img_s.items():
                g = rate / args.batch * flops / 1e9
                mark = " **(default)**" if label == default_label else ""
                lines.append(
                    f"| {name} | {width} | {label}{mark} | {rate:.3g} | {rate / base:.2f} | "
                    f"{g:.0f} | {100 * g / mm['bf16']:.0f} | {100 * g / mm['fp32']:.0f} | {load_line()} |"
                )
            lines.append(
                f"| {name} | {width} | (bare 2048^2 matmul) | | | fp32 {mm['fp32']:.0f}, "
                f"bf16 {mm['bf16']:.0f} | | | |"
            )
            print(lines[-len(img_s) - 1 :], flush=True)
    return "\n".join(lines)


def compare_precision(args: argparse.Namespace, device: torch.device) -> None:
    name = args.methods[0]
    default = default_speed(device)
    speeds = {"fp32 NCHW (before)": Speed(), "default": default}
    img_s, mm, flops = speed_block(name, 16, speeds, args, device)
    print(f"default on this machine: {default}; load average {load_line()}")
    for label, rate in img_s.items():
        g = rate / args.batch * flops / 1e9
        print(
            f"{label}: {rate:.0f} img/s, {g:.0f} GFLOP/s "
            f"(bare matmul fp32 {mm['fp32']:.0f}, bf16 {mm['bf16']:.0f})"
        )
    ratio = img_s["default"] / img_s["fp32 NCHW (before)"]
    print(f"pretrain speed-up of the default over fp32: {ratio:.2f}x (width 16, {name})")


def gpu_table(args: argparse.Namespace, device: torch.device) -> None:
    """Images/s of each method's full step at --width in fp32, the default precision and the
    default with compile, interleaved per method; one markdown table written to the file."""
    default = default_speed(device)
    lines = [
        f"Device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f"; ResNet18 width {args.width}, batch {args.batch} of {args.image_size}x"
        f"{args.image_size}, {args.steps} timed + {args.warmup} warm-up steps per setting; "
        f"default: {default.precision}, {default.memory_format}",
        "",
        "| method | fp32 img/s | auto img/s | auto + compile img/s | auto / fp32 "
        "| model TFLOP/s (auto) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, name in enumerate(args.methods):
        speeds = {"fp32": Speed(), "auto": default}
        if args.compile_methods is None or i < args.compile_methods:
            speeds["compile"] = dataclasses.replace(default, compile=True)
        img_s, _, flops = speed_block(name, args.width, speeds, args, device)
        comp = f"{img_s['compile']:.4g}" if "compile" in img_s else "not timed"
        tflops = img_s["auto"] / args.batch * flops / 1e12
        lines.append(
            f"| {name} | {img_s['fp32']:.4g} | {img_s['auto']:.4g} | {comp} | "
            f"{img_s['auto'] / img_s['fp32']:.2f} | {tflops:.3g} |"
        )
        print(lines[-1], flush=True)
    with open(args.gpu_table, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu_table:
        gpu_table(args, pick_device(args.device))
        return
    if args.compare_precision or args.speed_table:
        device = pick_device(args.device)
        if args.compare_precision:
            compare_precision(args, device)
            return
        head = (
            f"Command: `python benchmarks/bench_pretrain.py {' '.join(sys.argv[1:])}`  \n"
            f"Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}; torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads, device {device}, CPU "
            f"capability {torch.backends.cpu.get_cpu_capability()}, native bf16 "
            f"{precision.cpu_has_bf16()}; batch {args.batch} of {args.image_size}x"
            f"{args.image_size}, {args.steps} timed + {args.warmup} warm-up steps per setting, "
            f"interleaved; load average (1/5/15 min) at start {load_line()}  \n"
        )
        table = speed_table(args, device)
        body = (
            "## Pre-train at the hardware's limit: precision and memory format\n\n"
            + head
            + f"Load average at the end {load_line()}\n\n"
            + table
            + "\n"
        )
        publish("bench_pretrain_speed", body, args.write)
        return
    device = pick_device(args.device)
    if args.clock == "cpu" and device.type == "cuda":
        raise SystemExit("--clock cpu measures host CPU time; use --clock wall on a GPU")
    print(
        f"ResNet18 width {args.width}, {args.image_size}x{args.image_size}, batch {args.batch}, "
        f"{args.steps} timed + {args.warmup} warm-up steps each, device {device}, "
        f"{torch.get_num_threads()} threads, amp {args.amp and device.type == 'cuda'}, "
        f"{args.clock} clock, torch {torch.__version__}\n"
    )
    print(
        "| method | full step (img/s) | bare model step (img/s) | full / bare "
        "| input pipeline alone (img/s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in args.methods:
        full, bare, views = bench_method(name, args, device)
        print(f"| {name} | {full:.1f} | {bare:.1f} | {full / bare:.2f} | {views:.0f} |", flush=True)


if __name__ == "__main__":
    main()
