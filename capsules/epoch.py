"""The process's wasmtime engine and what advances its epoch: deadlines in wall-clock time.

Every store has an epoch deadline, so the engine's epoch must advance every
``EPOCH_TICK_S`` while guest code runs. It advances only then:
:meth:`EpochTicks.enter` and :meth:`EpochTicks.leave` bracket every run of
guest code, and the ticks run while at least one run is inside.

On Linux a POSIX timer does it (``timer_create`` with ``SIGEV_THREAD``):
libc calls wasmtime's ``wasmtime_engine_increment_epoch`` on a native
thread, which never takes the GIL. A Python thread ticking every
millisecond did before; it took the GIL from the event loop a thousand
times a second, busy or idle (a remote run on loopback made ~10 futex
calls for it, and was preempted 2-5 times). Elsewhere (no
``timer_create``) that thread remains, ticking always.

The epoch only says when to look at the clock: a store that reaches its
epoch deadline asks :func:`_on_deadline`, which traps only once the call's
deadline on the monotonic clock has passed, and otherwise looks again after
half the time left. An increment that comes early (libc may still run one just after
the timer is disarmed, and it then lands in the next call) therefore never
cuts a call short; a tick lost on a starved machine makes it late.

One engine serves the whole process (every :class:`CapsuleEngine` uses it),
and it is never freed: libc may be calling into it.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import math
import os
import sys
import threading
import time

import wasmtime
from wasmtime import _bindings, _ffi

EPOCH_TICK_S = 0.001
# <time.h> and <signal.h> on Linux (glibc and musl, x86-64 and aarch64).
_CLOCK_MONOTONIC = 1
_SIGEV_THREAD = 2
_TICK_NS = round(EPOCH_TICK_S * 1e9)
# wasmtime_update_deadline_kind_t: keep running until the new deadline.
_UPDATE_DEADLINE_CONTINUE = 0
# What a call stopped by its deadline traps with ("interrupt": classify_failure's word for a timeout).
DEADLINE_TRAP_MESSAGE = b"epoch deadline interrupt: the call ran past its timeout"


def deadline_ticks(timeout_ms: int) -> int:
    """Ticks for ``timeout_ms``, plus one: the first tick may come at once."""
    return math.ceil(timeout_ms / 1000 / EPOCH_TICK_S) + 1


def _ticks_to_look_again(left_ns: int) -> int:
    """Half the ticks left (at least one): ticks lost on a starved machine delay the trap by little."""
    return max(1, -(-left_ns // (2 * _TICK_NS)))


def _on_deadline(context, deadline_ns, delta, kind) -> int:
    """wasmtime's epoch deadline callback: trap once the call's deadline (``data``) has passed, else look again later."""
    left_ns = (deadline_ns or 0) - time.monotonic_ns()
    if left_ns <= 0:
        return ctypes.cast(_bindings.wasmtime_error_new(DEADLINE_TRAP_MESSAGE), ctypes.c_void_p).value
    delta[0] = _ticks_to_look_again(left_ns)
    kind[0] = _UPDATE_DEADLINE_CONTINUE
    return 0


_DEADLINE_CALLBACK = _bindings._wasmtime_store_epoch_deadline_callback.argtypes[1](_on_deadline)
_NO_FINALIZER = _bindings._wasmtime_store_epoch_deadline_callback.argtypes[3]()


def set_deadline(store: wasmtime.Store, timeout_ms: int) -> None:
    """``store`` traps once ``timeout_ms`` have passed on the monotonic clock (about a tick later)."""
    timeout_ns = timeout_ms * 1_000_000
    store.set_epoch_deadline(_ticks_to_look_again(timeout_ns))
    _bindings._wasmtime_store_epoch_deadline_callback(store.ptr(), _DEADLINE_CALLBACK, time.monotonic_ns() + timeout_ns,
                                                      _NO_FINALIZER)


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
    """A CLOCK_MONOTONIC timer whose expiries increment the engine's epoch on a libc thread.

    libc calls the notify function with the ``union sigval`` holding the
    engine pointer; on x86-64 and aarch64 that union is passed exactly as
    the pointer ``wasmtime_engine_increment_epoch`` takes.
    """

    def __init__(self, libc: ctypes.CDLL, engine: wasmtime.Engine):
        libc.timer_create.argtypes = [ctypes.c_int, ctypes.POINTER(_SigeventThread), ctypes.POINTER(ctypes.c_void_p)]
        # PyDLL: arming is a system call of a microsecond, made without releasing the GIL.
        self._settime = ctypes.PyDLL(libc._name).timer_settime
        self._settime.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        event = _SigeventThread()
        event.sigev_value = ctypes.cast(engine.ptr(), ctypes.c_void_p).value
        event.sigev_notify = _SIGEV_THREAD
        event.notify_function = ctypes.cast(_ffi.dll.wasmtime_engine_increment_epoch, ctypes.c_void_p).value
        self._timer = ctypes.c_void_p()
        if libc.timer_create(_CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(self._timer)) != 0:
            raise OSError(ctypes.get_errno(), "timer_create failed")
        tick = _Timespec(0, _TICK_NS)
        self._armed = _Itimerspec(tick, tick)
        self._disarmed = _Itimerspec(_Timespec(0, 0), _Timespec(0, 0))

    def arm(self) -> None:
        self._settime(self._timer, 0, self._armed, None)

    def disarm(self) -> None:
        self._settime(self._timer, 0, self._disarmed, None)


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
    """Advances ``engine``'s epoch every ``EPOCH_TICK_S`` while guest code runs (see the module docstring)."""

    def __init__(self, engine: wasmtime.Engine):
        self.engine = engine
        self._start()

    def _start(self) -> None:
        # Also in a forked child, which inherits neither the timer nor the thread.
        self._lock = threading.Lock()
        self._inside = 0
        self._timer = _posix_timer(self.engine)
        if self._timer is None:
            threading.Thread(target=self._tick_forever, name="capsule-epoch", daemon=True).start()

    @property
    def native(self) -> bool:
        """Whether a POSIX timer ticks (else the fallback thread)."""
        return self._timer is not None

    def enter(self) -> None:
        """Guest code is about to run: ticks run until the matching :meth:`leave`."""
        with self._lock:
            self._inside += 1
            if self._inside == 1 and self._timer is not None:
                self._timer.arm()

    def leave(self) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0 and self._timer is not None:
                self._timer.disarm()

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
            self._timer.disarm()


_shared: EpochTicks | None = None
_shared_lock = threading.Lock()


def shared() -> EpochTicks:
    """The process's engine (fuel metering and epoch interruption on) and its ticks."""
    global _shared
    with _shared_lock:
        if _shared is None:
            config = wasmtime.Config()
            config.consume_fuel = True
            config.epoch_interruption = True
            engine = wasmtime.Engine(config)
            # Never freed: a libc thread may still be incrementing its epoch.
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(engine))
            _shared = EpochTicks(engine)
            atexit.register(_shared._stop)
            os.register_at_fork(after_in_child=_shared._start)
        return _shared
