"""Python `websockets` client peer.

Connects to scenario["url"], runs scenario["steps"] and reports what it saw
as JSON lines. See ../README.md for the protocol. Run with /usr/bin/python3.
"""

import asyncio
import sys

import ebbpeer
from ebbpeer import report


async def main():
    sc = ebbpeer.read_scenario()
    ebbpeer.watchdog(sc.get("timeout", 60))
    try:
        ws = await ebbpeer.websockets.connect(
            sc["url"],
            subprotocols=sc.get("subprotocols") or None,
            compression=None,
            extensions=ebbpeer.client_extensions(sc.get("compression")),
            max_size=ebbpeer.MAX_SIZE,
            ping_interval=None,
            open_timeout=10,
            close_timeout=10,
            extra_headers=sc.get("headers") or None,
        )
    except Exception as err:  # any handshake failure is reported, not raised
        event = {"event": "handshake_error", "error": str(err)}
        status = getattr(err, "status_code", None)
        if status is not None:
            event["status"] = status
        report(event)
        return 1
    answered = ws.response_headers.get("Sec-WebSocket-Extensions", "")
    report({"event": "open", "subprotocol": ws.subprotocol or "", "extensions": answered})
    missing = [n for n in sc.get("require", []) if n not in ebbpeer.extension_names(answered)]
    if missing:
        # What a client that requires an extension must do (RFC 6455 §7.4.1):
        # close with 1010 and list what is missing in the reason.
        report({"event": "required_missing", "missing": missing})
        await ws.close(1010, "missing extension: " + ", ".join(missing))
        await ws.wait_closed()
        report(ebbpeer.closed_event(ws))
        return 0
    await ebbpeer.run_steps(ws, sc.get("steps", []))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
