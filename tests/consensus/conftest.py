"""The consensus tests import their helpers (consensus_testkit) as a plain module, whatever pytest's import mode."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
