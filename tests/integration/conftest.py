"""Fixtures of the integration tests: a private Bond deployment per test."""

from tests.integration.pipeline import deployment

__all__ = ["deployment"]
