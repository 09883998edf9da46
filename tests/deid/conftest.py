"""Fixtures of the de-identification tests (helpers live in helpers.py)."""

from .helpers import cfg, engine, rules  # noqa: F401 - pytest fixtures
