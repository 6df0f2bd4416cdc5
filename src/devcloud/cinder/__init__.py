"""Real Cinder for the dev cloud: API, scheduler and volume service in one process.

``launch.start(ctx)`` writes ``cinder.conf`` under ``<state>/cinder``, syncs the database and starts
the process (``server.py``) that runs the three services together, because oslo.messaging's
in-memory ``fake:/`` transport only carries messages within one process. ``driver.py`` is the
volume driver: volumes and snapshots are sparse raw files, attached through os-brick's ``local``
connector, so whoever attaches a volume (emulated Nova, the backup proxy) gets a plain file path.
"""
