"""WHIP/WHEP tests run against the real server of tests/sfu (the `classroom` fixture)."""

from tests.sfu.conftest import Classroom, classroom, extra_routes  # noqa: F401 - the fixtures are shared
