"""Measuring: per-op timers per backend and device, the keys a space needs, running and resuming a profile."""
