"""The differentiable architecture search: supernet, sampling, costs, budget, loop."""
