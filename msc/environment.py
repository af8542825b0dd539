"""The process environment the command-line programs run in: offline, without telemetry.

Set by each program's ``main()`` (never on import, so importing the library changes nothing): nothing is downloaded
at run time, the models load from local folders. A variable the user has set already is kept.
"""

from __future__ import annotations

import os
import sys

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def go_offline() -> None:
    """Set :data:`OFFLINE`'s variables where unset. ``huggingface_hub`` reads its own when imported, so when it has been
    imported already (by gradio) its module constants are set to match."""
    for name, value in OFFLINE.items():
        os.environ.setdefault(name, value)
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:
        hub.HF_HUB_OFFLINE = os.environ["HF_HUB_OFFLINE"].upper() in ("1", "ON", "YES", "TRUE")
        hub.HF_HUB_DISABLE_TELEMETRY = os.environ["HF_HUB_DISABLE_TELEMETRY"].upper() in ("1", "ON", "YES", "TRUE")
