"""esockets: the ESocketS API on the esockets C++ engine.

Subclass :class:`Socket`, override the ``on_*`` callbacks you need, call :meth:`Socket.start`::

    import esockets

    class Echo(esockets.Socket):
        def on_message_recv(self, fileno, msg):
            self.send(fileno, msg)

    s = Echo(port=9000)
    s.start()          # returns; the process stays alive until s.stop()

Callbacks run on the engine's threads (a shard thread, or a worker with ``workers=N``), one
at a time per connection, holding the GIL only for the duration of the call. ``send``,
``close`` and ``stop`` may be called from any thread, callbacks included.
"""

from __future__ import annotations

import atexit
import logging
import threading
import traceback
from typing import Any, Callable, Dict, Optional

from . import _esockets

__all__ = [
    "Socket",
    "Connection",
    "Fileno",
    "Error",
    "StaleFileno",
    "SlowConsumer",
    "Backpressure",
    "__version__",
]

__version__ = "0.1.0"

_log = logging.getLogger("esockets")


class Error(Exception):
    """Base class of the errors esockets raises."""


class StaleFileno(Error, KeyError):
    """The fileno names no live connection: it ended (the fd number may belong to another
    client now, which got a new :class:`Fileno`), or a plain int names no connected client."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else "stale fileno"


class SlowConsumer(Error):
    """A send would have passed the connection's output cap (``output_hard_cap`` or its
    shard's share of ``output_total_cap``): the connection is being closed as a slow
    consumer; ``on_client_disconnect`` follows with ``close_reason == 'slow_consumer'``."""


class Backpressure(Error, BlockingIOError):
    """A send from a thread that is not an engine thread found the engine's command queue
    full for ``send_timeout`` seconds (nothing was sent; the connection is fine)."""


class Fileno(int):
    """The fileno of one connection: an ``int`` equal to the socket's file descriptor (so it
    hashes, compares and prints as the seed's fileno did) that also carries the engine's
    connection id. Every call that takes it (``send``, ``close``, ``clients[...]``) reaches
    that connection only: once it ended, they raise :class:`StaleFileno`, even when the fd
    number was reused by another client."""

    # Set right after creation: _id (the engine's 64-bit ConnectionId), _client (Connection).
    _id: int
    _client: "Connection"

    @property
    def connection_id(self) -> int:
        """The engine's connection id: shard (8 bits) | slot (24) | generation (32)."""
        return self._id


_LIVE, _DISCONNECTING, _CLOSED = 0, 1, 2


class Connection:
    """A client as ``Socket.clients[fileno]`` holds it (the seed's Connection)."""

    def __init__(self, socket: "Socket", fileno: Fileno, peer: str) -> None:
        self._socket = socket
        self._fileno = fileno
        self._peer = peer
        self._state = _LIVE
        #: Why the connection ended ('peer_closed', 'reset', 'closed_by_server', 'refused',
        #: 'framing_error', 'slow_consumer', 'idle', 'frame_timeout', 'shutdown',
        #: 'handler_exception', 'io_error'); None while it is open. Set before
        #: on_client_disconnect runs.
        self.close_reason: Optional[str] = None
        #: QUEUE_RECV_MESSAGES=True: every message is also put here (a queue.Queue).
        self.recv_buffer: Any = None

    def getip(self) -> str:
        """``"ip:port"`` of the client (``"[ip]:port"`` for IPv6); also valid in and after
        ``on_client_disconnect``."""
        return self._peer

    @property
    def address(self) -> tuple:
        """``(ip, port)`` of the client."""
        host, _, port = self._peer.rpartition(":")
        return (host.strip("[]"), int(port))

    def fileno(self) -> Fileno:
        return self._fileno

    @property
    def connected(self) -> bool:
        """True until the connection ended (False from ``on_client_disconnect`` on)."""
        return self._state == _LIVE

    def send(self, msg: Any) -> None:
        """Same as ``socket.send(self.fileno(), msg)``."""
        self._socket.send(self._fileno, msg)

    def close(self) -> None:
        """Same as ``socket.close(self.fileno())``."""
        self._socket.close(self._fileno)

    def _queue_message(self, msg: bytes) -> None:
        if self.recv_buffer is None:
            import queue

            self.recv_buffer = queue.Queue()
        self.recv_buffer.put(msg)

    def __repr__(self) -> str:
        state = "open" if self._state == _LIVE else (self.close_reason or "closed")
        return f"<{type(self).__name__} fileno={int(self._fileno)} {self._peer} {state}>"


class _Clients(dict):
    """``Socket.clients``: {fileno: Connection} of the open connections.

    A :class:`Fileno` is looked up by its identity, not only its number: after its connection
    ended it raises :class:`StaleFileno` (a ``KeyError``) instead of returning whichever client
    holds the fd now. Inside ``on_client_disconnect`` the ending client is still returned."""

    def __getitem__(self, key: Any) -> Connection:
        if isinstance(key, Fileno):
            client = key._client
            if client._state == _CLOSED:
                raise StaleFileno(
                    f"fileno {int(key)} ({client.getip()}) is stale: its connection ended"
                    f" ({client.close_reason})"
                )
            return client
        return dict.__getitem__(self, key)

    def __contains__(self, key: Any) -> bool:
        if isinstance(key, Fileno):
            return key._client._state != _CLOSED
        return dict.__contains__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


def _format_exception(where: str, exc: BaseException) -> str:
    """The text of a callback's exception as on_warning receives it."""
    head = f"{where} raised {type(exc).__name__}: {exc}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    return f"{head}\n{tb}"


_esockets._setup(Fileno, StaleFileno, SlowConsumer, Backpressure, _format_exception)

_CALLBACKS = (
    "on_start",
    "on_client_connect",
    "on_message_recv",
    "on_client_disconnect",
    "on_server_shutting_down",
    "on_server_shut_down",
    "on_warning",
    "on_framing_error",
    "on_output_high",
    "on_output_low",
)

# Engine options: keyword arguments of Socket passed through when not None.
_ENGINE_OPTIONS = (
    "shards",
    "workers",
    "framing",
    "balance",
    "line_delimiter",
    "length_prefix_bytes",
    "max_frame",
    "max_connections",
    "idle_timeout",
    "frame_timeout",
    "write_timeout",
    "shutdown_timeout",
    "linger_timeout",
    "output_high_watermark",
    "output_low_watermark",
    "output_hard_cap",
    "output_total_cap",
    "worker_queue_capacity",
    "command_queue_capacity",
    "handoff_poll",
    "tcp_nodelay",
    "socket_send_buffer",
    "socket_receive_buffer",
    "read_chunk",
    "backlog",
)


class Socket:
    """The server (the seed's ``ESocketS.Socket``).

    Positional arguments are the seed's; the engine's options are keyword-only. ``None`` keeps
    the engine's default (see the package README for the table).
    """

    def __init__(
        self,
        port: int = 1234,
        host: str = "127.0.0.1",
        BUFFER_SIZE: Optional[int] = None,
        QUEUE_SIZE: Optional[int] = None,
        SERVER_EPOLL_BLOCK_TIME: Any = None,
        CLIENT_EPOLL_BLOCK_TIME: Any = None,
        QUEUE_RECV_MESSAGES: bool = False,
        clients_class: type = Connection,
        auto_register: bool = True,
        *,
        shards: Optional[int] = None,
        workers: Optional[int] = None,
        framing: Optional[str] = None,
        balance: Optional[str] = None,
        line_delimiter: Any = None,
        length_prefix_bytes: Optional[int] = None,
        max_frame: Optional[int] = None,
        max_connections: Optional[int] = None,
        idle_timeout: Optional[float] = None,
        frame_timeout: Optional[float] = None,
        write_timeout: Optional[float] = None,
        shutdown_timeout: Optional[float] = None,
        linger_timeout: Optional[float] = None,
        output_high_watermark: Optional[int] = None,
        output_low_watermark: Optional[int] = None,
        output_hard_cap: Optional[int] = None,
        output_total_cap: Optional[int] = None,
        worker_queue_capacity: Optional[int] = None,
        command_queue_capacity: Optional[int] = None,
        handoff_poll: Optional[float] = None,
        tcp_nodelay: Optional[bool] = None,
        socket_send_buffer: Optional[int] = None,
        socket_receive_buffer: Optional[int] = None,
        read_chunk: Optional[int] = None,
        backlog: Optional[int] = None,
        send_timeout: float = 10.0,
    ) -> None:
        del SERVER_EPOLL_BLOCK_TIME, CLIENT_EPOLL_BLOCK_TIME  # the engine sleeps until an event
        if not (isinstance(clients_class, type) and issubclass(clients_class, Connection)):
            raise TypeError("clients_class must be esockets.Connection or a subclass of it")
        if read_chunk is None and BUFFER_SIZE is not None:
            read_chunk = BUFFER_SIZE
        if backlog is None and QUEUE_SIZE is not None:
            backlog = QUEUE_SIZE
        local = dict(locals())
        options: Dict[str, Any] = {"host": host, "port": port}
        for name in _ENGINE_OPTIONS:
            if local[name] is not None:
                options[name] = local[name]
        self.host = host
        self.port = port  # the bound port once start() ran (port=0 picks one)
        self.clients: Dict[int, Connection] = _Clients()
        self.auto_register = auto_register
        self.QUEUE_RECV_MESSAGES = QUEUE_RECV_MESSAGES
        self._clients_class = clients_class
        self._send_timeout = float(send_timeout)
        self._engine = _esockets.Engine(options)  # ValueError / TypeError for bad options
        self._keeper: Optional[threading.Thread] = None
        self._started = False
        # Fast path: unless a subclass overrides them, send/close go straight to the engine.
        cls = type(self)
        if cls.send is Socket.send:
            self.send = self._engine.send  # type: ignore[method-assign]
        if cls.send_frame is Socket.send_frame:
            self.send_frame = self._engine.send_frame  # type: ignore[method-assign]

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Binds (``OSError`` if it cannot), calls ``on_start`` and returns while the engine
        serves on its own threads. As with the seed, the process stays alive until
        :meth:`stop` (a non-daemon thread waits for the engine); if the interpreter is asked
        to exit meanwhile (Ctrl-C while the main thread waits for that thread), the server is
        stopped gracefully first. If ``on_start`` raises, the server is stopped again and
        ``start`` raises that exception."""
        if self._started:
            raise RuntimeError("esockets: start() called twice (a Socket serves once)")
        self._started = True
        callbacks = {}
        cls = type(self)
        for name in _CALLBACKS:
            overridden = getattr(cls, name) is not getattr(Socket, name)
            callbacks[name] = getattr(self, name) if overridden or name == "on_warning" else None
        # Registered first: whatever happens from here on (an exception, Ctrl-C landing in
        # the middle of start()), the interpreter does not exit with the engine running.
        atexit.register(self._stop_at_exit)
        try:
            self._engine.start(
                self,
                self.clients,
                callbacks,
                self._register,
                self._disconnected,
                bool(self.auto_register),
                bool(self.QUEUE_RECV_MESSAGES),
                self._send_timeout,
            )
            if not self._engine.running:  # stopped from on_start
                atexit.unregister(self._stop_at_exit)
                return
            keeper = threading.Thread(
                target=self._engine.wait, name=f"esockets-server-{self.port}", daemon=False
            )
            keeper.start()
            self._keeper = keeper
        except BaseException:
            # e.g. KeyboardInterrupt between the engine's start and the keeper's: stop
            # gracefully (the shutdown callbacks run), then let it propagate.
            if self._engine.running:
                self._engine.stop()
            atexit.unregister(self._stop_at_exit)
            raise

    def stop(self) -> None:
        """Graceful stop: ``on_server_shutting_down``, stop accepting, flush what was sent,
        ``on_client_disconnect`` (``close_reason == 'shutdown'``) for every open connection,
        ``on_server_shut_down``; returns when done. From a callback it only starts the stop and
        returns at once (the server's own thread finishes it). Idempotent."""
        if self._engine.stop():  # False from a callback: the stop is only requested
            self._join_keeper(5.0)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Blocks until the server has stopped (or ``timeout`` seconds passed); True if it has.
        Interruptible (Ctrl-C), unlike a bare join in C++."""
        keeper = self._keeper
        if keeper is None:
            return not self._engine.running
        if timeout is None:
            while keeper.is_alive():
                keeper.join(0.25)
        else:
            keeper.join(timeout)
        return not keeper.is_alive()

    @property
    def running(self) -> bool:
        """True between start() and the end of stop()."""
        return self._engine.running

    # ------------------------------------------------------------------ clients
    def send(self, fileno: int, msg: Any) -> None:
        """Queues ``msg`` (bytes, bytearray, memoryview; str is sent as UTF-8) for the client.
        Never blocks on an engine thread; from another thread it waits (GIL released) while the
        engine's command queue is full, at most ``send_timeout`` seconds (then
        :class:`Backpressure`). Raises :class:`StaleFileno` if the connection ended,
        :class:`SlowConsumer` if this send passed its output cap (it is being closed)."""
        self._engine.send(fileno, msg)

    def send_frame(self, fileno: int, msg: Any) -> None:
        """As :meth:`send`, framing ``msg`` with the server's framing (the line delimiter
        appended, or the length header prepended)."""
        self._engine.send_frame(fileno, msg)

    def close(self, fileno: int) -> None:
        """Closes the connection once what was sent to it is flushed; ``on_client_disconnect``
        follows (``close_reason == 'closed_by_server'``). :class:`StaleFileno` if it already
        ended."""
        self._engine.close(fileno)

    def broadcast(self, msg: Any) -> int:
        """Sends ``msg`` to every open connection (one shared copy); returns how many."""
        return self._engine.broadcast(msg)

    def register(self, fileno: int) -> None:
        """``auto_register=False``: read the client again (after each message its reading is
        paused until this call). Any thread."""
        self._engine.set_reading(fileno, True)

    def unregister(self, fileno: int) -> None:
        """Stops reading the client until :meth:`register`. Any thread."""
        self._engine.set_reading(fileno, False)

    def connected(self, fileno: int) -> bool:
        """True while ``fileno`` names an open connection."""
        return self._engine.connected(fileno)

    @property
    def client_count(self) -> int:
        return self._engine.client_count

    def stats(self) -> Dict[str, Any]:
        """The engine's counters: totals, ``closes`` by reason, and ``shards`` (a list)."""
        return self._engine.stats()

    @property
    def shards(self) -> int:
        return self._engine.shards

    def set_shards(self, n: int) -> None:
        """Changes the number of shard threads while serving (not from a callback)."""
        self._engine.set_shards(n)

    # ------------------------------------------------------------------ the "on" functions
    def on_start(self) -> None:
        """The listener is bound (``self.port`` is the bound port); serving begins next."""

    def on_client_connect(self, fileno: Fileno) -> Optional[bool]:
        """A client connected; ``self.clients[fileno]`` is its Connection. Return ``False``
        to refuse it (``on_client_disconnect`` follows with ``close_reason == 'refused'``)."""
        return None

    def on_message_recv(self, fileno: Fileno, msg: bytes) -> None:
        """One message: a read with ``framing='raw'`` (the seed's behaviour), a line or a
        frame otherwise."""

    def on_client_disconnect(self, fileno: Fileno) -> None:
        """The connection ended (``self.clients[fileno].close_reason`` says why); the client
        is still in ``self.clients`` during this call and removed right after."""

    def on_server_shutting_down(self) -> None:
        """stop() began; sends made here are flushed before the connections close."""

    def on_server_shut_down(self) -> None:
        """Every connection is closed and the engine's threads have ended."""

    def on_warning(self, msg: str) -> None:
        """Something went wrong (including an exception raised by a callback: its text and
        traceback). The default logs it on the ``esockets`` logger."""
        _log.warning("%s", msg)

    def on_framing_error(self, fileno: Fileno, reason: str) -> None:
        """The client's input broke the framing; sends made here go out before the close."""

    def on_output_high(self, fileno: Fileno) -> None:
        """Output queued for the client passed ``output_high_watermark``."""

    def on_output_low(self, fileno: Fileno) -> None:
        """Queued output fell below ``output_low_watermark`` again."""

    # ------------------------------------------------------------------ internals
    def _register(self, fd: int, cid: int, peer: str) -> Fileno:
        # Engine thread, GIL held: a client connected.
        fileno = Fileno(fd)
        fileno._id = cid
        client = self._clients_class(self, fileno, peer)
        fileno._client = client
        clients = self.clients
        if dict.__contains__(clients, fd):
            # With workers, an fd can be reused before the previous holder's
            # on_client_disconnect ran: that one keeps its own Fileno -> Connection.
            dict.__delitem__(clients, fd)
        dict.__setitem__(clients, fileno, client)
        return fileno

    def _disconnected(self, fileno: Fileno, reason: str, handler: Optional[Callable[[Fileno], Any]]) -> None:
        client = fileno._client
        client.close_reason = reason
        client._state = _DISCONNECTING
        try:
            if handler is not None:
                handler(fileno)
        finally:
            client._state = _CLOSED
            clients = self.clients
            if dict.get(clients, fileno) is client:
                dict.__delitem__(clients, fileno)

    def _join_keeper(self, timeout: float) -> None:
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout)
        try:
            atexit.unregister(self._stop_at_exit)
        except Exception:  # pragma: no cover - interpreter teardown
            pass

    def _stop_at_exit(self) -> None:
        if self._engine.running:
            self._engine.stop()
        keeper = self._keeper
        if keeper is not None:
            keeper.join(5.0)
