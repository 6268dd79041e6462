"""Building capsule code from source, and scaffolding new capsules.

Source layout (everything outside manifest.json, spec/ and impl/ is ignored
by admission and never shipped)::

    NAME/manifest.json     what the capsule is (see docs/CAPSULES.md)
    NAME/spec/             its human- and machine-readable specification
    NAME/src/NAME.wat      core module source             (--lang wat)
    NAME/src/app.py        component source, Python       (--lang python)
    NAME/src/app.js        component source, JavaScript   (--lang js)
    NAME/impl/NAME.wasm    build output, named by manifest "impl"

Component builds generate ``src/wit/`` from the shipped hypermesh:capsule
package plus a ``capsule`` world importing exactly the interfaces the
manifest requires. componentize-py takes seconds, so its output is cached
under ``$HYPERMESH_BUILD_CACHE`` (default ``~/.cache/hypermesh/builds``),
keyed by the hash of everything that determines it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import wasmtime

from .errors import BuildError, FormatError
from .host import WIT_PACKAGE, WIT_VERSION
from .manifest import KIND_COMPONENT, parse_manifest
from .schema import parse_json
from .storage import atomic_write

BUILD_TIMEOUT_S = 300
LANGUAGES = ("wat", "python", "js")


def shipped_wit() -> str:
    return resources.files(__package__).joinpath("wit", "capsule.wit").read_text("utf-8")


def world_wit(requires: frozenset[str] | set[str], bulk: bool) -> str:
    """The `capsule` world for a component that needs exactly ``requires``."""
    lines = [f"package {WIT_PACKAGE}@{WIT_VERSION};", "", "world capsule {",
             f"  include {'bulk-handler' if bulk else 'handler'};"]
    lines += [f"  import {capability};" for capability in sorted(requires)]
    lines += ["}", ""]
    return "\n".join(lines)


def build_cache_dir() -> Path:
    configured = os.environ.get("HYPERMESH_BUILD_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "hypermesh" / "builds"


def _read_manifest_for_build(directory: Path):
    path = directory / "manifest.json"
    if not path.is_file():
        raise BuildError(f"{path} is missing: is {directory} a capsule source directory?")
    try:
        return parse_manifest(path.read_bytes())
    except FormatError as exc:
        raise BuildError(str(exc)) from None


def build_capsule(directory: Path) -> Path:
    """Compile the capsule's source into the file named by manifest ``impl``; returns that path."""
    directory = Path(directory).resolve()
    manifest = _read_manifest_for_build(directory)
    output = directory / manifest.impl
    src = directory / "src"
    if manifest.kind == KIND_COMPONENT:
        if (src / "app.py").is_file():
            code = _build_python(src, manifest.requires)
        elif (src / "app.js").is_file():
            code = _build_js(src, manifest.requires)
        else:
            raise BuildError(f"{src} has neither app.py nor app.js for a component capsule")
    else:
        wat = src / (Path(manifest.impl).stem + ".wat")
        if not wat.is_file():
            raise BuildError(f"{wat} is missing (a module capsule builds impl/X.wasm from src/X.wat)")
        try:
            code = wasmtime.wat2wasm(wat.read_text("utf-8"))
        except wasmtime.WasmtimeError as exc:
            raise BuildError(f"{wat}: {str(exc).strip()}") from None
    atomic_write(output, bytes(code))
    return output


def _write_wit(src: Path, requires: frozenset[str], bulk: bool) -> tuple[Path, str]:
    wit_dir = src / "wit"
    wit_dir.mkdir(exist_ok=True)
    package, world = shipped_wit(), world_wit(requires, bulk)
    (wit_dir / "capsule.wit").write_text(package, "utf-8")
    (wit_dir / "world.wit").write_text(world, "utf-8")
    return wit_dir, package + world


def _componentize_py_version() -> str:
    from importlib.metadata import version

    return version("componentize-py")


def _build_python(src: Path, requires: frozenset[str]) -> bytes:
    wit_dir, wit_text = _write_wit(src, requires, bulk=True)
    sources = sorted(p for p in src.rglob("*.py") if "wit" not in p.relative_to(src).parts[:1])
    guest_dir = Path(str(resources.files(__package__).joinpath("guest")))
    key = hashlib.sha256(f"componentize-py {_componentize_py_version()}\n{wit_text}".encode())
    inputs = [(f"src/{path.relative_to(src)}", path) for path in sources]
    inputs += [(f"guest/{path.name}", path) for path in sorted(guest_dir.glob("*.py"))]
    for name, path in inputs:
        key.update(name.encode() + b"\0" + path.read_bytes())
    cached = build_cache_dir() / f"{key.hexdigest()}.wasm"
    if cached.is_file():
        return cached.read_bytes()
    out = src / ".build.wasm"
    command = [sys.executable, "-c", "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
               "-d", str(wit_dir), "-w", "capsule", "componentize", "-p", str(src), "-p", str(guest_dir), "app", "-o", str(out)]
    _run(command, src, "componentize-py")
    code = out.read_bytes()
    out.unlink()
    atomic_write(cached, code)
    return code


# The jco / componentize-js releases the JS scaffold is built and tested with (`make js-setup`).
JS_TOOLS = "@bytecodealliance/jco@1.15.4 @bytecodealliance/componentize-js@0.18.5"


def _find_jco(src: Path) -> str:
    local = src / "node_modules" / ".bin" / "jco"
    jco = shutil.which("jco") or (str(local) if local.exists() else None)
    if jco is None:
        raise BuildError(f"jco is not installed: run `npm install {JS_TOOLS}` in {src}")
    return jco


def _build_js(src: Path, requires: frozenset[str]) -> bytes:
    _, wit_text = _write_wit(src, requires, bulk=False)
    jco = _find_jco(src)
    try:
        version = subprocess.run([jco, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"jco does not run: {exc}") from None
    key = hashlib.sha256(f"jco {version} --disable all\n{wit_text}".encode() + (src / "app.js").read_bytes())
    cached = build_cache_dir() / f"{key.hexdigest()}.wasm"
    if cached.is_file():
        return cached.read_bytes()
    out = src / ".build.wasm"
    # Relative paths: jco reads the WIT through a WASI sandbox rooted at its working directory.
    # `--disable all` drops the WASI worlds (clocks, random, stdio, http) jco adds by default:
    # the component imports only the capsule interfaces its manifest requires.
    _run([jco, "componentize", "app.js", "--wit", "wit", "--world-name", "capsule", "--disable", "all",
          "-o", out.name], src, "jco")
    code = out.read_bytes()
    out.unlink()
    atomic_write(cached, code)
    return code


def _run(command: list[str], cwd: Path, tool: str) -> None:
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except FileNotFoundError:
        raise BuildError(f"{tool} is not installed") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{tool} took longer than {BUILD_TIMEOUT_S} s") from None
    if result.returncode != 0:
        # Skip backtrace frames ("  12: symbol", "at file:line"): the cause is above them.
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        causes = [line for line in lines if not line[0].isdigit() and not line.startswith("at ")]
        raise BuildError(f"{tool} failed: {causes[0] if causes else 'exit status ' + str(result.returncode)}")


def scaffold(parent: Path, name: str, lang: str) -> Path:
    """Create a new capsule source directory ``parent/NAME`` from the shipped templates."""
    if lang not in LANGUAGES:
        raise BuildError(f"unknown language {lang!r}; choose one of {', '.join(LANGUAGES)}")
    directory = Path(parent) / name.split(".")[-1]
    if directory.exists():
        raise BuildError(f"{directory} already exists")
    template = resources.files(__package__).joinpath("examples", f"template-{lang}")
    manifest = parse_json(template.joinpath("manifest.json").read_bytes(), "template manifest", 1 << 20)
    manifest["name"] = name
    try:
        parse_manifest(json.dumps(manifest).encode())
    except FormatError as exc:
        raise BuildError(f"invalid capsule name {name!r}: {exc}") from None
    directory.mkdir(parents=True)
    _copy_tree(template, directory)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    (directory / "impl").mkdir(exist_ok=True)
    return directory


def _copy_tree(source, target: Path) -> None:
    for entry in source.iterdir():
        if entry.is_dir():
            (target / entry.name).mkdir(exist_ok=True)
            _copy_tree(entry, target / entry.name)
        else:
            (target / entry.name).write_bytes(entry.read_bytes())
