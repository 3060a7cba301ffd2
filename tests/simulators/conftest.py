"""The simulators are tested against a real gateway: the loopback fixtures of tests/server."""

from tests.server.conftest import gw, start_gateway  # noqa: F401 - fixtures, found by pytest by name
