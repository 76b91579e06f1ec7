"""Shared by the benchmarks: running a command while sampling its memory, tables, JSON results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "wikitext-2"


def _tree_rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
            except (OSError, IndexError):
                continue
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
        stack.extend(children.get(current, []))
    return total


def run_measured(cmd: list[str], env: dict | None = None, timeout: float = 1800,
                 check: bool = True) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run `cmd` from the repository root; return (result, wall seconds, peak RSS of its process tree).
    With `check`, a failed command ends the benchmark with its stderr."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_bytes(proc.pid))
        if time.perf_counter() - start > timeout:
            proc.kill()
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    result = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        sys.exit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-3000:]}")
    return result, wall, peak


def row_recorder(rows: list[dict]):
    """A function that adds measured rows to `rows` and prints each at once, so that a later failure of the
    benchmark keeps what it measured."""
    def measured(new: list[dict]) -> None:
        rows.extend(new)
        for row in new:
            print("measured:", json.dumps(row), flush=True)
    return measured


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in header]] + [[f"{c:,.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def cpu_name() -> str:
    """The CPU the figures come from: model, cores this process may use, and its vector units."""
    from pipeline.core.runtime import available_cores, cpu_flags

    model = "unknown CPU"
    try:
        model = next(line.partition(":")[2].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = cpu_flags()
    units = [name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"),
                                     ("amx_bf16", "AMX-BF16")) if flag in flags]
    return f"{model}, {available_cores()} cores, {' + '.join(units) or 'no AVX2'}"


def write_json(name: str, payload: dict) -> Path:
    """bench/results/NAME.json, with the CPU the figures were measured on."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"cpu": cpu_name(), **payload}, indent=1), encoding="utf-8")
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"\nmeasured on {cpu_name()}; wrote {shown}")
    return path
