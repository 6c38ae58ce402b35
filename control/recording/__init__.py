"""The control plane's side of recordings that is not the job service itself (control/recordings.py): the options
a recording may ask for, the janitor that deletes expired files, reading a file's playable length, and the captions
written into a finished recording. The recorder process (recorder/) imports the options from here; nothing in
control/ imports recorder/: the control plane only starts it (control/sinks/supervisor.py) and talks to its socket.
"""
