"""Jobs: orchestration of the engine, storage, catalog (and later the cloud). No format knowledge here."""
