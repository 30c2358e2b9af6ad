"""Reports on recorded runs, without a terminal UI: the run list, the report model (the dict
`--format json` prints), its renderers, the diff of two runs and the exports (Perfetto,
JUnit)."""
