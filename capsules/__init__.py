"""HyperMesh capsules: signed, content-addressed WebAssembly that a node runs for others.

Start with :class:`hypermesh.capsules.runtime.CapsuleRuntime`; docs/CAPSULES.md
is the reference. Modules:

- ``layout``, ``schema``, ``manifest``, ``receipt``, ``cid``: the capsule format;
- ``trust``, ``admission``: who may run what, and the checks before anything runs;
- ``engine``, ``sandbox``, ``corecall``, ``component_bytes``, ``component_stdio``, ``host``, ``kvstore``: execution;
- ``remote``, ``remote_limits``, ``run_wire``: running capsules for peers;
- ``lifecycle``, ``runtime``, ``execution``: states, hot swap, call receipts;
- ``chunks``: the local chunk store that distribution builds on;
- ``build``, ``cli``: scaffolding, building and the ``hypermesh capsule`` commands.
"""
