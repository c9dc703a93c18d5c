"""The budget's AIMD on a model of two servers: why one process cannot tell other clients'
throttles from its own overload, and what ``others_throttled`` buys.

No HTTP and no engine: each budget is `poller._limiter`'s own pure functions
(`throttled`, `succeeded`, `rate_at`) driven call by call on simulated time,
always with a call to make (a saturated fleet). Two servers:

- *others*: one budget of 40/s on a 40/s account whose other clients get a
  share of every call throttled at random (5 %, 20 %);
- *overcommitted*: four budgets of 10/s on a 20/s account (a token bucket
  holding one second of calls), as `bench_processes.py` runs them for real.

Reported, over the last two thirds of 300 s: the rate the single budget
keeps (calls through a second, as a share of its ceiling), and the share of
the four budgets' calls throttled with the least and most any one of them
got through; for today's settings, for steeper climbs and gentler cuts (which
keep the rate under random throttles only by throttling the four budgets far
more), and for a budget told ``others_throttled``.

    .venv/bin/python benchmarks/bench_aimd_model.py
"""

from __future__ import annotations

import heapq
import random

from poller._limiter import AimdSettings, BudgetState, rate_at, succeeded, throttled

SECONDS = 300.0


def run(
    settings: list[AimdSettings], account_rps: float, others: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Calls through and calls throttled of each budget, in the last two thirds."""
    rng = random.Random(seed)
    states = [BudgetState.start(s) for s in settings]
    tokens, filled = account_rps, 0.0
    due = [(rng.uniform(0, 0.1), i) for i in range(len(settings))]
    heapq.heapify(due)
    through, refused = [0] * len(settings), [0] * len(settings)
    while due:
        now, i = heapq.heappop(due)
        if now > SECONDS:
            break
        tokens, filled = min(account_rps, tokens + (now - filled) * account_rps), now
        throttle = rng.random() < others or tokens < 1
        answered = now + 0.01
        if throttle:
            refused[i] += now > SECONDS / 3
            states[i] = throttled(settings[i], states[i], now, answered, None, 100)
        else:
            tokens -= 1
            through[i] += now > SECONDS / 3
            states[i] = succeeded(settings[i], states[i], answered)
        rate = rate_at(settings[i], states[i], answered)
        heapq.heappush(due, (max(now + 1.0 / rate, states[i].not_before), i))
    return through, refused


def main() -> None:
    window = SECONDS * 2 / 3
    rows = [
        ("today (increase 0.5, decrease 0.5)", {}),
        ("climb 8x as steep (increase 4)", {"increase": 4.0}),
        ("climb 8x, cut a tenth (decrease 0.9)", {"increase": 4.0, "decrease": 0.9}),
        ("today, told others_throttled 0.25", {"others_throttled": 0.25}),
    ]
    print(
        "| settings | 40/s budget, others 5 %: rate kept | others 20 % | "
        "four 10/s on 20/s: throttled | least, most through (calls/s) |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, kwargs in rows:
        kept = []
        for share in (0.05, 0.20):
            through, _ = run([AimdSettings(max_rps=40, **kwargs)], 40.0, share)
            kept.append(through[0] / window / 40)
        through, refused = run([AimdSettings(max_rps=10, **kwargs)] * 4, 20.0, 0.0)
        calls = sum(through) + sum(refused)
        share = sum(refused) / calls
        least, most = min(through) / window, max(through) / window
        print(f"| {name} | {kept[0]:.2f} | {kept[1]:.2f} | {share:.1%} | {least:.1f}, {most:.1f} |")


if __name__ == "__main__":
    main()
