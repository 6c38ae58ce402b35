"""WHIP/WHEP tests run against the real server of tests/sfu (`classroom`) and, for recordings, tests/recorder's
(`studio`, with the recorder process)."""

from tests.recorder.conftest import studio  # noqa: F401 - the fixtures are shared
from tests.sfu.conftest import Classroom, classroom, extra_routes  # noqa: F401
