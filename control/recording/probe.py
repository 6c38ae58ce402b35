"""How long an MP4 plays, read from its packets (demuxing only, nothing is decoded).

Used on files whose writer could not say (a recorder killed mid-recording, a server restart): a fragmented MP4
cut short has no total duration in its header, so the last packet's end time is what counts.
"""

from __future__ import annotations

from pathlib import Path

import av


def playable_seconds(path: Path) -> float:
    """Seconds from the first to the end of the last packet; 0.0 when the file has no readable media."""
    try:
        with av.open(str(path)) as container:
            first, last = None, 0.0
            for packet in container.demux():
                if packet.pts is None or packet.time_base is None:
                    continue
                start = float(packet.pts * packet.time_base)
                end = start + float((packet.duration or 0) * packet.time_base)
                first = start if first is None else min(first, start)
                last = max(last, end)
            return round(last - first, 3) if first is not None else 0.0
    except (av.error.FFmpegError, OSError):
        return 0.0
