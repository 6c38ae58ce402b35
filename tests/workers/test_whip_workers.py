"""WHIP ingest and WHEP playback with media in worker processes: tests/whip/test_whip.py's checks, run again on a
server whose one-way sessions are relayed to a worker (`Sfu.open_one_way` as one request, then handle/leave).
(The transcriber through a worker is test_worker_transcriber.py.)"""

from __future__ import annotations

import pytest

from tests.recorder.conftest import Studio
from tests.sfu.conftest import Classroom
from tests.whip import test_whip as whip
from tests.whip import test_whip_recorded as recorded


@pytest.fixture
def classroom(workers_room: Classroom) -> Classroom:
    return workers_room


@pytest.fixture
def studio(workers_studio: Studio) -> Studio:
    return workers_studio


test_whip_publishes_like_a_teacher_and_whep_plays_it = whip.test_whip_publishes_like_a_teacher_and_whep_plays_it
test_patch_trickles_and_refuses_ice_restart = whip.test_patch_trickles_and_refuses_ice_restart
test_ingest_is_gated_by_allow_ingress_role_and_token = whip.test_ingest_is_gated_by_allow_ingress_role_and_token
test_a_whip_session_ends_with_the_class = whip.test_a_whip_session_ends_with_the_class
test_a_whip_publisher_is_recorded_in_track_mode = recorded.test_a_whip_publisher_is_recorded_in_track_mode
