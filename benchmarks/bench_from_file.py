"""Reading a 100,000-line --from-file: peak memory and time, as ratios in one run.

Three ways of turning the file into the ordered, de-duplicated run IDs that
`poller wait` hands to the fan-out, each measured with tracemalloc (peak bytes
allocated while reading) and perf_counter (best of five, without
tracemalloc), in the same process, after a warm-up of each:

* ``floor``   -- the structure the wait needs anyway: ``dict.fromkeys`` of the IDs
  already in memory (only the dict is counted);
* ``poller``  -- ``poller.cli._commands.read_run_ids`` (streams the file line by
  line, validating each) into that dict, as ``poller wait --from-file`` does;
  Its time includes checking every ID, which the replaced code left to the
  fan-out;
* ``slurp``   -- the replaced code: read the whole text, ``splitlines``, a list of
  the kept lines, then ``dict.fromkeys`` of a list of them.

    .venv/bin/python benchmarks/bench_from_file.py [--lines 100000]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from poller.cli._commands import read_run_ids

DOMAIN = "dzd_bench"


def slurp(path: str) -> dict[str, None]:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    lines = (line.strip() for line in text.splitlines())
    kept = [line for line in lines if line and not line.startswith("#")]
    return dict.fromkeys([*kept])


def measure(read: Callable[[], object]) -> tuple[int, float]:
    """Peak bytes (under tracemalloc) and seconds (best of 5, without it) of ``read()``."""
    gc.collect()
    tracemalloc.start()
    result = read()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    times = []
    for _ in range(5):
        started = time.perf_counter()
        read()
        times.append(time.perf_counter() - started)
    return peak, min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.txt"
        ids = [f"run-{i:08d}-nightly-import" for i in range(args.lines)]
        path.write_text("# tonight's import\n\n" + "\n".join(ids) + "\n")
        # A warm-up of each: the first read imports the ID validation (botocore).
        dict.fromkeys(read_run_ids(str(path), DOMAIN))
        slurp(str(path))
        floor_peak, _ = measure(lambda: dict.fromkeys(ids))
        rows = {
            "poller": measure(lambda: dict.fromkeys(read_run_ids(str(path), DOMAIN))),
            "slurp": measure(lambda: slurp(str(path))),
        }
    # The IDs' strings are made while reading, so both readers also hold them;
    # the floor is the dict alone. Ratios are what matters.
    print(f"{args.lines} lines; floor (the dict alone): {floor_peak / 1e6:.1f} MB")
    for name, (peak, took) in rows.items():
        print(
            f"{name:>6}: peak {peak / 1e6:6.1f} MB ({peak / floor_peak:.2f}x the floor), "
            f"{took * 1000:6.0f} ms"
        )
    ratio = rows["poller"][0] / rows["slurp"][0]
    print(f"poller / slurp peak memory: {ratio:.2f}x")


if __name__ == "__main__":
    main()
