"""The application: the `dnas-hw` command line, one module per command, and the pipeline, report and bench they run.

The top layer: it may import everything below it (the core in `dnas_hw/`, `lut`,
`profiler`, `search`), and nothing below imports it (tests/test_layers.py checks).
Kept light: `dnas_hw.app.cli` imports a command's module only when that command runs.
"""
