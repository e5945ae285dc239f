"""dnas-hw: hardware-aware differentiable architecture search for CTR models.

Kept light on purpose: importing the package does not import the CLI, the
profiler or the search.
"""

__version__ = "0.1.0"
