"""Validators on real hosts: QUIC on loopback, /hm/consensus/1.0.0, SQLite stores."""

import contextlib
import math

import pytest
import trio

from consensus_testkit import CountingApp
from hypermesh.consensus.driver import ConsensusService, peer_id_of
from hypermesh.consensus.sqlite_store import SqliteConsensusStore
from hypermesh.consensus.tendermint import TendermintConfig, TendermintCore
from hypermesh.consensus.validators import Validator, ValidatorSet, public_key_of
from hypermesh.consensus.wire import PROTOCOL_ID, InvalidEvidence, Kind, Vote, WireError, encode_message, make_evidence
from hypermesh.transport.errors import StreamReset
from hypermesh.transport.framing import frame
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity

V4 = "/ip4/127.0.0.1/udp/0/quic-v1"
CHAIN = "driver-chain"
CONFIG = TendermintConfig(timeout_propose=1.0, timeout_prevote=0.5, timeout_precommit=0.5, timeout_delta=0.5,
                          rebroadcast_interval=0.5)
VALIDATORS = 4
# Loopback answers in milliseconds; this only bounds a hung test.
STEP = 60


class _QuietHost:
    """What a ConsensusService needs of its host when the set holds no validator but itself."""

    def __init__(self, peer_id):
        self.peer_id = peer_id

    def set_stream_handler(self, protocol, handler):
        pass

    def remove_stream_handler(self, protocol):
        pass


class _TimerCore:
    """A core whose only timeout is the one the test asks for (by txs_available); records when it is woken."""

    def __init__(self, validators):
        self.validators = validators
        self.timer = math.inf
        self.woken_at = []

    def start(self, now):
        pass

    def get_timer(self):
        return self.timer

    def handle_timer(self, now):
        self.woken_at.append(now)
        if now >= self.timer:
            self.timer = math.inf

    def txs_available(self, now):
        self.timer = now + 1.0

    def take_outbound(self):
        return []

    def take_events(self):
        return []


async def test_a_nearer_timeout_re_arms_the_timer_loop_without_waking_it(autojump_clock):
    """Waking the loop to re-arm it cost a task switch and a handle_timer with nothing due about once a
    height (each new timeout of a height nearer than the last)."""
    me = Identity.from_seed(b"driver-timer")
    core = _TimerCore(ValidatorSet([Validator(public_key_of(me), 1)]))
    service = ConsensusService(_QuietHost(me.peer_id), core)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        started = trio.current_time()
        service.txs_available()  # the core now wants waking in 1 s, not never
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert core.woken_at == [started + 1.0]


@contextlib.asynccontextmanager
async def validator_network(tmp_path, running):
    """Four validators and one outsider on hosts that know each other; the first ``running`` run consensus."""
    identities = [Identity.from_seed(b"driver-%d" % i) for i in range(VALIDATORS + 1)]
    validators = ValidatorSet([Validator(public_key_of(i), 1) for i in identities[:VALIDATORS]])
    async with contextlib.AsyncExitStack() as stack:
        hosts = [await stack.enter_async_context(open_host(identity, [V4])) for identity in identities]
        for host in hosts:
            for other in hosts:
                if other is not host:
                    host.peerstore.add_addrs(other.peer_id, other.listen_addrs())
        services = []
        for index in range(running):
            (tmp_path / f"v{index}").mkdir()
            store = SqliteConsensusStore(tmp_path / f"v{index}")
            stack.callback(store.close)  # after the services below have stopped
            core = TendermintCore(CHAIN, validators, identities[index], CountingApp(b"v%d" % index), store, CONFIG)
            services.append(ConsensusService(hosts[index], core))
        nursery = await stack.enter_async_context(trio.open_nursery())
        for service in services:
            await nursery.start(service.run)
        yield hosts, services
        nursery.cancel_scope.cancel()


async def test_four_validators_on_real_hosts_commit_the_same_blocks(tmp_path):
    async with validator_network(tmp_path, VALIDATORS) as (hosts, services):
        with trio.fail_after(STEP):
            decisions = [[(await s.wait_for_height(h)).value for h in (1, 2, 3)] for s in services]
        assert all(d == decisions[0] for d in decisions)
        peer = peer_id_of(services[1].core.public_key)
        assert hosts[0].connection_manager.is_protected(peer)
    assert not hosts[0].connection_manager.is_protected(peer)


async def test_garbage_and_forgeries_reset_the_stream_and_the_chain_goes_on(tmp_path):
    async with validator_network(tmp_path, VALIDATORS - 1) as (hosts, services):
        blamed = []
        services[0].on_misbehaviour.append(lambda peer, error: blamed.append((peer, type(error))))
        liar, outsider = hosts[VALIDATORS - 1], hosts[VALIDATORS]  # a validator that runs no consensus; a non-validator
        target = hosts[0].peer_id
        with trio.fail_after(STEP):
            await services[0].wait_for_height(1)
            for sender, data in ((outsider, encode_message(Vote(Kind.PREVOTE, 1, 0, None, bytes(32), bytes(64)))),
                                 (liar, b"\x01\x7f not a consensus message")):
                stream = await sender.new_stream(target, [PROTOCOL_ID])
                await stream.send_all(frame(data))
                with pytest.raises(StreamReset):
                    await stream.receive_some(100)
            # Evidence is checked whatever height the chain has reached meanwhile.
            forged = [Vote(Kind.PREVOTE, 1, 0, block, public_key_of(hosts[1].identity), bytes(64))
                      for block in (None, bytes(32))]
            stream = await liar.new_stream(target, [PROTOCOL_ID])
            await stream.send_all(frame(encode_message(make_evidence(*forged))))
            height = services[0].core.height
            await services[0].wait_for_height(height + 2)
        assert (liar.peer_id, WireError) in blamed
        assert (liar.peer_id, InvalidEvidence) in blamed
        assert not any(peer == outsider.peer_id for peer, _ in blamed)  # refused unread


async def test_validator_restarted_from_its_store_catches_up_over_quic(tmp_path):
    async with validator_network(tmp_path, VALIDATORS - 1) as (hosts, services):
        index = VALIDATORS - 1
        identity = Identity.from_seed(b"driver-%d" % index)
        validators = services[0].core.validators
        (tmp_path / "late").mkdir()
        store = SqliteConsensusStore(tmp_path / "late")

        def new_service():
            core = TendermintCore(CHAIN, validators, identity, CountingApp(b"late"), store, CONFIG)
            return ConsensusService(hosts[index], core)

        with trio.fail_after(STEP):
            async with trio.open_nursery() as nursery:
                first = new_service()
                await nursery.start(first.run)
                await first.wait_for_height(2)
                nursery.cancel_scope.cancel()  # stopped mid-height; its store stays
            stopped_at = first.core.height
            await services[0].wait_for_height(stopped_at + 10)  # three of four carry on
            async with trio.open_nursery() as nursery:
                second = new_service()
                await nursery.start(second.run)
                target = services[0].core.height
                decision = await second.wait_for_height(target)
                nursery.cancel_scope.cancel()
        assert decision.value == (await services[0].wait_for_height(target)).value
        assert second.committed[0].height == stopped_at  # resumed where it stopped, no height skipped
        store.close()
