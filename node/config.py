"""Node configuration shared by the CLI commands."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_DIR = Path(os.environ.get("HYPERMESH_DATA_DIR", "~/.hypermesh")).expanduser()
DEFAULT_LISTEN = ["/ip6/::/udp/4001/quic-v1", "/ip4/0.0.0.0/udp/4001/quic-v1"]
