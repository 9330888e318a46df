"""A delaying TCP proxy for the bench's "link" mode: every byte crosses it `delay` seconds late
in each direction (25 ms each way: a 50 ms round trip, a server in another region), in order,
with no bandwidth limit, and a new connection costs one round trip more (its handshake). It relays bytes only; what a client does on a slow link (one
connection per request or kept ones, how many requests in flight) is what is measured.

    proxy = LinkProxy(target_port, delay=0.025)   # proxy.uri is http://127.0.0.1:<port>
    ...
    proxy.close()

Listens on 127.0.0.1 only; runs in a thread of its own (asyncio), stops with `close()`.
"""
import asyncio
import socket
import threading
import time


class LinkProxy:
    def __init__(self, target_port, delay, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.delay = delay
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        self.uri = f"http://127.0.0.1:{self.port}"

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, client_reader, client_writer):
        self.connections += 1
        # The TCP handshake's round trip: the local kernel accepted at once, a far server would
        # not have (TLS would cost two more).
        await asyncio.sleep(2 * self.delay)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        for writer in (client_writer, server_writer):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(self._relay(client_reader, server_writer),
                             self._relay(server_reader, client_writer), return_exceptions=True)

    async def _relay(self, reader, writer):
        """Bytes from `reader` to `writer`, each chunk released `delay` after it arrived."""
        queue = asyncio.Queue()

        async def release():
            while True:
                due, chunk = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    break
                writer.write(chunk)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(release())
        try:
            while True:
                chunk = await reader.read(1 << 16)
                queue.put_nowait((time.monotonic() + self.delay, chunk))
                if not chunk:
                    break
        except (ConnectionError, OSError):
            queue.put_nowait((time.monotonic(), b""))
        await sender

    def close(self):
        def stop():
            self._server.close()
            self._loop.stop()
        self._loop.call_soon_threadsafe(stop)
        self._thread.join(10)
