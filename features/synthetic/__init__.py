"""A synthetic subscription app, exported as Adjust delivers it, with the true churn probabilities.

from features.synthetic import SyntheticConfig, generate
summary = generate(SyntheticConfig(users=5000, seed=7, start=date(2026, 1, 5), days=120), out)
summary = generate(SyntheticConfig(shape="social", users=2000), out)   # another shape of app

The names are imported on first use, so ``SyntheticSettings`` and ``SHAPES`` (the settings'
section and presets) load without numpy or pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from base import lazy_names

if TYPE_CHECKING:
    from features.synthetic.generator import (
        GenerationError,
        GenerationSummary,
        SyntheticConfig,
        generate,
    )
    from features.synthetic.settings import SHAPES, AppEvent, SyntheticSettings

_HOMES = {
    "SHAPES": "features.synthetic.settings",
    "AppEvent": "features.synthetic.settings",
    "GenerationError": "features.synthetic.generator",
    "GenerationSummary": "features.synthetic.generator",
    "SyntheticConfig": "features.synthetic.generator",
    "SyntheticSettings": "features.synthetic.settings",
    "generate": "features.synthetic.generator",
}
__all__ = [
    "SHAPES",
    "AppEvent",
    "GenerationError",
    "GenerationSummary",
    "SyntheticConfig",
    "SyntheticSettings",
    "generate",
]


__getattr__ = lazy_names(__name__, _HOMES)
