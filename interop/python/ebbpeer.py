"""Shared parts of the Python `websockets` peer.

Scenario parsing, deterministic payloads, the step runner and the JSON-lines
report. The protocol is described in ../README.md; the Node peer implements
the same one. Written for the websockets 10.x legacy asyncio API shipped by
Debian (python3-websockets); run it with /usr/bin/python3.
"""

import asyncio
import hashlib
import json
import os
import struct
import sys

import websockets
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Close

TEXT_UNIT = "ebb-ws-\u20ac-".encode("utf-8")
MAX_SIZE = 64 << 20


def report(event):
    """Write one event as a JSON line on stdout."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def read_scenario():
    """Take the scenario from argv[1] or, when absent, from stdin."""
    text = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    try:
        return json.loads(text)
    except ValueError as err:
        sys.stderr.write(
            f"peer: scenario is not valid JSON ({err}); pass it as the first argument or on stdin\n"
        )
        sys.exit(2)


def payload(kind, size):
    """Return the deterministic message the Go tests and the Node peer agree on."""
    if kind == "binary":
        return bytes(i % 251 for i in range(251)) * (size // 251) + bytes(
            i % 251 for i in range(size % 251)
        )
    unit = TEXT_UNIT
    buf = bytearray(unit * (size // len(unit)) + unit[: size % len(unit)])
    # Do not end inside the 3-byte euro sign: replace a cut sequence with dots.
    if size >= 1 and buf[-1] == 0xE2:
        buf[-1] = 0x2E
    if size >= 2 and buf[-2] == 0xE2 and buf[-1] == 0x82:
        buf[-2:] = b".."
    return bytes(buf)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def _deflate_kwargs(c):
    kw = {}
    for key in ("server_no_context_takeover", "client_no_context_takeover"):
        if c.get(key):
            kw[key] = True
    if c.get("server_max_window_bits"):
        kw["server_max_window_bits"] = c["server_max_window_bits"]
    return kw


def client_extensions(c):
    """Map the scenario's compression object to a client offer (None = off)."""
    if c is None:
        return []
    kw = _deflate_kwargs(c)
    cmwb = c.get("client_max_window_bits", True)
    kw["client_max_window_bits"] = True if cmwb is None else cmwb
    return [ClientPerMessageDeflateFactory(**kw)]


def server_extensions(c):
    """Map the scenario's compression object to what the server accepts."""
    if c is None:
        return []
    kw = _deflate_kwargs(c)
    if c.get("client_max_window_bits") not in (None, True):
        kw["client_max_window_bits"] = c["client_max_window_bits"]
    return [ServerPerMessageDeflateFactory(**kw)]


def report_message(msg):
    if isinstance(msg, str):
        data = msg.encode("utf-8")
        kind = "text"
    else:
        data = bytes(msg)
        kind = "binary"
    report({"event": "message", "type": kind, "size": len(data), "sha256": sha256(data)})


def _fragments(data, kind, frag):
    if kind == "binary":
        return [data[i : i + frag] for i in range(0, len(data), frag)]
    # websockets sends text fragments as str, so cut at character boundaries:
    # move each cut back over UTF-8 continuation bytes (0b10xxxxxx).
    out, start = [], 0
    while start < len(data):
        end = min(start + frag, len(data))
        while end < len(data) and end > start + 1 and data[end] & 0xC0 == 0x80:
            end -= 1
        out.append(data[start:end].decode("utf-8"))
        start = end
    return out


async def _drain(ws):
    while True:
        try:
            msg = await ws.recv()
        except ConnectionClosed:
            return
        report_message(msg)


async def run_steps(ws, steps):
    """Execute steps on an open connection, then report how it closed."""
    try:
        for step in steps:
            op = step.get("op")
            if op == "send":
                data = payload(step["type"], step["size"])
                frag = step.get("fragment") or 0
                msg = data if step["type"] == "binary" else data.decode("utf-8")
                if frag <= 0 or len(data) <= frag:
                    await ws.send(msg)
                else:
                    await ws.send(_fragments(data, step["type"], frag))
            elif op == "expect":
                report_message(await ws.recv())
            elif op == "echo":
                n, count = 0, step.get("count")
                while count is None or n < count:
                    msg = await ws.recv()
                    report_message(msg)
                    await ws.send(msg)
                    n += 1
            elif op == "ping":
                waiter = await ws.ping(step.get("data", "").encode("utf-8"))
                await waiter
                report({"event": "pong", "data": step.get("data", "")})
            elif op == "close":
                await ws.close(step["code"], step.get("reason", ""))
            elif op == "raw_close":
                # Bypass Close.serialize(), which refuses invalid codes.
                reason = step.get("reason", "").encode("utf-8")
                raw = struct.pack("!H", step["code"]) + reason
                await ws.write_close_frame(Close(1000, ""), raw)
            elif op == "wait_close":
                await _drain(ws)
            else:
                report({"event": "error", "error": f"unknown step op {op!r}"})
                ws.transport.abort()
                break
        await _drain(ws)
    except ConnectionClosed:
        pass
    await ws.wait_closed()
    report(closed_event(ws))


def closed_event(ws):
    """The code and reason received from the peer (1005 none, 1006 abnormal)."""
    code = ws.close_code
    return {"event": "closed", "code": 1006 if code is None else code, "reason": ws.close_reason or ""}


def extension_names(header):
    return [e.split(";")[0].strip() for e in (header or "").split(",") if e.strip()]


def watchdog(seconds):
    """End the process if a scenario hangs, so the Go tests cannot stall."""

    def fire():
        report({"event": "error", "error": f"peer: scenario did not finish within {seconds}s"})
        os._exit(3)

    asyncio.get_running_loop().call_later(seconds, fire)


__all__ = [
    "websockets",
    "report",
    "read_scenario",
    "payload",
    "sha256",
    "client_extensions",
    "server_extensions",
    "run_steps",
    "closed_event",
    "extension_names",
    "watchdog",
    "MAX_SIZE",
]
