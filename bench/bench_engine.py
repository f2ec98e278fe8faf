"""Benchmark: the link engine alone (no Prefect), this checkout against another one, alternated.

On the 2-core VM the same commit's flow time moves by 30 % between runs (and the naive loop of
``bench_links.py`` by as much), so a change worth a few per cent is invisible in single runs. This
runs :func:`passflow.run.run_issue` on the same 1M-row segment in fresh processes, alternating
between this checkout and ``--other`` (e.g. ``git worktree add /tmp/before <commit>``), and prints
per side the mean, min and max wall time and the CPU time of the run's whole process tree (the
run's process, the forkserver and its staging workers, from ``/proc``), and the ratios between
the sides, measured in one run.

``--tuning`` instead compares this checkout with its process tuning on and off (``PASSFLOW_TUNING``, see
:mod:`passflow.tuning`): all knobs off, and each knob off alone, alternated in one run.

Usage:  python bench/bench_engine.py [--rows 1000000] [--runs 5] [--other /path/to/other/checkout | --tuning]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_links import CAMPAIGN, ROOT, ensure_segment  # noqa: E402

# One run in a fresh process: the checkout in argv[1] comes first on sys.path (passflow is a
# namespace package, so the first checkout on the path provides every module, workers included).
ENGINE = r"""
import json, os, sys, threading, time
sys.path.insert(0, sys.argv[1])
from passflow.config import load_campaign
try:
    from passflow.run import run_issue
except ImportError:  # a checkout from before passflow.run (e.g. 6f50e4d)
    from passflow.engine import run_issue

tick = os.sysconf("SC_CLK_TCK")
cpu = {}  # pid -> last utime + stime seen (workers exit before the run returns)
def tree(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        kids = []
    return [pid] + [p for k in kids for p in tree(k)]
def sample():
    for pid in tree(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
stop = threading.Event()
def sampler():
    while not stop.wait(0.1):
        sample()
campaign = load_campaign(sys.argv[2])
sample()
before = dict(cpu)  # imports are not the run's
threading.Thread(target=sampler, daemon=True).start()
t0 = time.perf_counter()
result = run_issue(campaign)
wall = time.perf_counter() - t0
stop.set()
sample()
print(json.dumps({"wall_s": wall, "cpu_s": sum(v - before.get(p, 0.0) for p, v in cpu.items()),
                  "issued": result.counts.issued_new}))
"""


def run_once(root: Path, campaign: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", ENGINE, str(root), str(campaign)],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        sys.exit(f"engine run in {root} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5, help="runs per side")
    ap.add_argument("--other", type=Path, help="another checkout to compare with (alternated)")
    ap.add_argument("--tuning", action="store_true", help="this checkout: process tuning on vs off, and each knob off")
    args = ap.parse_args()
    seg = ensure_segment(args.rows)
    sides: dict[str, tuple[Path, dict[str, str]]] = {"this": (ROOT, {})}
    if args.other:
        sides["other"] = (args.other.resolve(), {})
    if args.tuning:
        from passflow.tuning import KNOBS, TUNING_ENV

        sides = {"on": (ROOT, {TUNING_ENV: "on"}), "off": (ROOT, {TUNING_ENV: "off"})}
        sides |= {f"-{k}": (ROOT, {TUNING_ENV: f"-{k}"}) for k in KNOBS if k != "switch_interval"}  # API runs only
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for i in range(args.runs):
        for name, (root, env) in sides.items():
            with tempfile.TemporaryDirectory(prefix="passflow-bench-engine-") as tmp:
                out = Path(tmp)
                camp = out / "bench.toml"
                source = f'csv = "{seg}"'
                camp.write_text(CAMPAIGN.format(source=source, chunk=50_000, out=out), encoding="utf-8")
                res = run_once(root, camp, env)
            # Every run writes ~1.7 GB; let the disk catch up before the next one starts, so a run
            # never pays for the writeback its predecessor left behind.
            os.sync()
            assert res["issued"] == args.rows, res
            results[name].append(res)
            print(f"run {i + 1}  {name:16}  {res['wall_s']:6.2f} s  CPU {res['cpu_s']:6.2f} s", flush=True)
    print()
    means = {}
    for name, runs in results.items():
        walls, cpus = [r["wall_s"] for r in runs], [r["cpu_s"] for r in runs]
        means[name] = (statistics.mean(walls), statistics.mean(cpus))
        print(
            f"{name:16} ({sides[name][0]} {sides[name][1] or ''}): wall {means[name][0]:.2f} s mean ({min(walls):.2f}–{max(walls):.2f}), "
            f"CPU {means[name][1]:.2f} s mean, {args.rows / means[name][0]:,.0f} rows/s"
        )
    if "other" in means:
        print(
            f"this / other: wall {means['this'][0] / means['other'][0]:.3f}, "
            f"CPU {means['this'][1] / means['other'][1]:.3f}"
        )
    if "on" in means:  # > 1: the knob pays (turning it off is slower)
        for name in [n for n in means if n != "on"]:
            print(f"{name:16} / on: wall {means[name][0] / means['on'][0]:.3f}, CPU {means[name][1] / means['on'][1]:.3f}")


if __name__ == "__main__":
    main()
