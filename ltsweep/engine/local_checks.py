"""What a local `ltsweep run` checks of this machine and of `--address` before it writes
anything: that a Ray cluster answers at the address (ray.init itself would wait for it
without end, so a child process asks, with a timeout), and that a GPU asked for is here."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from ltsweep.sweep.base import SpecError, one_line
from ltsweep.sweep.schema import Sweep

#: how long `run --address` waits for the Ray cluster to answer before giving up
ADDRESS_TIMEOUT_S = 45.0


def check_address(address: str) -> None:
    """`--address` names a Ray cluster that answers (else ray.init would wait for minutes)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise SpecError(f"--address: {address!r} is not HOST:PORT of a Ray cluster's head")
    try:
        with socket.create_connection((host, int(port)), timeout=10):
            pass
    except (OSError, ValueError, OverflowError) as err:
        raise SpecError(
            f"--address: no Ray cluster answers at {host}:{port} ({err.strerror or err})"
        ) from None
    # something listens: is it a Ray cluster? ray.init would wait for it without end, so a
    # child process asks, and is killed after ADDRESS_TIMEOUT_S
    probe = (
        "import logging, ray, sys\n"
        f"ray.init(address={address!r}, logging_level=logging.ERROR, log_to_driver=False)\n"
        "print(ray.cluster_resources().get('CPU', 0))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            timeout=ADDRESS_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise SpecError(
            f"--address: {address} answers but is no Ray cluster that ltsweep could join within "
            f"{ADDRESS_TIMEOUT_S:.0f} s"
        ) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SpecError(
            f"--address: cannot join the Ray cluster at {address}: {one_line(last, 200)}"
        )


def asked_kinds(sweep: Sweep) -> list[str]:
    """The unit kinds whose `resources.<kind>` a run asks Ray for: baselines only when the
    sweep has some (their default, the pre-train's, must not stop a CPU-only grid)."""
    return ["pretrain", "finetune"] + (["baseline"] if sweep.baselines.methods else [])


def check_cpus(sweep: Sweep, source: str) -> None:
    """A local run's Ray has this machine's CPUs: a unit asking for more would never be
    scheduled, so it is refused here, before the run folder is written."""
    have = os.cpu_count() or 1
    for kind in asked_kinds(sweep):
        cpu = getattr(sweep.resources, kind).cpu
        if cpu > have:
            raise SpecError(
                f"{source}: resources.{kind}.cpu: {cpu:g} CPUs asked but this machine's local Ray has "
                f"{have} (ask for at most {have}, or run with --cluster or --address)"
            )


def check_gpu(sweep: Sweep, source: str) -> None:
    """A local run that asks for a GPU (device cuda, or GPU resources) has one."""
    wants = [
        f"resources.{kind}.gpu"
        for kind in asked_kinds(sweep)
        if getattr(sweep.resources, kind).gpu > 0
    ]
    if sweep.execution.device == "cuda":
        wants.insert(0, "execution.device")
    if not wants:
        return
    import torch  # only a local run that asks for a GPU pays for this import

    if not torch.cuda.is_available():
        raise SpecError(
            f"{source}: {wants[0]}: a GPU is asked for but this machine has none (set "
            "execution.device: cpu and resources.*.gpu: 0, or run with --cluster)"
        )
