"""Python `websockets` server peer.

Listens on 127.0.0.1:scenario["port"] (0 = any free port), reports
{"event":"listening","port":N}, serves one connection by running
scenario["steps"] (default: echo until the client closes) and exits.
See ../README.md for the protocol. Run with /usr/bin/python3.
"""

import asyncio
import sys

import ebbpeer
from ebbpeer import report


async def main():
    sc = ebbpeer.read_scenario()
    ebbpeer.watchdog(sc.get("timeout", 60))
    done = asyncio.get_running_loop().create_future()
    served = False

    async def handler(ws, path):
        nonlocal served
        if served:
            await ws.close(1013, "this peer serves one connection per run")
            return
        served = True
        try:
            report(
                {
                    "event": "open",
                    "subprotocol": ws.subprotocol or "",
                    "extensions": ws.response_headers.get("Sec-WebSocket-Extensions", ""),
                    "offered": ws.request_headers.get("Sec-WebSocket-Extensions", ""),
                }
            )
            await ebbpeer.run_steps(ws, sc.get("steps") or [{"op": "echo"}])
        finally:
            if not done.done():
                done.set_result(None)

    async with ebbpeer.websockets.serve(
        handler,
        "127.0.0.1",
        sc.get("port", 0),
        subprotocols=sc.get("subprotocols") or None,
        compression=None,
        extensions=ebbpeer.server_extensions(sc.get("compression")),
        max_size=ebbpeer.MAX_SIZE,
        ping_interval=None,
        close_timeout=10,
    ) as server:
        report({"event": "listening", "port": server.sockets[0].getsockname()[1]})
        await done
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
