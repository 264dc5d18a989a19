#!/usr/bin/env python3
"""A tiny stand-in for `sabha serve`, built on aiortc, for developing the e2e
driver while the real server is not ready. It is NOT used by `cargo test`.

It implements just enough of Sabha's HTTP interface (rooms, tokens,
WHIP/WHEP/join, DELETE, problem+json errors, /healthz) and a 20 ms mixer
(program mix for listeners, mix-minus for /join talkers) so every driver
scenario can be run against it:

    python mock_sabha.py --http 127.0.0.1:18080 --key K --max-seconds 300 &
    python sabha_e2e.py rally --base http://127.0.0.1:18080 --key K --listeners 5

Optional faults, to check that the driver notices them:
  --fault self-echo     /join talkers also hear themselves
  --fault no-audio      listeners receive digital silence
  --fault shift-hz      publishers' audio is pitched up ~8 % (wrong frequency)
"""
import argparse
import asyncio
import fractions
import json
import os
import secrets
import sys
import time
from collections import deque

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sabha_e2e as e2e  # noqa: E402  (loopback ICE patch, frame_to_mono)
from aiortc import MediaStreamTrack, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import MediaStreamError  # noqa: E402
from av import AudioFrame  # noqa: E402

ROOMS, TOKENS, SESSIONS = {}, {}, {}
ARGS = None


class OutTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self):
        super().__init__()
        self.q = asyncio.Queue(maxsize=10)
        self.pts = 0

    def push(self, x):
        if self.q.full():
            self.q.get_nowait()
        self.q.put_nowait(x)

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        x = await self.q.get()
        pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
        f = AudioFrame(format="s16", layout="mono", samples=len(pcm))
        f.planes[0].update(pcm.tobytes())
        f.sample_rate = e2e.RATE
        f.pts = self.pts
        f.time_base = fractions.Fraction(1, e2e.RATE)
        self.pts += len(pcm)
        return f


class Session:
    def __init__(self, sid, room, kind):
        self.sid, self.room, self.kind = sid, room, kind
        self.pc = e2e.make_pc()
        self.inq = deque(maxlen=10)
        self.out = OutTrack() if kind in ("whep", "join") else None
        self.reader = None


async def read_track(sess, track):
    while True:
        try:
            frame = await track.recv()
        except (MediaStreamError, asyncio.CancelledError):
            return
        x = e2e.frame_to_mono(frame)
        if "shift-hz" in ARGS.fault:
            x = np.interp(np.arange(len(x)) * 1.08, np.arange(len(x)), x)
        sess.inq.append(x)


async def mixer():
    t0 = time.monotonic()
    n = 0
    while True:
        n += 1
        await asyncio.sleep(max(0.0, t0 + n * 0.02 - time.monotonic()))
        for room in ROOMS.values():
            sess = [SESSIONS[s] for s in room["sessions"] if s in SESSIONS]
            contrib = {}
            for s in sess:
                if s.kind in ("whip", "join"):
                    contrib[s.sid] = s.inq.popleft() if s.inq else np.zeros(e2e.FRAME)
            total = sum(contrib.values()) if contrib else np.zeros(e2e.FRAME)
            for s in sess:
                if s.out is None:
                    continue
                if s.kind == "join" and "self-echo" not in ARGS.fault:
                    s.out.push(total - contrib.get(s.sid, 0.0))
                elif "no-audio" in ARGS.fault:
                    s.out.push(np.zeros(e2e.FRAME))
                else:
                    s.out.push(total)


def problem(status, title, detail=""):
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    return status, {"Content-Type": "application/problem+json"}, body.encode()


def bearer(headers):
    h = headers.get("authorization", "")
    return h[7:].strip() if h.lower().startswith("bearer ") else None


async def handle(method, path, headers, body):
    parts = [p for p in path.split("?")[0].split("/") if p]
    if method == "GET" and parts == ["healthz"]:
        return 200, {"Content-Type": "text/plain"}, b"ok"
    if method == "POST" and parts == ["v1", "rooms"]:
        if bearer(headers) != ARGS.key:
            return problem(401, "Unauthorized", "operator key required")
        try:
            req = json.loads(body)
            name, kind = req["name"], req["kind"]
            assert kind in ("rally", "bridge")
        except (ValueError, KeyError, TypeError, AssertionError) as e:
            return problem(400, "Bad request", f"invalid room JSON: {e}")
        rid = secrets.token_hex(6)
        ROOMS[rid] = {"id": rid, "name": name, "kind": kind, "created_at": int(time.time()),
                      "sessions": set()}
        out = {k: v for k, v in ROOMS[rid].items() if k != "sessions"}
        return 201, {"Content-Type": "application/json"}, json.dumps(out).encode()
    if method == "POST" and len(parts) == 4 and parts[:2] == ["v1", "rooms"] and parts[3] == "tokens":
        if bearer(headers) != ARGS.key:
            return problem(401, "Unauthorized", "operator key required")
        if parts[2] not in ROOMS:
            return problem(404, "Room not found")
        req = json.loads(body)
        tok = "mock" + secrets.token_hex(12)
        exp = time.time() + req.get("ttl_s", 3600)
        TOKENS[tok] = (parts[2], req["role"], exp)
        return 201, {"Content-Type": "application/json"}, json.dumps(
            {"token": tok, "expires_at": int(exp)}).encode()
    if method == "POST" and len(parts) == 4 and parts[:2] == ["v1", "rooms"] and parts[3] in ("whip", "whep", "join"):
        return await offer(parts[2], parts[3], headers, body)
    if method == "DELETE" and len(parts) == 3 and parts[:2] == ["v1", "sessions"]:
        s = SESSIONS.pop(parts[2], None)
        if s is None:
            return problem(404, "Session not found")
        ROOMS[s.room]["sessions"].discard(s.sid)
        if s.reader:
            s.reader.cancel()
        await s.pc.close()
        return 204, {}, b""
    return problem(404, "Not found", path)


async def offer(rid, kind, headers, body):
    if len(body) > 64 * 1024:
        return problem(413, "Payload too large", "SDP offers are limited to 64 KiB")
    if not headers.get("content-type", "").startswith("application/sdp"):
        return problem(415, "Unsupported media type", "use Content-Type: application/sdp")
    if rid not in ROOMS:
        return problem(404, "Room not found")
    t = TOKENS.get(bearer(headers) or "")
    if t is None or t[2] < time.time():
        return problem(401, "Invalid or expired token")
    allowed = {"whip": ("host", "speaker"), "whep": ("host", "speaker", "listener", "participant"),
               "join": ("participant", "host", "speaker")}[kind]
    if t[0] != rid or t[1] not in allowed:
        return problem(403, "Forbidden", f"role {t[1]} may not use {kind}")
    sdp = body.decode("utf-8", "replace")
    if not sdp.startswith("v=0") or "m=audio" not in sdp:
        return problem(400, "Malformed SDP", "not an SDP offer with an audio section")
    if "opus/48000" not in sdp.lower():
        return problem(406, "No Opus", "the offer must include opus/48000/2")
    sid = secrets.token_hex(8)
    s = Session(sid, rid, kind)

    @s.pc.on("track")
    def _on_track(track):
        if kind in ("whip", "join"):
            s.reader = asyncio.ensure_future(read_track(s, track))

    await s.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
    if s.out is not None:
        s.pc.addTrack(s.out)
    await s.pc.setLocalDescription(await s.pc.createAnswer())
    SESSIONS[sid] = s
    ROOMS[rid]["sessions"].add(sid)
    return 201, {"Content-Type": "application/sdp", "Location": f"/v1/sessions/{sid}"}, \
        s.pc.localDescription.sdp.encode()


REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 406: "Not Acceptable", 413: "Payload Too Large",
           415: "Unsupported Media Type", 500: "Internal Server Error"}


async def serve_conn(reader, writer):
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(n), 10) if n else b""
        try:
            status, hdrs, out = await handle(method, path, headers, body)
        except Exception as e:  # noqa: BLE001
            status, hdrs, out = problem(500, "Internal error", repr(e))
        resp = [f"HTTP/1.1 {status} {REASONS.get(status, 'X')}", f"Content-Length: {len(out)}",
                "Connection: close"] + [f"{k}: {v}" for k, v in hdrs.items()]
        writer.write(("\r\n".join(resp) + "\r\n\r\n").encode() + out)
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", default="127.0.0.1:18080")
    ap.add_argument("--key", default=os.environ.get("SABHA_OPERATOR_KEY", "k"))
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument("--fault", action="append", default=[])
    ARGS = ap.parse_args()
    host, port = ARGS.http.rsplit(":", 1)
    assert e2e.is_loopback(host), "loopback only"
    server = await asyncio.start_server(serve_conn, host, int(port))
    mix = asyncio.ensure_future(mixer())
    print(f"mock sabha on http://{ARGS.http} faults={ARGS.fault}", file=sys.stderr, flush=True)
    try:
        await asyncio.sleep(ARGS.max_seconds)
    finally:
        mix.cancel()
        server.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    os._exit(0)
