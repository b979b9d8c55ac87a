"""A real SMTP server for the suite (aiosmtpd on a thread, 127.0.0.1, a free port).

It keeps every message it accepts, can be stopped and started again on the same port, can be
told to stall at DATA before accepting (a client that goes away meanwhile delivers nothing) or
at QUIT after accepting, can drop the connection right after accepting (the reply never
reaches the client), and can refuse a recipient with a reply of the test's choosing."""

import asyncio
import threading
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller

from tests.services import free_port

ACCEPTED = "250 2.0.0 Message accepted for delivery"
SHUTTING_DOWN = "421 4.3.2 Service shutting down"
CLOSE_WITHIN = 5  # seconds stopping waits for open connections to end


class _SessionTrackingController(Controller):
    """Keeps each connection's SMTP session, so stopping can close clients that are still on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sessions = set()

    def factory(self):
        session = super().factory()
        self.sessions.add(session)
        return session

    async def close_sessions(self):
        # As a mail server shutting down does: a reply already written (a message accepted)
        # still goes out before the connection closes; a transaction not yet accepted is cut
        # off (handle_DATA refuses a message whose connection is closing). drop_after_accept
        # models a reply lost after acceptance.
        # First, accept no new connections. Closing the asyncio server here instead would
        # strand a connection accepted a moment before: its transport could no longer attach
        # to a closed server, and its socket would be left open.
        loop = asyncio.get_running_loop()
        for sock in self.server.sockets:
            loop.remove_reader(sock.fileno())
        deadline = loop.time() + CLOSE_WITHIN
        # A connection accepted just before may only now have a session: go round until none
        # is left open.
        while loop.time() < deadline:
            transports = [s.transport for s in self.sessions if s.transport is not None]
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            if not transports and not tasks:
                return
            for transport in transports:
                transport.close()
            # Let each connection's task see its transport go and end, closing its socket.
            if tasks:
                await asyncio.wait(tasks, timeout=max(deadline - loop.time(), 0.01))
            else:
                await asyncio.sleep(0.01)


class SmtpServer:
    def __init__(self):
        self.port = free_port()
        self.messages = []
        self.aborted = 0  # transactions whose client went away while the server stalled
        self.stalled = threading.Event()  # set once a client is waiting on a stall
        self._held_at = None  # "DATA" or "QUIT" while stalling there
        self._drop_after_accept = False
        self._refusals = {}  # recipient address -> the reply to its RCPT TO
        self.refused = []  # every recipient refused so far, once per try
        self._changed = threading.Condition()
        self._controller = None

    @property
    def url(self):
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def running(self):
        return self._controller is not None

    def start(self):
        # A stopped controller's loop is closed, so every start gets a new one.
        self._controller = _SessionTrackingController(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self):
        if self._controller is not None:
            controller = self._controller
            try:
                asyncio.run_coroutine_threadsafe(
                    controller.close_sessions(), controller.loop).result(CLOSE_WITHIN + 5)
            finally:
                controller.stop()
                self._controller = None

    def hold(self, command="DATA"):
        self.stalled.clear()
        self._held_at = command

    def release(self):
        self._held_at = None

    def drop_after_accept(self, enabled=True):
        self._drop_after_accept = enabled

    def refuse(self, address, reply):
        """Answer RCPT TO `address` with `reply`, e.g. "550 5.1.1 No such user"; None accepts
        it again."""
        if reply is None:
            self._refusals.pop(address, None)
        else:
            self._refusals[address] = reply

    def wait_for(self, predicate, timeout=10):
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        refusal = self._refusals.get(address)
        if refusal is not None:
            self.refused.append(address)
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        await self._stall("DATA")
        if server.transport is None or server.transport.is_closing():
            # Stopping closed this connection after the message arrived but before it was
            # taken: a reply written now would be dropped, so the client never hears of an
            # acceptance, and a server that kept the message would deliver it twice.
            return SHUTTING_DOWN
        self._note(message=message_from_bytes(envelope.content, policy=policy.default))
        if self._drop_after_accept:
            server.transport.abort()
            await asyncio.sleep(3600)  # cancelled by aiosmtpd as the connection goes
        return ACCEPTED

    async def handle_QUIT(self, server, session, envelope):
        await self._stall("QUIT")
        return "221 Bye"

    async def _stall(self, command):
        if self._held_at != command:
            return
        self.stalled.set()
        try:
            while self._held_at == command:
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            self._note(aborted=1)
            raise

    def _note(self, message=None, aborted=0):
        with self._changed:
            if message is not None:
                self.messages.append(message)
            self.aborted += aborted
            self._changed.notify_all()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.release()
        self.stop()

