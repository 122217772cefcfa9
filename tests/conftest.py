"""Suite-wide settings: hypothesis without its wall-clock deadline (a loaded shared machine
would fail an example for being slow, not wrong)."""

from hypothesis import settings

settings.register_profile("lapse", deadline=None)
settings.load_profile("lapse")
