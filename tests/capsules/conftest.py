"""Fixtures for the capsule tests.

Compiled code and componentize-py builds are cached across tests (and
xdist workers) under pytest's cache directory: compiling the Python guest
takes seconds, loading it from the cache tens of milliseconds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The tests import their helpers as a plain module, whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).parent))

from capsule_testkit import BUILDER, copy_example
from hypermesh.capsules.build import build_capsule
from hypermesh.capsules.engine import CapsuleEngine
from hypermesh.capsules.receipt import sign_capsule
from hypermesh.capsules.runtime import CapsuleRuntime
from hypermesh.capsules.trust import TrustPolicy


@pytest.fixture(scope="session")
def shared_cache(request) -> Path:
    return Path(request.config.cache.mkdir("hypermesh-capsules"))


@pytest.fixture(scope="session", autouse=True)
def build_cache(shared_cache):
    previous = os.environ.get("HYPERMESH_BUILD_CACHE")
    os.environ["HYPERMESH_BUILD_CACHE"] = str(shared_cache / "builds")
    yield
    if previous is None:
        os.environ.pop("HYPERMESH_BUILD_CACHE", None)
    else:
        os.environ["HYPERMESH_BUILD_CACHE"] = previous


@pytest.fixture(scope="session")
def engine(shared_cache):
    engine = CapsuleEngine(shared_cache / "artifacts")
    yield engine
    engine.close()


@pytest.fixture
def policy() -> TrustPolicy:
    policy = TrustPolicy()
    policy.trust(BUILDER.peer_id)
    return policy


@pytest.fixture
def runtime(tmp_path, engine, policy):
    runtime = CapsuleRuntime(tmp_path / "node", identity=BUILDER, policy=policy, engine=engine)
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def python_capsule(tmp_path_factory, build_cache) -> Path:
    """The hello-python example, built (cached) and signed, in a session directory."""
    directory = copy_example("hello-python", tmp_path_factory.mktemp("python-guest"))
    build_capsule(directory)
    sign_capsule(directory, BUILDER)
    return directory
