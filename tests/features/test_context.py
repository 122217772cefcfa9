"""Context features: country, platform, network and install-cohort age."""

from __future__ import annotations

import pytest

from features import build_features
from features import context as ctx
from features import schema as s


def test_context_comes_from_install_and_subscription_rows(history, day):
    h = history.install("u", 2, platform=s.OS_ANDROID, network="Meta", country="br")
    h.sub("u", 3, "activation", expires=33, platform=s.OS_ANDROID, country="BR", network="Meta")
    h.add("u", 4, s.KIND_SESSION, s.KIND_SESSION, s.OS_ANDROID, country="US")  # travelling
    u = build_features(h.frame(), day(10)).loc[("u", s.OS_ANDROID)]
    assert u[ctx.COUNTRY] == "BR"
    assert u[ctx.NETWORK] == "Meta"
    assert u[ctx.APP_PLATFORM] == s.OS_ANDROID
    assert u[ctx.INSTALL_AGE] == pytest.approx(8.0)


def test_install_age_falls_back_to_the_first_subscription_event(history, day):
    h = history.sub("u", 3, "activation", expires=33)
    u = build_features(h.frame(), day(10)).loc[("u", "ios")]
    assert u[ctx.INSTALL_AGE] == pytest.approx(7.0)
    assert u[ctx.COUNTRY] != u[ctx.COUNTRY]  # NaN: nothing says where they are
