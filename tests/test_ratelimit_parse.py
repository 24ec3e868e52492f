"""The rate-limit header parser: every form registries send, table-driven (pure, no I/O)."""

from __future__ import annotations

import pytest

from occystrap.registry.ratelimit import Quota, parse, span

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "want"),
    [
        # Docker Hub, as it answers a manifest GET or HEAD.
        (
            {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600",
             "docker-ratelimit-source": "203.0.113.7"},
            Quota(76, 100, 21600, None, "203.0.113.7"),
        ),
        ({"RateLimit-Limit": "200;w=21600", "RateLimit-Remaining": "0;w=21600"}, Quota(0, 200, 21600)),
        # IETF draft, earlier revisions: a reset in seconds, the window in the policy.
        (
            {"RateLimit-Limit": "100", "RateLimit-Remaining": "76", "RateLimit-Reset": "3600",
             "RateLimit-Policy": "100;w=21600"},
            Quota(76, 100, 21600, 3600.0),
        ),
        ({"RateLimit-Remaining": "5", "RateLimit-Policy": "10;w=60"}, Quota(5, 10, 60)),
        # A limit that lists its policies: the first number is the limit in force.
        ({"RateLimit-Limit": "10, 10;w=1, 50;w=60", "RateLimit-Remaining": "9"}, Quota(9, 10, 1)),
        # Later revisions: one RateLimit header.
        ({"RateLimit": "limit=100, remaining=50, reset=5"}, Quota(50, 100, None, 5.0)),
        (
            {"RateLimit": '"default";r=50;t=30', "RateLimit-Policy": '"default";q=100;w=60'},
            Quota(50, 100, 60, 30.0),
        ),
        ({"RateLimit": '"burst";r=3', "RateLimit-Policy": '"day";q=1000;w=86400, "burst";q=5;w=1'},
         Quota(3, 5, 1)),
        # GitHub style: the reset is a Unix time.
        (
            {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59",
             "X-RateLimit-Reset": str(int(NOW) + 90)},
            Quota(59, 60, None, 90.0),
        ),
        # Only a remaining count is enough; nothing else says nothing.
        ({"ratelimit-remaining": "7"}, Quota(7)),
        ({"ratelimit-limit": "100;w=21600"}, None),
        ({"ratelimit-remaining": "many"}, None),
        ({"ratelimit-remaining": "-1"}, None),
        ({"RateLimit": "garbage"}, None),
        ({"Content-Type": "application/json"}, None),
        ({}, None),
    ],
)  # fmt: skip
def test_parse(headers: dict[str, str], want: Quota | None) -> None:
    assert parse(headers, now=NOW) == want


def test_a_reset_in_the_past_is_now() -> None:
    found = parse({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) - 10)}, now=NOW)
    assert found is not None and found.reset == 0.0


@pytest.mark.parametrize(
    ("quota", "described", "refill"),
    [
        (Quota(76, 100, 21600), "76 of 100 left, window 6h", "it refills within 6h (its window)"),
        (Quota(0, 100, None, 90.0), "0 of 100 left, refills in 1m30s", "it refills in 1m30s"),
        (Quota(3), "3 left", "the registry does not say when it refills"),
    ],
)
def test_describe(quota: Quota, described: str, refill: str) -> None:
    assert quota.describe() == described
    assert quota.refill() == refill


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (30, "30s"), (60, "1m"), (125, "2m05s"), (3600, "1h"), (5400, "1h30m"), (21600, "6h")],
)
def test_span(seconds: float, text: str) -> None:
    assert span(seconds) == text
