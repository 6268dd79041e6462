"""The lock-history linearizability checker: known violations caught, correct runs (sequential or overlapping)
accepted."""

from hypothesis import given, settings
from hypothesis import strategies as st

from hypermesh.consensus.linearizability import (
    ACQUIRE,
    READ,
    RELEASE,
    RENEW,
    LockResult,
    LockState,
    Operation,
    check_lock_history,
    is_linearizable,
    lease_overlaps,
    step,
)


def op(process, kind, invoke, complete, result, name="L", ttl=None, token=0):
    return Operation(process, kind, name, invoke, complete, result, ttl, token)


def granted(at, token, expiry):
    return LockResult(True, at, token, expiry)


def refused(at, holder=None, expiry=0):
    return LockResult(False, at, holder=holder, expiry=expiry)


def test_two_holders_one_after_the_other_while_the_first_lease_is_live_is_not_linearizable():
    history = [op("a", ACQUIRE, 0, 1, granted(10, 1, 110), ttl=100),
               op("b", ACQUIRE, 2, 3, granted(20, 2, 120), ttl=100)]
    result = check_lock_history(history)
    assert result.ok is False and result.name == "L"
    assert lease_overlaps(history)


def test_a_token_that_goes_down_is_not_linearizable():
    history = [op("a", ACQUIRE, 0, 1, granted(10, 5, 20), ttl=10),
               op("a", RELEASE, 2, 3, LockResult(True, 12), token=5),
               op("b", ACQUIRE, 4, 5, granted(14, 3, 24), ttl=10)]
    assert check_lock_history(history).ok is False
    assert not lease_overlaps(history)  # the leases are disjoint: only the fencing token is wrong


def test_a_stale_read_after_a_completed_acquire_is_not_linearizable():
    history = [op("a", ACQUIRE, 0, 1, granted(10, 1, 110), ttl=100),
               op("r", READ, 2, 3, LockResult(True, 11))]
    assert check_lock_history(history).ok is False


def test_a_release_by_a_non_holder_that_succeeds_is_not_linearizable():
    history = [op("a", ACQUIRE, 0, 1, granted(10, 1, 110), ttl=100),
               op("b", RELEASE, 2, 3, LockResult(True, 11), token=1)]
    assert check_lock_history(history).ok is False


def test_a_refusal_after_a_completed_release_with_nobody_else_is_not_linearizable():
    history = [op("a", ACQUIRE, 0, 1, granted(10, 1, 110), ttl=100),
               op("a", RELEASE, 2, 3, LockResult(True, 11), token=1),
               op("b", ACQUIRE, 4, 5, refused(12, "a", 110), ttl=100)]
    assert check_lock_history(history).ok is False


def test_block_time_that_goes_back_along_real_time_is_not_linearizable():
    history = [op("a", ACQUIRE, 0, 1, granted(50, 1, 60), ttl=10),
               op("b", ACQUIRE, 2, 3, granted(40, 2, 50), ttl=10)]
    assert check_lock_history(history).ok is False


def test_a_renewal_that_changes_the_token_or_ignores_the_ttl_is_not_linearizable():
    base = op("a", ACQUIRE, 0, 1, granted(10, 1, 20), ttl=10)
    assert check_lock_history([base, op("a", RENEW, 2, 3, granted(12, 2, 22), ttl=10, token=1)]).ok is False
    assert check_lock_history([base, op("a", RENEW, 2, 3, granted(12, 1, 99), ttl=10, token=1)]).ok is False
    assert check_lock_history([base, op("a", RENEW, 2, 3, granted(12, 1, 22), ttl=10, token=1)]).ok is True


def test_concurrent_acquires_linearize_in_the_order_the_results_need():
    """a's call came first, but b won: a's refusal names b, so b's acquire is ordered first."""
    history = [op("a", ACQUIRE, 0, 10, refused(6, "b", 105), ttl=100),
               op("b", ACQUIRE, 1, 9, granted(5, 1, 105), ttl=100),
               op("b", RELEASE, 11, 12, LockResult(True, 20), token=1),
               op("a", ACQUIRE, 13, 14, granted(21, 2, 121), ttl=100)]
    assert check_lock_history(history).ok is True
    assert not lease_overlaps(history)


def test_an_answer_never_heard_may_take_effect_any_time_after_its_call():
    history = [op("a", ACQUIRE, 5, None, granted(30, 1, 130), ttl=100),
               op("b", ACQUIRE, 6, 7, granted(10, 1, 20), ttl=10)]  # the same token granted twice: impossible
    assert check_lock_history(history).ok is False
    history[1] = op("b", ACQUIRE, 1, 2, refused(31, "a", 130), ttl=100)  # names a holder not yet asking
    assert check_lock_history(history).ok is False
    history[1] = op("b", ACQUIRE, 6, 7, refused(31, "a", 130), ttl=100)
    assert check_lock_history(history).ok is True


def test_locks_are_checked_apart_and_an_expired_lease_frees_the_lock():
    history = [op("a", ACQUIRE, 0, 1, granted(10, 1, 20), name="x", ttl=10),
               op("b", ACQUIRE, 0, 1, granted(10, 2, 20), name="y", ttl=10),
               op("b", ACQUIRE, 2, 3, granted(20, 3, 30), name="x", ttl=10)]  # x expired at 20
    assert check_lock_history(history).ok is True
    assert not lease_overlaps(history)


def test_a_search_out_of_steps_is_undecided_not_an_answer():
    impossible = op("z", READ, 0, 100, LockResult(True, 1, holder="q"))  # a holder nobody granted
    ops = [op(i, READ, 0, 100, LockResult(True, 0)) for i in range(12)] + [impossible]
    assert is_linearizable(ops, LockState(), step, max_steps=50) is None
    assert check_lock_history(ops).ok is False


class ReferenceLock:
    """An independent, obvious sequential lock: what the chain should do, to generate correct histories."""

    def __init__(self):
        self.holder, self.token, self.expiry, self.counter = None, 0, 0, 0

    def apply(self, process, kind, at, ttl, token):
        live = self.holder is not None and self.expiry > at
        mine = live and self.holder == process and token == self.token
        if kind == ACQUIRE:
            if live:
                return LockResult(False, at, holder=self.holder, expiry=self.expiry)
            self.counter += 1
            self.holder, self.token, self.expiry = process, self.counter, at + ttl
            return LockResult(True, at, self.token, self.expiry)
        if kind == RENEW:
            if not mine:
                return LockResult(False, at)
            self.expiry = at + ttl
            return LockResult(True, at, self.token, self.expiry)
        if kind == RELEASE:
            if not mine:
                return LockResult(False, at)
            self.holder = None
            return LockResult(True, at)
        if live:
            return LockResult(True, at, self.token, self.expiry, self.holder)
        return LockResult(True, at)


STEPS = st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from([ACQUIRE, RENEW, RELEASE, READ]),
                           st.integers(0, 8), st.integers(1, 12), st.booleans(), st.integers(0, 6), st.integers(0, 6)),
                 max_size=24)


def correct_history(steps, spread):
    """The operations of a sequential run of the reference lock; each op's call and answer are up to ``spread``
    before and after its linearization point (spread 0: a sequential history)."""
    lock = ReferenceLock()
    history, at = [], 0
    for index, (process, kind, advance, ttl, stale, before, after) in enumerate(steps):
        at += advance
        token = lock.token - 1 if stale else lock.token
        result = lock.apply(process, kind, at, ttl, token)
        point = 10 * index
        history.append(op(process, kind, point - before * spread, point + after * spread, result,
                          ttl=ttl if kind in (ACQUIRE, RENEW) else None, token=token))
    return history


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_every_sequential_history_of_a_correct_lock_is_linearizable(steps):
    history = correct_history(steps, 0)
    assert check_lock_history(history).ok is True
    assert not lease_overlaps(history)


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_correct_runs_with_overlapping_calls_are_linearizable(steps):
    assert check_lock_history(correct_history(steps, 3)).ok is True


@settings(max_examples=100, deadline=None)
@given(STEPS, st.data())
def test_a_granted_acquire_whose_token_is_not_new_breaks_a_sequential_history(steps, data):
    history = correct_history(steps, 0)
    grants = [i for i, o in enumerate(history) if o.kind == ACQUIRE and o.result.ok and o.result.token > 1]
    if not grants:
        return
    index = data.draw(st.sampled_from(grants))
    old = history[index]
    history[index] = op(old.process, ACQUIRE, old.invoke, old.complete,
                        granted(old.result.at, old.result.token - 1, old.result.expiry), ttl=old.ttl)
    assert check_lock_history(history).ok is False
