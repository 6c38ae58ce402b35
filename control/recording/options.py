"""What a recording may ask for (reference 2.6 `options`): the composite layouts and the output presets.

One home for both sides: the REST model (control/api/models.py) validates against these names, and the recorder
process (recorder/layout.py, recorder/mux.py) draws and encodes by them.
"""

from __future__ import annotations

PRESETS = {"H264_720P_30": (1280, 720), "H264_1080P_30": (1920, 1080)}  # name -> (width, height)
LAYOUTS = ("grid", "speaker")
