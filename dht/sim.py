"""A deterministic simulator: the real sans-IO core on an in-memory network.

Virtual time, seeded latency, message loss and churn; nothing here touches a
socket or a clock, so a run is a pure function of its seed. Nodes are
:class:`~hypermesh.dht.kademlia.KademliaCore` instances exactly as a real
node runs them, with :class:`~hypermesh.dht.store.MemoryRecordStore`.

``wire=True`` passes every message through the protobuf encoder and the
strict decoder, as the trio driver does; the benchmark leaves it off to
spend its time on the protocol rather than on serialisation.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Callable

from multiaddr import Multiaddr

from hypermesh.transport.identity import PeerId

from .kademlia import KadConfig, KademliaCore, Mode, OperationFinished
from .keys import KEY_BITS, bucket_index, kad_key, peer_key
from .routing import ip_group
from .messages import DhtProtocolError, KadMessage, MessageType, PeerInfo, decode_message, encode_message
from .operations import OperationResult
from .store import MemoryRecordStore

# Virtual time starts at a plausible Unix time so that record expiry and
# "issued in the future" checks behave as they do in a real node.
SIM_EPOCH = 1_700_000_000.0

# For networks whose routing tables an oracle fills (warm_start): bucket
# refresh and periodic liveness checks are off, since they would dominate a
# 10,000-node run of a few virtual minutes.
SIM_KAD_CONFIG = KadConfig(
    query_timeout=5.0,
    operation_timeout=120.0,
    refresh_interval=math.inf,
    liveness_max_age=math.inf,
    maintenance_interval=300.0,
)
# For networks the protocol builds itself (build_joined_network): refresh,
# liveness checks and maintenance as a real node runs them.
PROTOCOL_KAD_CONFIG = KadConfig(query_timeout=5.0, operation_timeout=120.0)


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    min_latency: float = 0.010
    max_latency: float = 0.150
    # Probability that a request or its response is lost.
    loss: float = 0.0
    wire: bool = False


@dataclass(slots=True)
class SimNode:
    index: int
    peer_id: PeerId
    addr: bytes
    core: KademliaCore
    key: int
    online: bool = True
    adversarial: bool = False
    joined_at: float = 0.0
    # A paused or overloaded node: its answers leave this much later.
    answer_delay: float = 0.0
    timer_at: float | None = None
    results: dict[int, OperationResult] = field(default_factory=dict)

    @property
    def info(self) -> PeerInfo:
        return PeerInfo(self.peer_id, (self.addr,))


class Simulator:
    def __init__(self, seed: int, network: NetworkConfig = NetworkConfig(), kad: KadConfig = SIM_KAD_CONFIG):
        self.rng = random.Random(seed)
        self.network = network
        self.kad = kad
        self.now = SIM_EPOCH
        self.nodes: list[SimNode] = []
        self.by_peer: dict[PeerId, SimNode] = {}
        self._queue: list[tuple[float, int, Callable, tuple]] = []
        self._sequence = itertools.count()
        self.delivered: dict[str, int] = {t.name: 0 for t in MessageType}
        self._adversaries: list[SimNode] = []
        self.on_result: Callable[[SimNode, OperationResult], None] | None = None

    # --------------------------------------------------------------- nodes

    def _random_public_ip(self) -> str:
        first = self.rng.choice([a for a in range(11, 224) if a not in (100, 127, 169, 172, 192, 198)])
        return f"{first}.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"

    def add_node(self, *, mode: Mode = Mode.SERVER, peer_id: PeerId | None = None, kad: KadConfig | None = None) -> SimNode:
        """A new node, configured as the network is unless ``kad`` says otherwise."""
        peer_id = peer_id or PeerId(bytes([0x12, 0x20]) + self.rng.randbytes(32))
        addr = Multiaddr(f"/ip4/{self._random_public_ip()}/udp/4001/quic-v1").to_bytes()
        core = KademliaCore(
            peer_id,
            store=MemoryRecordStore(),
            now=self.now,
            rng=random.Random(self.rng.getrandbits(64)),
            config=kad or self.kad,
            mode=mode,
            local_addrs=(addr,),
        )
        node = SimNode(len(self.nodes), peer_id, addr, core, peer_key(peer_id), joined_at=self.now)
        self.nodes.append(node)
        self.by_peer[peer_id] = node
        self._sync(node)
        return node

    def join(self, node: SimNode, via: list[SimNode]) -> int:
        """Bootstrap ``node`` through ``via``; returns the bootstrap operation's id."""
        node.core.add_bootstrap_peers([v.info for v in via])
        op_id = node.core.bootstrap(self.now)
        self._sync(node)
        return op_id

    def crash(self, node: SimNode) -> None:
        """The node vanishes without a word, as most departures do."""
        node.online = False

    def make_adversarial(self, nodes: list[SimNode]) -> None:
        """Turn ``nodes`` into a colluding eclipse attack.

        They answer every lookup query with the k attackers closest to the
        key and nothing else (no providers, no values), and silently drop
        ADD_PROVIDER and PUT_VALUE: a lookup that meets only attackers
        stays among them and finds nothing.
        """
        for node in nodes:
            node.adversarial = True
        self._adversaries = [n for n in self.nodes if n.adversarial]

    def _adversarial_answer(self, source: SimNode, target: SimNode, request) -> None:
        message = request.message
        if not request.expects_response:
            response = None  # ADD_PROVIDER: accepted in appearance, dropped in fact
        elif message.type is MessageType.PUT_VALUE:
            return  # never acknowledged
        else:
            key = kad_key(message.key)
            closest = heapq.nsmallest(self.kad.k + 1, self._adversaries, key=lambda n: n.key ^ key)
            closer = tuple(n.info for n in closest if n is not source)[: self.kad.k]
            response = KadMessage(message.type, key=message.key, closer_peers=closer)
        self.schedule(self.now + self._latency(), self._respond, source, target, request.request_id, response)

    def online_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes if n.online]

    def warm_start(self, nodes: list[SimNode]) -> None:
        """Fill routing tables as a long-running network's refreshes would.

        Bucket i of node x covers the keys sharing x's bits above i and
        differing at bit i: one contiguous range of the sorted keys, from
        which up to k peers are sampled.
        """
        ordered = sorted((n.key, n.index) for n in nodes)
        keys = [key for key, _ in ordered]
        k = self.kad.routing.k
        for node in nodes:
            local = node.key
            routing = node.core.routing
            position = bisect.bisect_left(keys, local)
            neighbours = [keys[i] for i in (position - 1, position + 1) if 0 <= i < len(keys)]
            lowest = min((bucket_index(local, n) for n in neighbours), default=KEY_BITS - 1)
            for index in range(KEY_BITS - 1, lowest - 1, -1):
                start = ((local >> (index + 1)) << (index + 1)) | ((((local >> index) & 1) ^ 1) << index)
                low = bisect.bisect_left(keys, start)
                high = bisect.bisect_left(keys, start + (1 << index))
                if high <= low:
                    continue
                chosen = range(low, high) if high - low <= k else self.rng.sample(range(low, high), k)
                for i in chosen:
                    peer = self.nodes[ordered[i][1]]
                    routing.observe(peer.peer_id, peer.key, (peer.addr,), self.now, ip_group(peer.addr))

    # ------------------------------------------------------------- running

    def schedule(self, at: float, callback: Callable, *args) -> None:
        heapq.heappush(self._queue, (at, next(self._sequence), callback, args))

    def run_until(self, end: float, stop: Callable[[], bool] | None = None) -> None:
        while self._queue and self._queue[0][0] <= end:
            at, _, callback, args = heapq.heappop(self._queue)
            self.now = max(self.now, at)
            callback(*args)
            if stop is not None and stop():
                return
        self.now = max(self.now, end)

    def run_operation(self, node: SimNode, start: Callable[[KademliaCore, float], int], limit: float = 600.0) -> OperationResult:
        """Start an operation on ``node`` and run the network until it finishes."""
        op_id = start(node.core, self.now)
        self._sync(node)
        self.run_until(self.now + limit, stop=lambda: op_id in node.results)
        if op_id not in node.results:
            raise TimeoutError(f"operation {op_id} did not finish within {limit} virtual seconds")
        return node.results.pop(op_id)

    def _sync(self, node: SimNode) -> None:
        """Collect what the core wants done: messages, events, its next timer."""
        core = node.core
        for request in core.take_outbound():
            self._send(node, request)
        for event in core.take_events():
            if isinstance(event, OperationFinished):
                if self.on_result is not None:
                    self.on_result(node, event.result)
                else:
                    node.results[event.result.op_id] = event.result
        timer = core.get_timer()
        if node.timer_at is None or timer < node.timer_at:
            node.timer_at = timer
            self.schedule(max(timer, self.now), self._fire_timer, node, timer)

    def _fire_timer(self, node: SimNode, at: float) -> None:
        if node.timer_at != at:
            return  # superseded by an earlier timer
        node.timer_at = None
        if node.online:
            node.core.handle_timer(self.now)
            self._sync(node)

    def _latency(self) -> float:
        return self.rng.uniform(self.network.min_latency, self.network.max_latency)

    def _lost(self) -> bool:
        return self.network.loss > 0 and self.rng.random() < self.network.loss

    def _wire(self, message: KadMessage) -> KadMessage:
        return decode_message(encode_message(message)) if self.network.wire else message

    def _send(self, source: SimNode, request) -> None:
        target = self.by_peer.get(request.peer.peer_id)
        if target is None or self._lost():
            return  # unknown or lost: the core's own timeout fails it
        self.schedule(self.now + self._latency(), self._deliver, source, target, request)

    def _deliver(self, source: SimNode, target: SimNode, request) -> None:
        if not target.online or target.core.mode is Mode.CLIENT:
            return
        self.delivered[request.message.type.name] += 1
        if target.adversarial:
            self._adversarial_answer(source, target, request)
            return
        try:
            response = target.core.handle_request(
                source.peer_id,
                self._wire(request.message),
                self.now,
                sender_addrs=(source.addr,),
                observed_addr=source.addr,
                sender_is_server=source.core.mode is Mode.SERVER,
            )
        except DhtProtocolError:
            response = None
            failed = True
        else:
            failed = request.expects_response and response is None
        self._sync(target)
        if self._lost():
            return
        at = self.now + target.answer_delay + self._latency()
        if failed:
            self.schedule(at, self._fail, source, request.request_id)
        else:
            reply = self._wire(response) if response is not None else None
            self.schedule(at, self._respond, source, target, request.request_id, reply)

    def _respond(self, source: SimNode, target: SimNode, request_id: int, response) -> None:
        if source.online:
            source.core.handle_response(request_id, response, self.now, remote_addr=target.addr)
            self._sync(source)

    def _fail(self, source: SimNode, request_id: int) -> None:
        if source.online:
            source.core.handle_failure(request_id, self.now)
            self._sync(source)


def build_network(seed: int, size: int, *, network: NetworkConfig = NetworkConfig(), kad: KadConfig = SIM_KAD_CONFIG,
                  warm: bool = True) -> Simulator:
    """``size`` server nodes, either in steady state (``warm``) or joined one by one."""
    sim = Simulator(seed, network, kad)
    nodes = [sim.add_node() for _ in range(size)]
    if warm:
        sim.warm_start(nodes)
    else:
        for position, node in enumerate(nodes[1:], start=1):
            via = [nodes[sim.rng.randrange(position)]]
            sim.run_operation(node, lambda core, now, v=via, n=node: sim.join(n, v))
    return sim


def build_joined_network(seed: int, size: int, *, network: NetworkConfig = NetworkConfig(),
                         kad: KadConfig = PROTOCOL_KAD_CONFIG, join_spacing: float = 0.2,
                         settle: float | None = None) -> Simulator:
    """``size`` server nodes whose routing tables only the protocol fills.

    Each node joins at its own time (``join_spacing`` apart, so joins
    overlap) by bootstrapping through one random node that joined before
    it; then the network runs ``settle`` virtual seconds (one refresh
    interval by default), so that bucket refreshes, self-lookups and
    liveness checks shape the tables as they would in a live network.
    """
    sim = Simulator(seed, network, kad)
    first = sim.add_node()
    joined = [first]

    def join(_):
        newcomer = sim.add_node()
        sim.join(newcomer, [joined[sim.rng.randrange(len(joined))]])
        joined.append(newcomer)

    for i in range(1, size):
        sim.schedule(sim.now + i * join_spacing, join, None)
    sim.run_until(sim.now + size * join_spacing + (kad.refresh_interval if settle is None else settle))
    return sim


def closest_online(
    sim: Simulator, target: int, *, exclude: SimNode | None = None, joined_before: float | None = None
) -> SimNode | None:
    """The oracle: the online node closest to ``target`` (a lookup never returns its own node)."""
    best = None
    for node in sim.nodes:
        if not node.online or node is exclude or (joined_before is not None and node.joined_at > joined_before):
            continue
        if best is None or node.key ^ target < best.key ^ target:
            best = node
    return best


__all__ = ["Simulator", "SimNode", "NetworkConfig", "SIM_KAD_CONFIG", "PROTOCOL_KAD_CONFIG", "SIM_EPOCH", "build_network",
           "build_joined_network", "closest_online"]
