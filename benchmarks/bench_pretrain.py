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
unless overridden. On a CPU shared with other jobs, `--threads 1 --clock cpu` measures the
work itself rather than the wait for a core.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from ltsweep.augment import Normalize, two_views
from ltsweep.data.base import ArrayImageSet
from ltsweep.device import autocast, pick_device, to_device
from ltsweep.models.resnet import build_encoder
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


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
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
