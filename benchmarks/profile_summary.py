#!/usr/bin/env python3
"""Summarise a py-spy raw (collapsed-stack) profile: where each thread's samples go.

    py-spy record -r 100 --threads -f raw -o prof.raw -- python bench_worker.py ...
    python benchmarks/profile_summary.py prof.raw [--rate 100] [--top 15] [--thread recorder]

py-spy only counts samples of threads that are running (not idle or blocked), so the
samples per thread are CPU time spent in Python or in native code called from it. The
report shows, per thread, the seconds of CPU, then the functions with the most inclusive
time (the frame is anywhere on the stack) and the most self time (the leaf frame).
Uses only the standard library.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

_THREAD_ID = re.compile(r" \(\d+\)")
_LINE_NO = re.compile(r":\d+\)$")


def load(path: Path) -> list[tuple[str, list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        frames = stack.split(";")
        thread = _THREAD_ID.sub("", frames[0]).removeprefix("thread: ").removeprefix("thread").strip() or "?"
        # "Thread-3 (worker)" -> dbt worker threads share one name.
        if thread.endswith("(worker)"):
            thread = "dbt worker threads"
        thread = re.sub(r"_\d+$", "", thread)
        frames = [_LINE_NO.sub(")", f) for f in frames[1:]]
        stacks.append((thread, frames, n))
    return stacks


def summarise(stacks, rate: float, top: int, only: str | None) -> str:
    per_thread: Counter = Counter()
    inclusive: dict[str, Counter] = defaultdict(Counter)
    leaf: dict[str, Counter] = defaultdict(Counter)
    for thread, frames, n in stacks:
        per_thread[thread] += n
        for frame in set(frames):
            inclusive[thread][frame] += n
        if frames:
            leaf[thread][frames[-1]] += n
    total = sum(per_thread.values())
    lines = [f"total: {total} samples = {total / rate:.1f} s of thread CPU time", ""]
    lines.append("| thread | CPU s | share |")
    lines.append("| --- | ---: | ---: |")
    for thread, n in per_thread.most_common():
        lines.append(f"| {thread} | {n / rate:.2f} | {100 * n / total:.1f}% |")
    for thread, n in per_thread.most_common():
        if only and only.lower() not in thread.lower():
            continue
        if n < total * 0.01 and not only:
            continue
        lines.append("")
        lines.append(f"## {thread}: {n / rate:.2f} s")
        lines.append("inclusive:")
        for frame, m in inclusive[thread].most_common(top):
            lines.append(f"  {m / rate:7.2f} s {100 * m / n:5.1f}%  {frame}")
        lines.append("self:")
        for frame, m in leaf[thread].most_common(top):
            lines.append(f"  {m / rate:7.2f} s {100 * m / n:5.1f}%  {frame}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path)
    parser.add_argument("--rate", type=float, default=100.0, help="py-spy sampling rate used (-r)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--thread", default=None, help="only threads whose name contains this")
    args = parser.parse_args()
    print(summarise(load(args.raw), args.rate, args.top, args.thread))


if __name__ == "__main__":
    main()
