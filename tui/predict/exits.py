"""How long the workers take to exit after their last tests, sharing the CPUs.

A worker told to shut down tears its session down, exits and says goodbye to the
controller: CPU work of the same size on every worker. Workers that run out of tests at
different times exit one after the other, each at full speed; workers that run out
together (an evenly spread suite, more workers than CPUs) share the CPUs and take longer.
The profile measures a worker's exit by inverting that (:func:`exit_work`), the replay
recombines it for another ``-n`` (:func:`exits_end`).
"""

from __future__ import annotations


def exits_end(starts: list[float], work: float, cpus: int) -> float:
    """When the last worker's exit ends: each starts at its ``starts`` and needs ``work``
    seconds of a CPU (session teardown, the process's exit, execnet's goodbye); exits at
    the same time share the ``cpus`` evenly (0: as many CPUs as exits). Workers that run
    out of tests early have exited before the last one does: only overlapping exits
    slow each other down."""
    if not starts:
        return 0.0
    if work <= 0.0 or cpus <= 0:
        return max(starts) + max(0.0, work)
    arrivals = sorted(starts)
    t = arrivals[0]
    left: list[float] = []
    i = 0
    while i < len(arrivals) or left:
        if not left:
            t = max(t, arrivals[i])
        while i < len(arrivals) and arrivals[i] <= t:
            left.append(work)
            i += 1
        rate = min(1.0, cpus / len(left))
        step = min(left) / rate
        if i < len(arrivals):
            step = min(step, arrivals[i] - t)
        t += step
        left = [x - step * rate for x in left if x - step * rate > 1e-9]
    return t


def exit_work(ends: list[float], finish: float, cpus: int) -> float:
    """The ``work`` of :func:`exits_end` that makes the last exit end ``finish`` seconds
    after the last test, as recorded (the inverse, by bisection: the end grows with it)."""
    if not ends or finish <= 0.0:
        return max(0.0, finish)
    last = max(ends)
    low, high = 0.0, finish
    for _ in range(40):
        mid = (low + high) / 2
        if exits_end(ends, mid, cpus) - last < finish:
            low = mid
        else:
            high = mid
    return (low + high) / 2
