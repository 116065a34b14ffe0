"""The LyCORIS library's logging, kept out of Kiln's output.

The library logs to stdout through its own handler at import. Kiln's commands print JSON or a
run folder as the last line of stdout, so the handler is removed; callers that want the
library's notes forward them to their own log (the trainer: ``train.log``).
"""

from __future__ import annotations

import logging

LOGGER_NAME = "LyCORIS"


def quiet_lycoris_log() -> logging.Logger:
    """Remove the library's stdout handler (call after importing it); returns its logger."""
    log = logging.getLogger(LOGGER_NAME)
    log.handlers.clear()
    log.propagate = False
    return log
