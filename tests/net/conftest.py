"""Tests of reaching the server from other networks (issue 16): the TURN relay (real coturn) and namespaces."""

from tests.sfu.conftest import Classroom, classroom, extra_routes  # noqa: F401 - the fixtures are shared
