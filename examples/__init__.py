"""Worked examples of extending dnas-hw (see docs/extending.md); import them from the repository root."""
