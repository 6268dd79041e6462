"""Shared test settings."""

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

# CI runs on 2 cores beside other tests: keep examples bounded and deadlines off.
settings.register_profile(
    "hypermesh", max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "200")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("hypermesh")

# Helpers shared by tests of several layers (tests/*_testkit.py) import as plain modules.
sys.path.insert(0, str(Path(__file__).parent))
