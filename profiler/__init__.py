"""All measuring: per-op timers per backend and device, whole-model runners, the serving allocator,
the machine's facts, the keys a space needs, running and resuming a profile, the in-model fit, and
validating a LUT against whole models."""
