"""What observes a test run; one module per concern, each usable alone.

- :mod:`.lifecycle`: test phases and fixtures (pytest hooks, the hot path).
- :mod:`.watchdog`: heartbeats and the worker's live activity (a background thread).
- :mod:`.stalls`: a phase past ``--monitor-stall`` -> every thread's stack (on the watchdog).
- :mod:`.stacks`: sampling threads, verdicts, user frames, faulthandler text.
- :mod:`.unresponsive`: workers frozen by native code (faulthandler armed in the worker,
  the hub's silence watcher).
"""
