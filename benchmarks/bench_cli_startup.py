"""Median wall time of `selfimprove --help` over 10 runs (target < 1.0 s). Prints the figure."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main(runs: int = 10) -> float:
    exe = shutil.which("selfimprove") or str(Path(sys.executable).parent / "selfimprove")
    subprocess.run([exe, "--help"], capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([exe, "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"selfimprove --help: median {median * 1000:.0f} ms over {runs} runs "
          f"(min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms); target < 1000 ms: "
          f"{'OK' if median < 1.0 else 'MISSED'}")
    return median


if __name__ == "__main__":
    main()
