"""pytest plugin (entry point pytest11): skip tests whose attention backend cannot run here."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "attention_backend(backend, **query): skip unless attncap says the backend can run the query")
