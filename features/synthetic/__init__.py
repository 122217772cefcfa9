"""A synthetic subscription app, exported as Adjust delivers it, with the true churn probabilities.

from features.synthetic import SyntheticConfig, generate
summary = generate(SyntheticConfig(users=5000, seed=7, start=date(2026, 1, 5), days=120), out)
"""

from features.synthetic.generator import (
    GenerationError,
    GenerationSummary,
    SyntheticConfig,
    generate,
)

__all__ = ["GenerationError", "GenerationSummary", "SyntheticConfig", "generate"]
