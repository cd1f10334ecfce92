"""What a node offers a sweep, checked before it is trusted with units: `ltsweep doctor`, and
the first step of every node of a SLURM job.

A GPU run that goes wrong on a node rarely says so: a torch wheel built for a newer CUDA than
the driver serves sees no GPU and trains on the CPU; a card whose architecture the wheel has
no kernels for fails only at the first convolution; a run folder on a node-private disk loses
every row. Each check here is one line (name, ok / FAIL / note, what was seen), and a FAIL
line says what to do. Only the driver, not a loaded CUDA module, decides which wheel runs:
the wheel brings its own CUDA runtime.

`python -m ltsweep.engine.node_check --node ...` is what a SLURM job runs on each node, in a
child process so that the job's long-lived process never holds torch's memory or a CUDA
context.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ltsweep import gpu_probe
from ltsweep.sweep import precision as precision_rules
from ltsweep.sweep.base import one_line

OK, FAIL, NOTE = "ok", "FAIL", "note"
#: the output fits a terminal of this width
WIDTH = 80
_NAME_W = 11
#: oldest driver (major version) for each CUDA major version a torch wheel is built with
MIN_DRIVER = {13: 580, 12: 525, 11: 450}
#: the build for drivers too old for the default wheel (cu130): CUDA 12.6, driver >= 525
FALLBACK_BUILD = "cu126"
#: how long the training step of each device is timed
STEP_SECONDS = 1.0
#: below this much free memory a GPU cannot hold a unit
MIN_FREE_GIB = 1.0
#: written into a job's cache on the submit host; a node that does not see it has another disk
CACHE_MARKER = ".ltsweep-cache"


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, whether it passed, what was seen."""

    name: str
    status: str
    text: str

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def line(self, width: int = WIDTH) -> str:
        """Aligned and at most `width` characters."""
        head = f"{self.name:<{_NAME_W}} {self.status:<4} "
        return head + one_line(self.text, width - len(head))


# --- torch, the driver, the GPUs ----------------------------------------------------------------


def _major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def driver_check(cuda: str | None, gpus: Sequence[gpu_probe.GpuInfo]) -> Check:
    """Whether the node's driver serves the CUDA version the torch wheel was built with."""
    if not gpus:
        return Check("driver", NOTE, "no NVIDIA driver answers (nvidia-smi): no GPU")
    driver = gpus[0].driver
    if cuda is None:
        return Check(
            "driver", FAIL, f"{driver}, but torch is a CPU-only build: install the CUDA build"
        )
    need = MIN_DRIVER.get(_major(cuda) or 0)
    have = _major(driver)
    if need is None or have is None:
        return Check("driver", NOTE, f"{driver}; no known minimum for CUDA {cuda}")
    if have >= need:
        return Check("driver", OK, f"{driver} (CUDA {cuda} needs >= {need})")
    if have >= MIN_DRIVER[12]:
        advice = f"use the {FALLBACK_BUILD} torch build"
    else:
        advice = f"update the driver to >= {MIN_DRIVER[12]}"
    return Check("driver", FAIL, f"{driver} < {need} needed by CUDA {cuda}: {advice}")


def arch_support(capability: tuple[int, int], arch_list: Sequence[str]) -> str | None:
    """How the wheel runs on a GPU of this capability: its own kernels (sm_XY), kernels of an
    older minor of the same major (binary compatible), PTX it JIT-compiles; None: it cannot."""
    major, minor = capability
    sms, ptx = set(), set()
    for arch in arch_list:
        kind, _, num = arch.partition("_")
        if not num.isdigit() or len(num) < 2:
            continue
        cap = (int(num[:-1]), int(num[-1]))
        (sms if kind == "sm" else ptx if kind == "compute" else set()).add(cap)
    if capability in sms:
        return f"sm_{major}{minor}"
    older = sorted(c for c in sms if c[0] == major and c[1] < minor)
    if older:
        return f"sm_{older[-1][0]}{older[-1][1]} kernels"
    jit = sorted(c for c in ptx if c <= capability)
    if jit:
        return f"PTX compute_{jit[-1][0]}{jit[-1][1]}, JIT"
    return None


def auto_precision(capability: tuple[int, int] | None) -> tuple[str, str]:
    """(precision, why) that `execution.precision: auto` gives on this node: on CUDA by the
    lowest GPU capability, else by the CPU's bf16 instructions."""
    from ltsweep.sweep.schema import ExecutionSettings

    fields = ExecutionSettings.model_fields
    if capability is None:
        chosen = precision_rules.resolve(ExecutionSettings(device="cpu"), 0)["precision"]
        have = precision_rules.cpu_has_bf16()
        why = "CPU has avx512_bf16/amx" if have else "CPU lacks avx512_bf16/amx"
        return chosen, why
    settings = {"device": "cuda"}
    if "gpu_capability" in fields:
        settings["gpu_capability"] = f"{capability[0]}.{capability[1]}"
    try:
        chosen = precision_rules.resolve(ExecutionSettings(**settings), 1)["precision"]
    except Exception:  # noqa: BLE001 - the rules' own form of the capability differs: ours
        chosen = ""
    native = capability >= (8, 0)
    if chosen not in ("bf16", "fp16") or (chosen == "bf16") != native:
        chosen = "bf16" if native else "fp16"  # the rule, where precision.py lacks it
    cap = f"{capability[0]}.{capability[1]}"
    if chosen == "bf16":
        return chosen, f"capability {cap} >= 8.0: bf16 in hardware"
    return chosen, f"capability {cap} < 8.0: bf16 emulated; fp16 + GradScaler"


# --- a training step ----------------------------------------------------------------------------


def train_step_rate(device: str, precision: str, seconds: float = STEP_SECONDS) -> float:
    """Images per second of ResNet18 training steps (SGD, cross-entropy) in `precision` on
    `device`, timed for about `seconds` after one warm-up step; raises if a loss is not finite.

    Width 64 and batch 128 on a GPU (the paper's network), width 16 and batch 32 on the CPU.
    """
    import torch

    from ltsweep.models.resnet import build_encoder

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    width, batch = (64, 128) if cuda else (16, 32)
    torch.manual_seed(0)
    net = torch.nn.Sequential(build_encoder(width=width), torch.nn.Linear(8 * width, 10)).to(dev)
    x = torch.randn(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    if cuda or precision == "bf16":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    step()
    sync()
    steps, t0 = 0, time.perf_counter()
    while True:
        loss = step()
        steps += 1
        if not loss == loss or abs(loss) == float("inf"):
            raise FloatingPointError(f"loss {loss} after {steps} steps")
        sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return steps * batch / elapsed


def step_check(device: str, precision: str, rate: Callable[[str, str], float]) -> Check:
    try:
        ips = rate(device, precision)
    except Exception as err:  # noqa: BLE001 - whatever the device did is the finding
        return Check(f"step {device}", FAIL, f"{precision}: {type(err).__name__}: {err}")
    return Check(f"step {device}", OK, f"{precision} ResNet18 training: {ips:,.0f} img/s")


# --- CPUs, memory, folders ----------------------------------------------------------------------


def cpu_check() -> Check:
    try:
        given = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        given = os.cpu_count() or 1
    text = f"{given} usable of {os.cpu_count()}"
    slurm = os.environ.get("SLURM_CPUS_ON_NODE")
    if slurm:
        text += f"; SLURM_CPUS_ON_NODE={slurm}"
    return Check("cpus", OK, text)


def _cgroup_limit() -> int | None:
    """This process's cgroup memory limit in bytes (v2, else v1), or None when unlimited."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, value = line.partition(":")
            parts = value.split()
            if parts and parts[0].isdigit():
                out[name] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def memory_check() -> Check:
    gib = 1 << 30
    info = _meminfo()
    limit = _cgroup_limit()
    if limit is not None:
        text = f"{limit / gib:.1f} GiB (cgroup)"
    elif "MemTotal" in info:
        text = f"{info['MemTotal'] / gib:.1f} GiB total"
    else:
        text = "unknown"
    if "MemAvailable" in info:
        text += f", {info['MemAvailable'] / gib:.1f} free"
    slurm = os.environ.get("SLURM_MEM_PER_NODE")
    if slurm:
        text += f"; SLURM gives {slurm} MB"
    return Check("memory", OK, text)


def folder_check(name: str, path: Path, marker: str | None = None) -> Check:
    """`path` is seen here and a file written in it reads back and goes away.

    `marker`: a file the submit host wrote there; a node that does not see it does not share
    the folder (it sees a node-private folder of the same name, or none). Without a marker a
    folder not made yet passes when its nearest existing parent is writable.
    """
    if not path.is_dir():
        if marker is not None:
            return Check(
                name, FAIL, f"not seen here (put it on a filesystem all nodes mount): {path}"
            )
        base = path.absolute()
        while not base.exists() and base != base.parent:
            base = base.parent
        if base.is_dir() and os.access(base, os.W_OK | os.X_OK):
            return Check(name, OK, f"not made yet; parent writable: {path}")
        return Check(name, FAIL, f"cannot be made ({base} is not a writable folder): {path}")
    if marker is not None and not (path / marker).exists():
        return Check(name, FAIL, f"not the shared folder ({marker} missing here): {path}")
    probe = path / f".ltsweep-probe-{socket.gethostname()}-{os.getpid()}"
    payload = f"{time.time()}\n"
    try:
        probe.write_text(payload)
        seen = probe.read_text()
        probe.unlink()
    except OSError as err:
        return Check(name, FAIL, f"not writable ({err.strerror or err}): {path}")
    if seen != payload:
        return Check(name, FAIL, f"a file written there read back different: {path}")
    return Check(name, OK, f"writable: {path}")


# --- all of it ----------------------------------------------------------------------------------


def run_checks(
    run_dir: Path | None = None,
    cache_dir: Path | None = None,
    *,
    marker: str | None = None,
    rate: Callable[[str, str], float] | None = None,
) -> list[Check]:
    """Every check, in the order printed. `rate` times a training step (tests replace it).
    With `marker` (a job's node) the run folder must hold it and the cache CACHE_MARKER."""
    import torch

    rate = rate or train_step_rate
    cuda_build = torch.version.cuda
    checks = [Check("torch", OK, f"{torch.__version__}, CUDA build {cuda_build or 'none (CPU)'}")]
    gpus = gpu_probe.visible_gpus()
    driver = driver_check(cuda_build, gpus)
    checks.append(driver)
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    capabilities: list[tuple[int, int]] = []
    if not count:
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1", "NoDevFiles")
        if not gpus:
            checks.append(Check("gpus", NOTE, "CPU only: torch.cuda.is_available() is False"))
        elif driver.failed:
            checks.append(Check("gpus", NOTE, f"torch sees none of the driver's {len(gpus)}"))
        elif hidden:
            checks.append(Check("gpus", NOTE, "CPU only: CUDA_VISIBLE_DEVICES hides the GPUs"))
        else:
            text = f"the driver lists {len(gpus)} but torch sees no CUDA device"
            checks.append(Check("gpus", FAIL, text))
    arch_list = torch.cuda.get_arch_list() if count else []
    for i in range(count):
        cap = tuple(torch.cuda.get_device_capability(i))
        capabilities.append(cap)  # type: ignore[arg-type]
        name = torch.cuda.get_device_name(i)
        how = arch_support(cap, arch_list)  # type: ignore[arg-type]
        sm = f"sm_{cap[0]}{cap[1]}"
        if how is None:
            sms = [a for a in arch_list if a.startswith("sm_")]
            built = f"{sms[0]} and up" if sms else "none"
            if (_major(cuda_build) or 0) >= 13:
                text = f"{sm} not in this wheel ({built}): use the {FALLBACK_BUILD} build"
            else:
                text = f"{sm} not in this wheel ({built}): too old a GPU for this torch"
            checks.append(Check(f"gpu {i}", FAIL, text))
        else:
            checks.append(Check(f"gpu {i}", OK, f"{name}, {sm}: {how}"))
    cap = min(capabilities) if capabilities else None
    chosen, why = auto_precision(cap)
    checks.append(Check("precision", OK, f"auto -> {chosen} ({why})"))
    gpu_ok = not any(c.failed for c in checks)
    for i in range(count):
        if not gpu_ok:
            checks.append(Check(f"step cuda:{i}", NOTE, "not run: a check above failed"))
            continue
        checks.append(step_check(f"cuda:{i}", chosen, rate))
        checks.append(gpu_memory_check(i))
    if not count:
        checks.append(step_check("cpu", chosen, rate))
    checks += [cpu_check(), memory_check()]
    if run_dir is not None:
        checks.append(folder_check("run folder", Path(run_dir), marker))
    if cache_dir is not None:
        cache_marker = CACHE_MARKER if marker is not None else None
        checks.append(folder_check("cache", Path(cache_dir), cache_marker))
    return checks


def gpu_memory_check(index: int) -> Check:
    import torch

    try:
        free, total = torch.cuda.mem_get_info(index)
    except Exception as err:  # noqa: BLE001
        return Check(f"mem cuda:{index}", FAIL, f"{type(err).__name__}: {err}")
    gib = 1 << 30
    text = f"{free / gib:.1f} of {total / gib:.1f} GiB free"
    if free / gib < MIN_FREE_GIB:
        return Check(f"mem cuda:{index}", FAIL, text + f" (< {MIN_FREE_GIB:g} GiB: in use?)")
    return Check(f"mem cuda:{index}", OK, text)


def report(checks: Sequence[Check], width: int = WIDTH) -> tuple[list[str], int]:
    """The lines to print and the exit status: 1 when a check failed, else 0."""
    return [c.line(width) for c in checks], int(any(c.failed for c in checks))


def doctor(
    run_dir: Path | None = None,
    cache_dir: Path | None = None,
    *,
    marker: str | None = None,
    out: Callable[[str], None] = print,
    width: int = WIDTH,
) -> int:
    """Run the checks, print a line each (at most `width` wide), return the exit status."""
    lines, status = report(run_checks(run_dir, cache_dir, marker=marker), width)
    for line in lines:
        out(line)
    return status


def mark_cache(cache_dir: Path) -> None:
    """Make the cache and its CACHE_MARKER on the submit host, so that a node seeing a
    different folder under the same path (a node-local disk) fails its check."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / CACHE_MARKER).touch()


class NodeCheckFailed(RuntimeError):
    """A node of a job cannot run the sweep's units: its failing check's line."""


def check_this_node(
    run_dir: Path,
    cache_dir: Path,
    log: Callable[[str], None],
    *,
    marker: str | None = None,
    timeout_s: float = 300.0,
) -> None:
    """The checks as the first step of a job's node: run in a child process (this long-lived
    one keeps no torch memory and no CUDA context), each line handed to `log`; a failing
    check raises NodeCheckFailed with its line and the node's name."""
    import subprocess

    argv = [sys.executable, "-m", __name__, "--run-dir", str(run_dir), "--width", "300"]
    argv += ["--cache-dir", str(cache_dir)] + (["--marker", marker] if marker else [])
    host = socket.gethostname()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise NodeCheckFailed(f"node check on {host}: no answer in {timeout_s:.0f} s") from None
    lines = done.stdout.splitlines()
    for line in lines:
        log(f"node check on {host}: {line}")
    if done.returncode < 0:  # killed: the job is ending (another node failed, a cancel)
        raise NodeCheckFailed(
            f"node check on {host} stopped by signal {-done.returncode}: the job is ending"
        )
    if done.returncode != 0:
        failing = [line for line in lines if line[_NAME_W:].split()[:1] == [FAIL]]
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise NodeCheckFailed(f"node check failed on {host}: {failing[0] if failing else last}")


def failed_node(job_log_dir: Path) -> str | None:
    """The first "node check failed on NODE: ..." line in a job's task logs, or None. A node
    whose check was only stopped, because the job ended for another node's failure, says
    "stopped by signal" instead, and is not the one named."""
    needle = "node check failed on "
    for log in sorted(Path(job_log_dir).glob("*_log.err")):
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(f"{NodeCheckFailed.__module__}.NodeCheckFailed: {needle}"):
                return line.split(": ", 1)[1]
    return None


def main(argv: list[str] | None = None) -> int:
    """A node's check as a SLURM job runs it: the lines on stdout, exit 1 on a failure."""
    p = argparse.ArgumentParser(prog="python -m ltsweep.engine.node_check")
    p.add_argument("--run-dir", type=Path, help="the run folder the node must see and write")
    p.add_argument("--cache-dir", type=Path, help="the cache the node must see and write")
    p.add_argument("--marker", help="a file the submit host wrote into the run folder")
    p.add_argument("--width", type=int, default=WIDTH, help="longest line (a log: wider)")
    args = p.parse_args(argv)
    try:
        return doctor(args.run_dir, args.cache_dir, marker=args.marker, width=args.width)
    except Exception as err:  # noqa: BLE001 - one line, never a trace, in a job's log
        print(Check("node check", FAIL, f"{type(err).__name__}: {err}").line())
        return 1


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.exit(main())
