"""Sink processes seen from the control plane: the recorder (recorder/) and the live transcriber (transcriber/).

Each runs in its own process, started and restarted by a `SinkSupervisor`, and listens on a Unix socket in the
data dir. The control plane holds one connection (`FeedLink`: jobs, tracks, and the sink's events back); the
process that holds a room's tracks (the in-process SFU, or an SFU worker) sends the media itself (`FeedTap`'s
`address`): packets never cross the control plane on their way to a sink in another process.
"""
