"""Running the ``hypermesh`` command as a user would, from a working directory of the test's."""

import subprocess

from hypermesh.node.processes import hypermesh_command

TIMEOUT = 60


def hm(*args, cwd, check=True, timeout=TIMEOUT) -> subprocess.CompletedProcess:
    """``hypermesh ARGS`` in ``cwd``; with ``check``, a non-zero exit fails the test with its stderr."""
    result = subprocess.run(hypermesh_command(*map(str, args)), cwd=cwd, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"hypermesh {' '.join(map(str, args))}: {result.stderr}"
    return result
