"""Transport benchmark: our QUIC transport against py-libp2p and plain trio TCP.

    .venv/bin/python bench/transport.py [--quick]

Runs everything in one go on loopback and prints ONE JSON object on stdout:
for our transport over [::1] and 127.0.0.1 — full connect (handshake + first
negotiated stream) p50/p99, resumed connect p50, resumed dial to the first
ping answer with the ping in 0-RTT early data, dial to the first DHT
FIND_NODE answer (full, and resumed with the FIND_NODE in 0-RTT), ping RTT p50/p99 on an open
connection, bulk throughput on one stream and on 8 parallel streams, and
1,000 concurrent connections held by one node (setup time, RSS); where it
runs as root, one-stream perf download and upload across two network
namespaces joined by a veth pair at MTU 1500 and 1280, with both processes'
CPU time (``namespace_pairs``; ``--skip-namespaces`` leaves it out); where
Node.js is, a js-libp2p client (quinn, installed into .js-libp2p by npm on
first use) downloading on one stream from us and from a js-libp2p server,
alternated (``js_libp2p``; ``--skip-js``) — then the
same figures for py-libp2p (QUIC and TCP, bench/baselines/pylibp2p_transport.py
in the interop venv) and plain trio TCP (bench/baselines/trio_tcp.py), with
the same sample sizes for every implementation; a ``figures`` list that
sets each baseline figure against ours and says what it measures (the
py-libp2p connect ratio both with its stock 250 ms dial delay and without
it; py-libp2p TCP and plain trio TCP); and a ``checks`` list with every
target of the transport issue (the connect ratio on the like-for-like
figure only).

The server is always a separate ``hypermesh run`` process, as for the
baselines, so both sides of every figure pay real process boundaries.

``--first-answers-only`` measures only the dial-to-first-answer figures (ping
and FIND_NODE, full and resumed in 0-RTT) over [::1], with the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
import tempfile

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import INTEROP_PY, check, get, machine, run_json, summary  # noqa: E402

from hypermesh.dht.messages import MAX_MESSAGE_SIZE, KadMessage, MessageType, encode_message  # noqa: E402
from hypermesh.dht.messages import PROTOCOL_ID as KAD_PROTOCOL  # noqa: E402
from hypermesh.node.processes import hypermesh_command, read_line, start_node  # noqa: E402
from hypermesh.transport import perf, ping  # noqa: E402
from hypermesh.transport.errors import TransportError  # noqa: E402
from hypermesh.transport.framing import BufferedReader, write_frame  # noqa: E402
from hypermesh.transport.host import HostConfig, open_host  # noqa: E402
from hypermesh.transport.identity import Identity  # noqa: E402
from hypermesh.transport.multiaddrs import parse_quic_address  # noqa: E402

MB = 1e6


def summary_s(samples_s: list[float]) -> dict | None:
    return summary([sample * 1000 for sample in samples_s])


async def measure_connects(addr: str, count: int, resumption: bool) -> list[float]:
    """Dial, negotiate the first stream (ping) and answer one ping; then close."""
    target = parse_quic_address(addr)
    samples = []
    async with open_host(Identity.generate(), config=HostConfig(enable_resumption=resumption)) as client:
        for index in range(count + 1):
            started = trio.current_time()
            driver = await client.connect(target)
            stream = await client.open_stream_on(driver, [ping.PROTOCOL])
            await ping.Pinger(stream).ping()
            elapsed = trio.current_time() - started
            if index or not resumption:  # with resumption, the first dial earns the ticket
                samples.append(elapsed)
            await stream.aclose()
            await driver.aclose()
    return samples[-count:]


async def ask_ping(client, peer_id):
    stream = await client.new_stream(peer_id, [ping.PROTOCOL])
    await ping.Pinger(stream).ping()
    return stream


async def ask_find_node(client, peer_id):
    stream = await client.new_stream(peer_id, [KAD_PROTOCOL], replay_safe=True)  # a read: replay-safe
    await write_frame(stream, encode_message(KadMessage(MessageType.FIND_NODE, key=peer_id.multihash)))
    if await BufferedReader(stream).read_frame(MAX_MESSAGE_SIZE) is None:
        raise TransportError("the server ended the FIND_NODE stream without answering")
    return stream


async def measure_first_answers(addr: str, count: int, ask, resumption: bool = True) -> list[float]:
    """Dial (no connection open) to the first answer of ``ask(client, peer_id)``.

    With ``resumption``, every dial but the first resumes a ticket and the
    replay-safe request rides in 0-RTT early data; without, each is a full
    handshake, then the request. A sample that did not dial (the server's
    DHT, asked by a peer it has not identified yet, probes it back: that
    connection, if it comes in between, is reused) is not counted.
    """
    target = parse_quic_address(addr)
    samples = []
    async with open_host(Identity.generate(), config=HostConfig(enable_resumption=resumption)) as client:
        client.peerstore.add_addrs(target.peer_id, [addr])
        for _ in range(2 * count + 1):
            if len(samples) == count:
                break
            for driver in client.connections_to(target.peer_id):
                await driver.aclose()
            started = trio.current_time()
            stream = await ask(client, target.peer_id)
            elapsed = trio.current_time() - started
            connection = stream.connection
            dialled = connection.is_client and connection.opened_at >= started
            # With resumption, only resumed dials count (the first earns the ticket).
            if dialled and (connection.resumed or not resumption):
                samples.append(elapsed)
            await stream.aclose()
            if resumption and dialled:
                # The server's session ticket comes after the handshake; closing
                # before it arrives would leave the next dial without one (the
                # ticket just used is single-use) and measure a full handshake
                # (which is then not counted).
                with trio.move_on_after(5):
                    await connection.session_ticket_received.wait()
            await connection.aclose()
    return samples


async def measure_first_answer_figures(addr: str, count: int) -> dict:
    return {
        "resumed_first_ping_early_data_ms": summary_s(await measure_first_answers(addr, count, ask_ping)),
        "first_find_node_ms": summary_s(await measure_first_answers(addr, count, ask_find_node, resumption=False)),
        "resumed_first_find_node_early_data_ms": summary_s(await measure_first_answers(addr, count, ask_find_node)),
    }


async def measure_pings(addr: str, count: int) -> list[float]:
    target = parse_quic_address(addr)
    async with open_host(Identity.generate()) as client:
        await client.connect(target)
        pinger = ping.Pinger(await client.new_stream(target.peer_id, [ping.PROTOCOL]))
        for _ in range(min(50, count)):  # warm up
            await pinger.ping()
        samples = [await pinger.ping() for _ in range(count)]
        await pinger.aclose()
    return samples


async def measure_bulk(addr: str, total_bytes: int, streams: int, download: bool = False) -> dict:
    """perf over ``streams`` parallel streams: an upload, or with ``download`` the server sends."""
    target = parse_quic_address(addr)
    async with open_host(Identity.generate()) as client:
        driver = await client.connect(target)
        # Let the datagram-size probes finish, as on any long-lived connection.
        await driver.probing_done.wait()
        per_stream = total_bytes // streams
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(streams):
                async def one():
                    stream = await client.open_stream_on(driver, [perf.PROTOCOL])
                    await perf.run_perf(stream, *((0, per_stream) if download else (per_stream, 0)))
                nursery.start_soon(one)
        seconds = trio.current_time() - started
        datagram_size = driver.quic.max_datagram_size
    moved = per_stream * streams
    return {"bytes": moved, "seconds": round(seconds, 4), "mb_per_s": round(moved / seconds / MB, 2),
            "streams": streams, "direction": "download" if download else "upload", "datagram_size": datagram_size}


def sample_sizes(quick: bool) -> dict:
    """How many samples every implementation takes: the same for ours and the baselines."""
    return {"connects": 20, "pings": 200, "bulk_mb": 20} if quick else {"connects": 100, "pings": 2000, "bulk_mb": 200}


async def measure_family(addr: str, sizes: dict) -> dict:
    connects, pings, bulk = sizes["connects"], sizes["pings"], int(sizes["bulk_mb"] * MB)
    return {
        "addr": addr,
        "connect_ms": summary_s(await measure_connects(addr, connects, resumption=False)),
        "resumed_connect_ms": summary_s(await measure_connects(addr, connects, resumption=True)),
        **await measure_first_answer_figures(addr, connects),
        "ping_rtt_ms": summary_s(await measure_pings(addr, pings)),
        "bulk_1stream": await measure_bulk(addr, bulk, 1),
        "bulk_8streams": await measure_bulk(addr, bulk, 8),
    }


# -- many connections ---------------------------------------------------------------


# Dials one worker runs at once. Its clients are real hosts sharing one
# process, each handshake costing it milliseconds of Python: hundreds at once
# would make every one of them late (past its dial timeout, or past the
# lifetime of the server's Retry token). The server still sees a burst.
CONCURRENT_DIALS = 32
# A client whose dial fails dials again, as any client would.
DIAL_ATTEMPTS = 3


async def hold_connections(addr: str, count: int) -> None:
    """Worker: ``count`` hosts, each with its own identity, connect and hold;
    prints how many are held and how many dials failed.

    They do not busy-poll: hundreds of spinning endpoints in one process
    would starve each other.
    """
    target = parse_quic_address(addr)
    config = HostConfig(probe_datagram_size=False, busy_poll_seconds=0)
    dial_slots = trio.Semaphore(CONCURRENT_DIALS)
    tally = {"held": 0, "failed_dials": 0, "errors": {}}
    settled = 0
    all_settled = trio.Event()

    async def one_host():
        nonlocal settled
        async with open_host(Identity.generate(), config=config) as host:
            for _ in range(DIAL_ATTEMPTS):
                try:
                    async with dial_slots:
                        await host.connect(target)
                except TransportError as exc:
                    tally["failed_dials"] += 1
                    kind = str(exc).rsplit(": ", 1)[-1]  # the reason, without the peer's ID and address
                    tally["errors"][kind] = tally["errors"].get(kind, 0) + 1
                    continue
                tally["held"] += 1
                break
            settled += 1
            if settled == count:
                all_settled.set()
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one_host)
        await all_settled.wait()
        print(json.dumps(tally), flush=True)
        # Hold until the parent closes our stdin.
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def measure_many_connections(server, count: int, workers: int = 2) -> dict:
    addr = server.addr("/ip6/")
    rss_before = rss_mb(server.process.pid)
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--hold-connections", addr, str(count // workers)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        for _ in range(workers)
    ]
    held = failed_dials = 0
    errors: dict = {}
    try:
        for process in processes:
            line = process.stdout.readline()  # bounded by the workers' own dial timeouts
            if line.strip():
                tally = json.loads(line)
                held += tally["held"]
                failed_dials += tally["failed_dials"]
                for kind, number in tally["errors"].items():
                    errors[kind] = errors.get(kind, 0) + number
        clients_ready_seconds = time.monotonic() - started
        # A client is ready once it has the server's handshake flight; the
        # server is done once it has every client's Finished: wait for that.
        peers = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            peers = json.loads(subprocess.run(
                [sys.executable, "-m", "hypermesh.node.cli", "peers", "--json", "--data-dir", str(server.data_dir)],
                capture_output=True, text=True, timeout=60).stdout or '{"peers": []}')["peers"]
            if len(peers) >= held:
                break
            time.sleep(0.5)
        setup_seconds = time.monotonic() - started
        rss_after = rss_mb(server.process.pid)
    finally:
        for process in processes:
            process.stdin.close()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    return {
        "connections": count, "held_by_clients": held, "server_sees_peers": len(peers),
        "concurrent_dials_per_worker": CONCURRENT_DIALS, "failed_dials": failed_dials, "dial_errors": errors,
        "clients_ready_seconds": round(clients_ready_seconds, 3),
        "setup_seconds": round(setup_seconds, 3), "server_rss_mb_before": rss_before,
        "server_rss_mb_after": rss_after,
        "rss_kb_per_connection": round((rss_after - rss_before) * 1024 / max(1, len(peers)), 1),
    }


# -- across a real MTU: two network namespaces joined by a veth pair --------------


# Link MTUs of the namespace pair: Ethernet, and IPv6's minimum.
NAMESPACE_MTUS = (1500, 1280)
SERVER_NS_ADDR, CLIENT_NS_ADDR = "fd77:6d74::1", "fd77:6d74::2"


def namespace_pair_unavailable() -> str | None:
    """Why the namespace pair cannot be set up here, or None if it can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "no ip command (iproute2)"
    return None


class NamespaceSetupError(RuntimeError):
    """The namespace pair could not be set up (e.g. no permission in a container)."""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@contextlib.contextmanager
def namespace_pair(mtu: int):
    """Two fresh network namespaces (server, client) joined by a veth pair
    with link MTU ``mtu``, IPv6 only; both are deleted on exit (with the veth)."""
    tag = f"hmtx{os.getpid()}m{mtu}"
    names = (tag + "s", tag + "c")
    created = []
    try:
        try:
            for name in names:
                _ip("netns", "add", name)
                created.append(name)
            # Created inside the namespaces: nothing appears on the host's links.
            _ip("link", "add", "hmtx0", "mtu", str(mtu), "netns", names[0], "type", "veth",
                "peer", "name", "hmtx1", "mtu", str(mtu), "netns", names[1])
            for name, device, address in ((names[0], "hmtx0", SERVER_NS_ADDR), (names[1], "hmtx1", CLIENT_NS_ADDR)):
                _ip("-n", name, "addr", "add", f"{address}/64", "dev", device, "nodad")
                _ip("-n", name, "link", "set", device, "up")
                _ip("-n", name, "link", "set", "lo", "up")
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            raise NamespaceSetupError(str(exc)) from None
        yield names
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def measure_namespace_pair(mtu: int, total_bytes: int, data_dir: Path) -> dict:
    """One-stream perf download and upload between a ``hypermesh run`` in one
    namespace and the bench's client in the other, over a veth at ``mtu``."""
    with namespace_pair(mtu) as (server_ns, client_ns):
        args = ["run", "--data-dir", str(data_dir), "--json", "--perf",
                "--listen", f"/ip6/{SERVER_NS_ADDR}/udp/0/quic-v1"]
        server = subprocess.Popen(["ip", "netns", "exec", server_ns, *hypermesh_command(*args)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            info = json.loads(read_line(server.stdout, time.monotonic() + 60))
            addr = next(addr for addr in info["addrs"] if addr.startswith(f"/ip6/{SERVER_NS_ADDR}/"))
            client = run_json(["ip", "netns", "exec", client_ns, sys.executable, __file__,
                               "--bulk-client", addr, str(total_bytes), str(server.pid)], timeout=600)
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return {"link_mtu": mtu, **client}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bulk_client(addr: str, total_bytes: int, server_pid: int) -> None:
    """Worker inside the client namespace: one-stream download, then upload,
    each with the CPU time both processes spent (less sensitive to other
    load on the machine than the wall-clock rate)."""
    result = {}
    for direction in ("download", "upload"):
        server_before, client_before = cpu_seconds(server_pid), time.process_time()
        figures = await measure_bulk(addr, total_bytes, 1, download=direction == "download")
        server_cpu, client_cpu = cpu_seconds(server_pid) - server_before, time.process_time() - client_before
        result[direction] = {**figures, "server_cpu_s": round(server_cpu, 3), "client_cpu_s": round(client_cpu, 3)}
    print(json.dumps(result), flush=True)


def measure_namespace_pairs(total_bytes: int, tmp: Path) -> dict:
    reason = namespace_pair_unavailable()
    if reason is not None:
        return {"skipped": reason}
    results = {}
    for mtu in NAMESPACE_MTUS:
        try:
            results[f"mtu_{mtu}"] = measure_namespace_pair(mtu, total_bytes, tmp / f"netns-{mtu}")
        except NamespaceSetupError as exc:
            return {"skipped": f"cannot set up network namespaces here: {exc}"}
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
            results[f"mtu_{mtu}"] = {"error": str(exc)}
    return results


# -- a js-libp2p (quinn) client: from us and from a js-libp2p server -------------------

# js-libp2p and its QUIC transport (quinn, 1,452-byte datagrams at most), installed by
# the bench on first use; the issue's own measurement used these releases.
JS_LIBP2P_DIR = REPO / ".js-libp2p"
JS_LIBP2P_PACKAGES = ["libp2p@3.3.11", "@chainsafe/libp2p-quic@2.1.1", "@multiformats/multiaddr@13.0.3"]
JS_PERF_SCRIPT = REPO / "bench/baselines/js_libp2p_perf.mjs"


def js_libp2p_unavailable() -> str | None:
    """Why the js-libp2p comparison cannot run here, after installing it if needed; None if it can."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "Node.js (node and npm) not found"
    marker = JS_LIBP2P_DIR / ".installed"
    if not marker.exists():
        print("bench: installing js-libp2p with npm for the js-libp2p comparison", file=sys.stderr)
        result = subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix",
                                 str(JS_LIBP2P_DIR), *JS_LIBP2P_PACKAGES], capture_output=True, text=True,
                                timeout=600, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            return f"npm install failed: {result.stderr.strip()[-300:]}"
        marker.touch()
    # ES modules resolve packages from the script's own directory upwards.
    shutil.copy(JS_PERF_SCRIPT, JS_LIBP2P_DIR / JS_PERF_SCRIPT.name)
    return None


def js_perf_download(addr: str, total_bytes: int) -> dict:
    return run_json(["node", str(JS_LIBP2P_DIR / JS_PERF_SCRIPT.name), "client", addr, str(total_bytes)], 600)


def measure_js_libp2p(total_bytes: int, rounds: int, tmp: Path) -> dict:
    """A js-libp2p client downloading ``total_bytes`` on one stream from a ``hypermesh run``
    and from a js-libp2p server, both on 127.0.0.1, alternated ``rounds`` times so that
    load on the machine falls on both alike; the server's CPU time beside each."""
    reason = js_libp2p_unavailable()
    if reason is not None:
        return {"skipped": reason}
    js_server = subprocess.Popen(["node", str(JS_LIBP2P_DIR / JS_PERF_SCRIPT.name), "server"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    samples: dict[str, list[dict]] = {"from_hypermesh": [], "from_js_libp2p": []}
    try:
        js_addr = json.loads(read_line(js_server.stdout, time.monotonic() + 60))["addr"]
        with start_node(tmp / "js-peer", ["/ip4/127.0.0.1/udp/0/quic-v1"], extra=["--perf"]) as server:
            ours = server.addr("/ip4/")
            for _ in range(rounds):
                for key, addr, pid in (("from_hypermesh", ours, server.process.pid),
                                       ("from_js_libp2p", js_addr, js_server.pid)):
                    before = cpu_seconds(pid)
                    result = js_perf_download(addr, total_bytes)
                    samples[key].append({**result, "server_cpu_s": round(cpu_seconds(pid) - before, 3)})
    finally:
        js_server.terminate()
        js_server.wait(30)
    report: dict = {"client": "js-libp2p 3.3.11, @chainsafe/libp2p-quic 2.1.1 (quinn)", "bytes": total_bytes,
                    "rounds": rounds, "samples": samples}
    for key, runs in samples.items():
        rates = sorted(run["mb_per_s"] for run in runs if "mb_per_s" in run)
        errors = [run["error"] for run in runs if "error" in run]
        report[key] = {"median_mb_per_s": round(rates[len(rates) // 2], 2) if rates else None,
                       "completed": len(rates), "errors": errors[:3]}
    return report


# -- baselines ----------------------------------------------------------------------


def baselines(quick: bool, sizes: dict) -> dict:
    flags = [*(["--quick"] if quick else []), "--connects", str(sizes["connects"]), "--pings", str(sizes["pings"]),
             "--bulk-mb", str(sizes["bulk_mb"])]
    # py-libp2p's stock connect takes ~260 ms (its 250 ms dial delay), and
    # its bulk ~5 MB/s: give each measurement time for every sample.
    pylibp2p_cap = ["--time-cap", str(max(60.0, sizes["connects"] * 0.5, sizes["bulk_mb"] / 2))]
    pylibp2p = (
        run_json([INTEROP_PY, str(REPO / "bench/baselines/pylibp2p_transport.py"), *flags, *pylibp2p_cap], timeout=1800)
        if os.path.exists(INTEROP_PY) else {"error": "interop venv missing (make interop-setup)"}
    )
    trio_tcp = run_json([sys.executable, str(REPO / "bench/baselines/trio_tcp.py"), *flags, "--ip", "::1"], 600)
    return {"py-libp2p": pylibp2p, "trio-tcp-ipv6": trio_tcp}


# -- figures that must say what they measure ---------------------------------------


def family_key(ip: str | None) -> str:
    """Which of our figures (ipv6/ipv4) to set against a baseline measured on ``ip``."""
    return "ipv4" if ip == "127.0.0.1" else "ipv6"


def comparison(name: str, measures: str, ours: dict | None, baseline: dict | None, field: str, unit: str,
               higher_is_better: bool = False) -> dict:
    """One like-for-like (or explicitly not) comparison, with both sample sizes."""
    ours_value, base_value = get(ours, field), get(baseline, field)
    ratio = None
    if ours_value and base_value:
        ratio = round(ours_value / base_value if higher_is_better else base_value / ours_value, 2)
    return {
        "name": name, "measures": measures, "unit": unit, "ours": ours_value, "baseline": base_value,
        "ratio": ratio, "ratio_is": "ours / baseline" if higher_is_better else "baseline / ours",
        # Sample sizes: latencies count samples, throughputs the bytes moved.
        **({"ours_bytes": get(ours, "bytes"), "baseline_bytes": get(baseline, "bytes")} if higher_is_better
           else {"ours_n": get(ours, "n"), "baseline_n": get(baseline, "n")}),
    }


def build_figures(ours: dict, base: dict) -> list[dict]:
    figures = []
    for transport in ("quic", "tcp"):
        py = get(base, "py-libp2p", "transports", transport) or {}
        mine = ours[family_key(py.get("ip"))]
        where = f"py-libp2p {transport.upper()} on {py.get('ip')}, ours QUIC on the same family"
        figures += [
            comparison(f"connect_vs_pylibp2p_{transport}_stock", f"full connect p50; {where}; py-libp2p with its "
                       "stock 250 ms dial delay (not like for like)", mine.get("connect_ms"),
                       py.get("connect_ms"), "p50", "ms"),
            comparison(f"connect_vs_pylibp2p_{transport}_nodelay", f"full connect p50; {where}; py-libp2p's dial "
                       "delay patched to 0 (like for like)", mine.get("connect_ms"),
                       py.get("connect_nodelay_ms"), "p50", "ms"),
            comparison(f"ping_vs_pylibp2p_{transport}", f"ping RTT p50 on an open stream; {where}",
                       mine.get("ping_rtt_ms"), py.get("ping_rtt_ms"), "p50", "ms"),
            comparison(f"bulk_vs_pylibp2p_{transport}", f"one-stream perf upload; {where}",
                       mine.get("bulk_1stream"), py.get("bulk_1stream"), "mb_per_s", "MB/s", higher_is_better=True),
        ]
    trio_tcp = base.get("trio-tcp-ipv6") or {}
    where = "plain trio TCP on ::1 (no TLS, no multiplexing), ours QUIC on ::1"
    figures += [
        comparison("connect_vs_trio_tcp", f"connect + first request/response p50; {where}",
                   ours["ipv6"].get("connect_ms"), trio_tcp.get("connect_rtt_ms"), "p50", "ms"),
        comparison("ping_vs_trio_tcp", f"32-byte ping RTT p50; {where}", ours["ipv6"].get("ping_rtt_ms"),
                   trio_tcp.get("ping_rtt_ms"), "p50", "ms"),
        comparison("bulk_vs_trio_tcp", f"one-stream upload; {where}", ours["ipv6"].get("bulk_1stream"),
                   trio_tcp.get("bulk_1stream"), "mb_per_s", "MB/s", higher_is_better=True),
    ]
    return figures


# -- checks -------------------------------------------------------------------------


def build_checks(ours: dict, base: dict, many: dict, pairs: dict, js: dict) -> list[dict]:
    v6 = ours["ipv6"]
    quic = get(base, "py-libp2p", "transports", "quic") or {}
    checks = []
    connect = get(v6, "connect_ms", "p50")
    checks.append(check("connect_p50_ipv6", connect, "ms", "<= 10", met=connect is not None and connect <= 10))
    # Like for like only: py-libp2p without its 250 ms dial delay, ours on
    # the family its figure was measured on (its stock figure is in "figures").
    like = get(ours, family_key(quic.get("ip")), "connect_ms", "p50")
    py_connect = get(quic, "connect_nodelay_ms", "p50")
    checks.append(check("connect_speedup_vs_pylibp2p_quic_nodelay", like, "ms", ">= 20x faster", py_connect,
                        py_connect / like if like and py_connect else None,
                        bool(like and py_connect and py_connect / like >= 20)))
    early = get(v6, "resumed_first_ping_early_data_ms", "p50")
    checks.append(check("resumed_first_ping_p50_ipv6", early, "ms", "<= 1 (0-RTT)", met=early is not None and early <= 1))
    rtt = get(v6, "ping_rtt_ms", "p50")
    checks.append(check("ping_rtt_p50_ipv6", rtt, "ms", "<= 0.3", met=rtt is not None and rtt <= 0.3))
    like_rtt = get(ours, family_key(quic.get("ip")), "ping_rtt_ms", "p50")
    py_rtt = get(quic, "ping_rtt_ms", "p50")
    checks.append(check("ping_rtt_vs_pylibp2p_quic", like_rtt, "ms", ">= 4x lower", py_rtt,
                        py_rtt / like_rtt if like_rtt and py_rtt else None,
                        bool(like_rtt and py_rtt and py_rtt / like_rtt >= 4)))
    bulk = get(v6, "bulk_1stream", "mb_per_s")
    checks.append(check("bulk_1stream_ipv6", bulk, "MB/s", ">= 50", met=bulk is not None and bulk >= 50))
    like_bulk = get(ours, family_key(quic.get("ip")), "bulk_1stream", "mb_per_s")
    py_bulk = get(quic, "bulk_1stream", "mb_per_s")
    checks.append(check("bulk_1stream_vs_pylibp2p_quic", like_bulk, "MB/s", ">= 20x", py_bulk,
                        like_bulk / py_bulk if like_bulk and py_bulk else None,
                        bool(like_bulk and py_bulk and like_bulk / py_bulk >= 20)))
    if get(js, "skipped") is None:
        from_us, from_js = get(js, "from_hypermesh", "median_mb_per_s"), get(js, "from_js_libp2p", "median_mb_per_s")
        share = from_us / from_js if from_us and from_js else None
        checks.append(check("js_libp2p_client_download_from_us_vs_from_js_libp2p", from_us, "MB/s", ">= 0.8x",
                            from_js, share, bool(share and share >= 0.8)))
    netns = get(pairs, "mtu_1500", "download", "mb_per_s")
    if get(pairs, "skipped") is None:
        checks.append(check("bulk_1stream_download_netns_mtu1500", netns, "MB/s", ">= 60",
                            met=netns is not None and netns >= 60))
    checks.append(check("concurrent_connections_held", many["server_sees_peers"], "connections",
                        f">= {many['connections']}", met=many["server_sees_peers"] >= many["connections"]))
    return checks


def first_answers_report(quick: bool, count: int, started: float) -> dict:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hypermesh-bench-") as tmp:
        with start_node(Path(tmp) / "server", ["/ip6/::1/udp/0/quic-v1"]) as server:
            figures = trio.run(measure_first_answer_figures, server.addr("/ip6/"), count)
    return {"bench": "transport_first_answers", "quick": quick, "machine": machine(), "samples": count,
            "load_average_before": load_before, "load_average_after": os.getloadavg(), **figures,
            "elapsed_s": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run for a smoke test")
    parser.add_argument("--hold-connections", nargs=2, metavar=("ADDR", "COUNT"), help=argparse.SUPPRESS)
    parser.add_argument("--bulk-client", nargs=3, metavar=("ADDR", "BYTES", "SERVER_PID"), help=argparse.SUPPRESS)
    parser.add_argument("--skip-namespaces", action="store_true", help="skip the MTU 1500/1280 namespace pair")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--skip-js", action="store_true", help="skip the js-libp2p (quinn) client comparison")
    parser.add_argument("--first-answers-only", action="store_true",
                        help="only the dial-to-first-answer figures (ping, FIND_NODE) over [::1]")
    args = parser.parse_args()
    if args.hold_connections:
        trio.run(hold_connections, args.hold_connections[0], int(args.hold_connections[1]))
        return
    if args.bulk_client:
        trio.run(bulk_client, args.bulk_client[0], int(args.bulk_client[1]), int(args.bulk_client[2]))
        return
    started = time.monotonic()
    sizes = sample_sizes(args.quick)
    if args.first_answers_only:
        print(json.dumps(first_answers_report(args.quick, sizes["connects"], started)))
        return
    connections = 100 if args.quick else 1000
    with tempfile.TemporaryDirectory(prefix="hypermesh-bench-") as tmp:
        listen = ["/ip6/::1/udp/0/quic-v1", "/ip4/127.0.0.1/udp/0/quic-v1"]
        with start_node(Path(tmp) / "server", listen, extra=["--perf"]) as server:
            ours = {
                "ipv6": trio.run(measure_family, server.addr("/ip6/"), sizes),
                "ipv4": trio.run(measure_family, server.addr("/ip4/"), sizes),
            }
        # The connection manager would trim idle connections past its default
        # high water mark of 1,000; holding them is the point here.
        room = ["--connections-high", str(2 * connections), "--connections-low", str(2 * connections)]
        with start_node(Path(tmp) / "many", ["/ip6/::1/udp/0/quic-v1"], extra=room) as server:
            many = measure_many_connections(server, connections)
        pairs = ({"skipped": "--skip-namespaces"} if args.skip_namespaces
                 else measure_namespace_pairs(int(sizes["bulk_mb"] * MB), Path(tmp)))
        js = ({"skipped": "--skip-js"} if args.skip_js
              else measure_js_libp2p(int(sizes["bulk_mb"] * MB / 2), 2 if args.quick else 5, Path(tmp)))
    base = {} if args.skip_baselines else baselines(args.quick, sizes)
    report = {
        "bench": "transport",
        "quick": args.quick,
        "machine": machine(),
        "hypermesh": ours,
        "many_connections": many,
        "namespace_pairs": pairs,
        "baselines": base,
        "sample_sizes": sizes,
        "figures": build_figures(ours, base),
        "js_libp2p": js,
        "checks": build_checks(ours, base, many, pairs, js),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
