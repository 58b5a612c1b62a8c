#!/usr/bin/env python3
"""How precisely can the clock model's envelope estimator find a drift?

Stand-alone Monte Carlo of the estimator alone (no arbiter, no network
stack): forward one-way delays 5 ms ± 2 ms (uniform) plus 0–20 µs of
scheduling noise, the same for the backward direction, at a given ping rate
for T seconds. Each side's drift is the slope of the lower convex hull edge
over the mean time (the linear-programming skew estimator); the two are
averaged. Prints the median and p90 of |drift error| in ppm.

    python3 scripts/analysis/lp_drift_limit.py          # needs numpy

Used in docs/sync.md ("Drift under jitter") to show that 1 ppm after 10 s
under this jitter is out of reach at 1–100 Hz pings for this class of
estimator, not a shortcoming of the arbiter.
"""
import numpy as np

rng = np.random.default_rng(1)


def lower_hull_slope(t, y):
    hull = []
    for i in range(len(t)):
        while len(hull) >= 2:
            o, a = hull[-2], hull[-1]
            if (t[a] - t[o]) * (y[i] - y[o]) - (y[a] - y[o]) * (t[i] - t[o]) <= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    tm = t.mean()
    for a, b in zip(hull, hull[1:]):
        if t[a] <= tm <= t[b]:
            return (y[b] - y[a]) / (t[b] - t[a])
    return 0.0


def drift_error_ppm(seconds, rate_hz, jitter=2e-3, os_noise=20e-6):
    n = int(seconds * rate_hz)
    t = np.arange(n) / rate_hz
    fwd = rng.uniform(5e-3 - jitter, 5e-3 + jitter, n) + rng.uniform(0, os_noise, n)
    bwd = rng.uniform(5e-3 - jitter, 5e-3 + jitter, n) + rng.uniform(0, os_noise, n)
    # True drift 0: each side's hull slope is its error.
    return abs(0.5 * (lower_hull_slope(t, fwd) + lower_hull_slope(t, bwd))) * 1e6


for rate, seconds, trials in [(20, 10, 300), (20, 15, 300), (100, 10, 100), (100, 15, 100)]:
    e = [drift_error_ppm(seconds, rate) for _ in range(trials)]
    print(f"{rate:3d} Hz, {seconds:2d} s: |drift error| median {np.median(e):.2f} ppm, p90 {np.percentile(e, 90):.2f} ppm ({trials} trials)")
