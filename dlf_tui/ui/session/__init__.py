"""Where the dashboard's data comes from: ``base`` (the session the UI reads),
``live`` (a running engine's socket), ``disk`` (the run directory, read-only),
``member`` (sweep members without a socket, polled from disk) and ``pump``
(which of them follows a session)."""
