"""The process's wasmtime engine, and the epoch increments that enforce call deadlines.

Every store has a deadline on the monotonic clock, enforced through
wasmtime's epoch: guest code checks the engine's epoch, and a store whose
epoch deadline is reached runs :func:`_on_deadline`, which traps once the
call's deadline has passed and otherwise lets it run on. The epoch only
says when to look at the clock, so an increment that comes early (a stale
one, or one meant for another call) never cuts a call short.

On Linux a one-shot POSIX timer (``timer_create`` with ``SIGEV_THREAD``)
is armed for the earliest deadline among the calls running
(:meth:`EpochTicks.enter` and :meth:`EpochTicks.leave` bracket every run of
guest code): libc then calls wasmtime's ``wasmtime_engine_increment_epoch``
on a native thread, without the GIL, and every running store (epoch
deadline: the next increment) looks at the clock. A call that ends before
its deadline, nearly all of them, costs at most two ``timer_settime``
calls and nothing else (none when the timer is already set for an earlier
deadline, see ``KEEP_TIMER_NS``). Before, a Python thread incremented the epoch every
millisecond: it took the GIL from the event loop a thousand times a
second, busy or idle (a remote run on loopback made ~10 futex calls for
it and was preempted 2-5 times). A timer incrementing every millisecond
instead costs a thread start per tick in glibc (~0.1 ms of CPU each on a
busy machine: +0.4 ms per 3 ms component call).

Where there is no ``timer_create``, that Python thread remains
(``HYPERMESH_EPOCH_THREAD=1`` forces it), and stores look at the clock
again after half the ticks left.

One engine serves the whole process (every :class:`CapsuleEngine` uses it),
and it is never freed: libc may be calling into it.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import sys
import threading
import time

import wasmtime
from wasmtime import _bindings, _ffi

# The fallback thread's tick.
EPOCH_TICK_S = 0.001
_TICK_NS = round(EPOCH_TICK_S * 1e9)
# <time.h> and <signal.h> on Linux (glibc and musl, x86-64 and aarch64).
_CLOCK_MONOTONIC = 1
_TIMER_ABSTIME = 1
_SIGEV_THREAD = 2
# A timer set for a deadline further away than this stays set when the last
# call leaves: calls that follow (with later deadlines) then need no system
# call, and if none comes it expires once for nothing (a libc thread start,
# ~0.1 ms of CPU). A nearer one, the inline budget's, is cleared at once.
KEEP_TIMER_NS = 50_000_000
# wasmtime_update_deadline_kind_t: keep running until the new epoch deadline.
_UPDATE_DEADLINE_CONTINUE = 0
# What a call stopped by its deadline traps with ("interrupt": classify_failure's word for a timeout).
DEADLINE_TRAP_MESSAGE = b"epoch deadline interrupt: the call ran past its timeout"


def deadline_ticks(timeout_ms: int) -> int:
    """Fallback ticks for ``timeout_ms``, plus one: the first tick may come at once."""
    return -(-timeout_ms * 1_000_000 // _TICK_NS) + 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _SigeventThread(ctypes.Structure):
    """``struct sigevent`` (64 bytes) as SIGEV_THREAD uses it."""

    _fields_ = [("sigev_value", ctypes.c_void_p), ("sigev_signo", ctypes.c_int), ("sigev_notify", ctypes.c_int),
                ("notify_function", ctypes.c_void_p), ("notify_attributes", ctypes.c_void_p),
                ("_padding", ctypes.c_byte * 32)]


class _PosixTimer:
    """A one-shot CLOCK_MONOTONIC timer whose expiry increments the engine's epoch on a libc thread.

    libc calls the notify function with the ``union sigval`` holding the
    engine pointer; on x86-64 and aarch64 that union is passed exactly as
    the pointer ``wasmtime_engine_increment_epoch`` takes.
    """

    def __init__(self, libc: ctypes.CDLL, engine: wasmtime.Engine):
        libc.timer_create.argtypes = [ctypes.c_int, ctypes.POINTER(_SigeventThread), ctypes.POINTER(ctypes.c_void_p)]
        # PyDLL: setting the timer is a system call of a microsecond, made without releasing the GIL.
        self._settime = ctypes.PyDLL(libc._name).timer_settime
        self._settime.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        event = _SigeventThread()
        event.sigev_value = ctypes.cast(engine.ptr(), ctypes.c_void_p).value
        event.sigev_notify = _SIGEV_THREAD
        event.notify_function = ctypes.cast(_ffi.dll.wasmtime_engine_increment_epoch, ctypes.c_void_p).value
        self._timer = ctypes.c_void_p()
        if libc.timer_create(_CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(self._timer)) != 0:
            raise OSError(ctypes.get_errno(), "timer_create failed")
        self._spec = _Itimerspec()

    def set(self, at_ns: int | None) -> None:
        """Expire once at ``at_ns`` on the monotonic clock (past: at once); None: not at all."""
        value = self._spec.it_value
        if at_ns is None:
            value.tv_sec = value.tv_nsec = 0
        else:
            value.tv_sec, value.tv_nsec = divmod(max(at_ns, 1), 1_000_000_000)
        self._settime(self._timer, _TIMER_ABSTIME, self._spec, None)


def _posix_timer(engine: wasmtime.Engine) -> _PosixTimer | None:
    if not sys.platform.startswith("linux") or os.environ.get("HYPERMESH_EPOCH_THREAD") == "1":
        return None
    for name in (None, ctypes.util.find_library("rt")):
        try:
            libc = ctypes.CDLL(name, use_errno=True)
            libc.timer_create  # noqa: B018 (glibc < 2.34 has it in librt)
        except (OSError, AttributeError):
            continue
        try:
            return _PosixTimer(libc, engine)
        except OSError:
            return None
    return None


class EpochTicks:
    """Increments ``engine``'s epoch when a running call's deadline comes (see the module docstring)."""

    def __init__(self, engine: wasmtime.Engine):
        self.engine = engine
        self._start()

    def _start(self) -> None:
        # Also in a forked child, which inherits neither the timer nor the thread.
        self._lock = threading.Lock()
        # Deadlines (monotonic ns) of the runs of guest code inside, and the one the timer is set for.
        self._deadlines: dict[int, int] = {}
        self._timer_at: int | None = None
        self._timer = _posix_timer(self.engine)
        if self._timer is None:
            threading.Thread(target=self._tick_forever, name="capsule-epoch", daemon=True).start()

    @property
    def native(self) -> bool:
        """Whether a POSIX timer increments the epoch (else the fallback thread)."""
        return self._timer is not None

    def set_deadline(self, store: wasmtime.Store, timeout_ms: int) -> int:
        """``store`` traps once ``timeout_ms`` have passed on the monotonic clock; returns that deadline."""
        timeout_ns = timeout_ms * 1_000_000
        deadline_ns = time.monotonic_ns() + timeout_ns
        store.set_epoch_deadline(self._ticks_to_look_again(timeout_ns))
        _set_deadline_callback(store.ptr(), _DEADLINE_CALLBACK_ADDRESS, deadline_ns, None)
        return deadline_ns

    def _ticks_to_look_again(self, left_ns: int) -> int:
        # The timer increments once per deadline; the thread every tick, and a
        # starved thread loses ticks, so look again after half the time left.
        return 1 if self._timer is not None else max(1, -(-left_ns // (2 * _TICK_NS)))

    def enter(self, deadline_ns: int) -> None:
        """Guest code with this deadline is about to run: until :meth:`leave`, the epoch moves when it comes."""
        with self._lock:
            self._deadlines[deadline_ns] = self._deadlines.get(deadline_ns, 0) + 1
            timer_at = self._timer_at
            # The timer serves if it expires first and has not expired yet.
            if self._timer is not None and (timer_at is None or deadline_ns < timer_at
                                            or timer_at <= time.monotonic_ns()):
                self._set_timer(deadline_ns)

    def leave(self, deadline_ns: int) -> None:
        with self._lock:
            left = self._deadlines[deadline_ns] - 1
            if left:
                self._deadlines[deadline_ns] = left
            else:
                del self._deadlines[deadline_ns]
            if self._timer is None:
                return
            if self._deadlines:
                if deadline_ns == self._timer_at:
                    self._set_timer(min(self._deadlines))
            elif self._timer_at is not None and self._timer_at - time.monotonic_ns() < KEEP_TIMER_NS:
                self._set_timer(None)

    def _looked_too_early(self) -> None:
        """A store looked at the clock before its deadline: the timer must expire again at the earliest one."""
        if self._timer is not None:
            with self._lock:
                self._set_timer(min(self._deadlines, default=None))

    def _set_timer(self, at_ns: int | None) -> None:
        self._timer_at = at_ns
        self._timer.set(at_ns)

    def _tick_forever(self) -> None:
        # Ticks counted from the clock: after a late wake-up the epoch catches up.
        started, ticks = time.monotonic(), 0
        while True:
            time.sleep(EPOCH_TICK_S)
            due = int((time.monotonic() - started) / EPOCH_TICK_S)
            while ticks < due:
                self.engine.increment_epoch()
                ticks += 1

    def _stop(self) -> None:
        if self._timer is not None:
            with self._lock:
                self._set_timer(None)


def _on_deadline(context, deadline_ns, delta, kind) -> int:
    """wasmtime's epoch deadline callback: trap once the call's deadline (``data``) has passed, else look again later."""
    left_ns = (deadline_ns or 0) - time.monotonic_ns()
    if left_ns <= 0:
        return ctypes.cast(_bindings.wasmtime_error_new(DEADLINE_TRAP_MESSAGE), ctypes.c_void_p).value
    ticks = shared()
    ticks._looked_too_early()
    delta[0] = ticks._ticks_to_look_again(left_ns)
    kind[0] = _UPDATE_DEADLINE_CONTINUE
    return 0


_DEADLINE_CALLBACK = _bindings._wasmtime_store_epoch_deadline_callback.argtypes[1](_on_deadline)
_DEADLINE_CALLBACK_ADDRESS = ctypes.cast(_DEADLINE_CALLBACK, ctypes.c_void_p).value
# wasmtime_store_epoch_deadline_callback(store, callback, data, finalizer), called once per store: by
# address, and without releasing the GIL (it only stores the three pointers).
_set_deadline_callback = ctypes.PyDLL(str(_ffi.filename)).wasmtime_store_epoch_deadline_callback
_set_deadline_callback.argtypes = [ctypes.c_void_p] * 4
_set_deadline_callback.restype = None

_shared: EpochTicks | None = None
_shared_lock = threading.Lock()


def shared() -> EpochTicks:
    """The process's engine (fuel metering and epoch interruption on) and what increments its epoch."""
    global _shared
    if _shared is not None:
        return _shared
    with _shared_lock:
        if _shared is None:
            config = wasmtime.Config()
            config.consume_fuel = True
            config.epoch_interruption = True
            engine = wasmtime.Engine(config)
            # Never freed: a libc thread may still be incrementing its epoch.
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(engine))
            ticks = EpochTicks(engine)
            atexit.register(ticks._stop)
            os.register_at_fork(after_in_child=ticks._start)
            _shared = ticks
        return _shared
