#!/usr/bin/env python3
"""Sabha end-to-end driver: drives a running `sabha serve` through aiortc.

aiortc is a WebRTC stack the Sabha team did not write, so these scenarios test
the server's signalling (WHIP / WHEP / join over HTTP) and its media path
(ICE-lite, DTLS-SRTP, Opus, mixing) against an independent implementation.

Subcommands (each prints exactly one JSON report line on stdout):
  selftest     no server needed: tone-analysis checks on synthetic signals and
               an aiortc-to-aiortc loopback through the real Opus codec
  rally        1 WHIP publisher + N WHEP listeners + 1 late listener
  bridge       K /join talkers, mix-minus check (hear others, not yourself)
  bad-input    a barrage of bad HTTP requests and garbage UDP while a publisher
               and a listener are live; errors must be problem+json and the
               listener must keep hearing the tone
  leave-rejoin publisher leaves, listener stays, a new publisher with another
               tone arrives and is heard within ~1 s
  loudest      6 /join talkers at distinct levels: only the 4 loudest are
               mixed (mix-minus for them, the program for the rest); the
               loudest is muted over REST (nobody hears it, the 5th enters),
               then unmuted (heard again)

Exit codes: 0 pass, 1 an audio/behaviour check failed, 2 HTTP/signalling
failure (non-2xx where success was expected, missing headers, ICE/DTLS never
connected, overall timeout) or bad arguments.

All traffic goes to the server named by --base (which must be loopback) and
aiortc is restricted to host candidates on 127.0.0.1 with no STUN/TURN.
"""

import argparse
import asyncio
import base64
import fractions
import http.client
import ipaddress
import json
import logging
import os
import random
import socket
import struct
import sys
import time
import urllib.parse
from collections import deque

import numpy as np

import aioice.ice
from aiortc import (RTCConfiguration, RTCPeerConnection, RTCRtpSender,
                    RTCSessionDescription, MediaStreamTrack)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcicetransport import RTCIceGatherer
from aiortc.rtcdtlstransport import (SRTP_AEAD_AES_128_GCM, SRTP_AEAD_AES_256_GCM,
                                     SRTP_AES128_CM_SHA1_80)
from av import AudioFrame

LOG = logging.getLogger("sabha_e2e")
RATE = 48000
FRAME = 960  # 20 ms at 48 kHz

EXIT_OK, EXIT_CHECK, EXIT_SIGNAL = 0, 1, 2


# ---------------------------------------------------------------------------
# Loopback-only ICE.
# aioice leaves 127.0.0.1 out of its host candidates and aiortc falls back to
# a public STUN server when no ICE servers are configured. Both are wrong for
# a loopback test, so every peer in this process gathers exactly one host
# candidate on 127.0.0.1 and never talks to STUN/TURN.
# ---------------------------------------------------------------------------
def _loopback_addresses(use_ipv4=True, use_ipv6=True):
    return ["127.0.0.1"] if use_ipv4 else []


aioice.ice.get_host_addresses = _loopback_addresses
RTCIceGatherer.getDefaultIceServers = classmethod(lambda cls: [])


def make_pc():
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def is_loopback(addr):
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def loopback_only_sdp(sdp):
    """Drop remote ICE candidates that are not on 127.0.0.0/8 so this client
    never sends a check anywhere but loopback. Returns (sdp, dropped_lines)."""
    kept, dropped = [], []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            addr = parts[4] if len(parts) > 5 else ""
            if not is_loopback(addr):
                dropped.append(line)
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", dropped


def answer_candidates(sdp):
    """[(ip, port, type)] of the a=candidate lines of an SDP."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            p = line.split()
            if len(p) >= 8:
                out.append((p[4], int(p[5]), p[7]))
    return out


# ---------------------------------------------------------------------------
# Tone analysis (pure numpy, unit-checked by `selftest`)
# ---------------------------------------------------------------------------
def db(x):
    return 20.0 * float(np.log10(max(float(x), 1e-12)))


def rms_dbfs(x):
    if len(x) == 0:
        return -240.0
    return db(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def spectrum(x, rate=RATE):
    """Hann-windowed amplitude spectrum; a sine of amplitude A reads ~A at its bin."""
    x = np.asarray(x, dtype=np.float64)
    w = np.hanning(len(x))
    amp = 2.0 * np.abs(np.fft.rfft(x * w)) / max(w.sum(), 1e-12)
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    return freqs, amp


def dominant_hz(freqs, amp, fmin=50.0, fmax=None):
    """Frequency of the strongest bin in [fmin, fmax], refined by a parabola
    through the log magnitudes of the peak and its neighbours."""
    if fmax is None:
        fmax = freqs[-1]
    idx = np.nonzero((freqs >= fmin) & (freqs <= fmax))[0]
    if len(idx) == 0:
        return 0.0
    k = int(idx[np.argmax(amp[idx])])
    if 0 < k < len(amp) - 1:
        a, b, c = (np.log(max(amp[j], 1e-15)) for j in (k - 1, k, k + 1))
        den = a - 2 * b + c
        delta = 0.5 * (a - c) / den if den != 0 else 0.0
    else:
        delta = 0.0
    return float(freqs[k] + delta * (freqs[1] - freqs[0]))


def level_at(freqs, amp, f, tol):
    """(level dB, peak Hz) of the strongest bin within f +- tol."""
    sel = np.nonzero(np.abs(freqs - f) <= tol)[0]
    if len(sel) == 0:
        return -240.0, 0.0
    k = int(sel[np.argmax(amp[sel])])
    return db(amp[k]), float(freqs[k])


def local_floor_db(freqs, amp, f, exclude, inner=10.0, outer=60.0):
    """Median bin level 10..60 Hz either side of f (other tones +-10 Hz left
    out): how far a line at f stands out of the noise right around it."""
    d = np.abs(freqs - f)
    mask = (d >= inner) & (d <= outer)
    for g in exclude:
        if g != f:
            mask &= np.abs(freqs - g) > inner
    if not mask.any():
        return -240.0
    return db(np.median(amp[mask]))


def noise_floor_db(freqs, amp, exclude, lo=50.0, hi=4000.0, guard=25.0):
    """Median bin level in [lo, hi] with +-guard Hz around each `exclude` removed."""
    mask = (freqs >= lo) & (freqs <= hi)
    for f in exclude:
        mask &= np.abs(freqs - f) > guard
    if not mask.any():
        return -240.0
    return db(np.median(amp[mask]))


def analyse_tone(x, expect_hz, tol_hz=5.0, min_rms_dbfs=-40.0, min_snr_db=20.0,
                 rate=RATE):
    """Single-tone check used by rally / bad-input / leave-rejoin listeners."""
    x = np.asarray(x, dtype=np.float64)
    res = {"window_s": round(len(x) / rate, 3)}
    if len(x) < rate // 2:
        res.update(ok=False, reason=f"only {len(x) / rate:.2f} s of decoded audio")
        return res
    freqs, amp = spectrum(x, rate)
    dom = dominant_hz(freqs, amp)
    lvl, _ = level_at(freqs, amp, expect_hz, tol_hz)
    floor = noise_floor_db(freqs, amp, [expect_hz])
    peak = float(np.max(np.abs(x)))
    clipped = float(np.mean(np.abs(x) >= 0.999))
    r = rms_dbfs(x)
    res.update(dominant_hz=round(dom, 2), rms_dbfs=round(r, 2), peak=round(peak, 4),
               clipped_fraction=clipped, tone_dbfs=round(lvl, 2),
               snr_db=round(lvl - floor, 1))
    reasons = []
    if abs(dom - expect_hz) > tol_hz:
        reasons.append(f"dominant {dom:.1f} Hz, expected {expect_hz}+-{tol_hz} Hz")
    if r < min_rms_dbfs:
        reasons.append(f"RMS {r:.1f} dBFS below {min_rms_dbfs} dBFS")
    if clipped > 0.001 or r > -1.0:
        reasons.append(f"clipping: peak {peak:.3f}, {clipped * 100:.2f}% of samples at full scale")
    if lvl - floor < min_snr_db:
        reasons.append(f"tone only {lvl - floor:.1f} dB above the noise floor (< {min_snr_db})")
    res["ok"] = not reasons
    if reasons:
        res["reason"] = "; ".join(reasons)
    return res


def analyse_mix_minus(x, own_hz, other_hz, tol_hz=8.0, min_snr_db=20.0,
                      min_other_dbfs=-60.0, min_self_below_db=30.0, absent_hz=(),
                      min_prominence_db=None, rate=RATE):
    """Bridge check: every tone in other_hz is a clear peak (>= min_snr_db over
    the median floor, >= min_other_dbfs) and own_hz is >= min_self_below_db
    below the weakest other tone. own_hz=None skips the self check. Each tone
    in absent_hz (talkers that must not be mixed) must be min_self_below_db
    below the weakest other tone too, unless min_prominence_db is set and the
    tone stands less than that above its local floor (codec noise, no line)."""
    x = np.asarray(x, dtype=np.float64)
    res = {"window_s": round(len(x) / rate, 3)}
    if len(x) < rate // 2:
        res.update(ok=False, reason=f"only {len(x) / rate:.2f} s of decoded audio")
        return res
    freqs, amp = spectrum(x, rate)
    tones = list(other_hz) + ([own_hz] if own_hz is not None else []) + list(absent_hz)
    floor = noise_floor_db(freqs, amp, tones)
    res.update(rms_dbfs=round(rms_dbfs(x), 2), noise_floor_dbfs=round(floor, 1),
               peak=round(float(np.max(np.abs(x))), 4))
    reasons, others = [], {}
    for f in other_hz:
        lvl, pk = level_at(freqs, amp, f, tol_hz)
        present = lvl - floor >= min_snr_db and lvl >= min_other_dbfs
        others[str(f)] = {"level_dbfs": round(lvl, 1), "snr_db": round(lvl - floor, 1),
                          "peak_hz": round(pk, 2), "present": present}
        if not present:
            reasons.append(f"other talker's {f} Hz missing ({lvl:.1f} dBFS, "
                           f"{lvl - floor:.1f} dB over floor)")
    res["others"] = others
    if own_hz is not None:
        lvl, pk = level_at(freqs, amp, own_hz, tol_hz)
        weakest = min((o["level_dbfs"] for o in others.values()), default=-240.0)
        rel = lvl - weakest
        prom = lvl - local_floor_db(freqs, amp, own_hz, tones)
        res["self"] = {"hz": own_hz, "level_dbfs": round(lvl, 1), "snr_db": round(lvl - floor, 1),
                       "rel_db": round(rel, 1), "peak_hz": round(pk, 2),
                       "prominence_db": round(prom, 1)}
        if rel > -min_self_below_db and (min_prominence_db is None or prom >= min_prominence_db):
            reasons.append(f"hears itself: own {own_hz} Hz only {-rel:.1f} dB below the "
                           f"weakest other tone (need >= {min_self_below_db} dB)")
    if absent_hz:
        weakest = min((o["level_dbfs"] for o in others.values()), default=-240.0)
        res["absent"] = {}
        for f in absent_hz:
            lvl, pk = level_at(freqs, amp, f, tol_hz)
            rel = lvl - weakest
            prom = lvl - local_floor_db(freqs, amp, f, tones)
            res["absent"][str(f)] = {"level_dbfs": round(lvl, 1), "snr_db": round(lvl - floor, 1),
                                     "rel_db": round(rel, 1), "peak_hz": round(pk, 2),
                                     "prominence_db": round(prom, 1)}
            # a talker's tone is a sharp line; codec noise near the mixed
            # tones is not, and may come within 30 dB of a quiet one
            if rel > -min_self_below_db and (min_prominence_db is None or prom >= min_prominence_db):
                reasons.append(f"hears {f} Hz, which must not be in its mix, only {-rel:.1f} dB "
                               f"below the weakest expected tone (need >= {min_self_below_db} dB)")
    if float(np.mean(np.abs(x) >= 0.999)) > 0.001:
        reasons.append("clipping")
    res["ok"] = not reasons
    if reasons:
        res["reason"] = "; ".join(reasons)
    return res


def first_detection(frames, expect_hz, t_from, win_frames=5, tol_hz=15.0,
                    min_rms_dbfs=-40.0, rate=RATE):
    """frames: [(arrival_t, samples)]. Earliest arrival time (of the last frame
    of a sliding window of win_frames frames, all arrived after t_from) at which
    the window's dominant frequency is expect_hz +- tol_hz with a sane level."""
    fs = [(t, x) for (t, x) in frames if t >= t_from]
    for i in range(0, max(0, len(fs) - win_frames + 1)):
        x = np.concatenate([s for _, s in fs[i:i + win_frames]])
        if rms_dbfs(x) < min_rms_dbfs:
            continue
        freqs, amp = spectrum(x, rate)
        if abs(dominant_hz(freqs, amp) - expect_hz) <= tol_hz:
            return fs[i + win_frames - 1][0]
    return None


# ---------------------------------------------------------------------------
# Media source: a real-time paced sine (or sum of sines) as 20 ms mono frames
# ---------------------------------------------------------------------------
class SineSource(MediaStreamTrack):
    kind = "audio"

    def __init__(self, freqs, amplitude):
        super().__init__()
        self.freqs = [float(f) for f in (freqs if isinstance(freqs, (list, tuple)) else [freqs])]
        self.amplitude = float(amplitude)
        self.sent_frames = 0
        self._t0 = None

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        due = self._t0 + self.sent_frames * FRAME / RATE
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        n = np.arange(self.sent_frames * FRAME, (self.sent_frames + 1) * FRAME, dtype=np.float64)
        sig = np.zeros(FRAME)
        for f in self.freqs:
            sig += np.sin(2.0 * np.pi * f * n / RATE)
        pcm = np.clip(np.round(sig * self.amplitude * 32767.0), -32768, 32767).astype("<i2")
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate = RATE
        frame.pts = self.sent_frames * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        self.sent_frames += 1
        return frame


def frame_to_mono(frame):
    """Decoded av.AudioFrame -> float64 mono in [-1, 1]."""
    arr = frame.to_ndarray()
    nch = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = arr.reshape(nch, -1).astype(np.float64).mean(axis=0)
    else:
        mono = arr.reshape(-1, nch).astype(np.float64).mean(axis=1)
    if frame.format.name.startswith("s16"):
        mono /= 32768.0
    elif frame.format.name.startswith("s32"):
        mono /= 2147483648.0
    return mono


# ---------------------------------------------------------------------------
# HTTP (stdlib only, run in worker threads)
# ---------------------------------------------------------------------------
class SignalError(Exception):
    """HTTP / signalling failure -> exit code 2."""


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name):
        return self.headers.get(name.lower(), "")

    def text(self):
        return self.body.decode("utf-8", "replace")

    def short(self, n=300):
        return f"{self.status} {self.header('content-type')!r} {self.text()[:n]!r}"


def _http_blocking(base, method, path, body, headers, timeout):
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        return Resp(r.status, hdrs, data)
    finally:
        conn.close()


async def http_call(base, method, path, body=None, headers=None, timeout=10.0):
    return await asyncio.to_thread(_http_blocking, base, method, path, body, headers, timeout)


class Api:
    def __init__(self, base, key):
        u = urllib.parse.urlsplit(base)
        if not u.hostname or not ipaddress.ip_address(socket.gethostbyname(u.hostname)).is_loopback:
            raise SystemExit(f"--base must be a loopback URL, got {base!r}")
        self.base = base.rstrip("/")
        self.key = key

    def _path(self, path):
        return urllib.parse.urlsplit(self.base).path.rstrip("/") + path

    async def request(self, method, path, body=None, headers=None, timeout=10.0):
        return await http_call(self.base, method, self._path(path), body, headers, timeout)

    async def create_room(self, name, kind):
        r = await self.request("POST", "/v1/rooms", json.dumps({"name": name, "kind": kind}).encode(),
                               {"Content-Type": "application/json",
                                "Authorization": f"Bearer {self.key}"})
        if r.status != 201:
            raise SignalError(f"POST /v1/rooms -> {r.short()}")
        try:
            room = json.loads(r.body)
            room["id"]
        except (ValueError, KeyError, TypeError) as e:
            raise SignalError(f"POST /v1/rooms: bad JSON body {r.text()[:200]!r}: {e}")
        return room

    async def mint(self, room_id, role, name=None, ttl_s=None):
        req = {"role": role}
        if name:
            req["name"] = name
        if ttl_s is not None:
            req["ttl_s"] = ttl_s
        r = await self.request("POST", f"/v1/rooms/{room_id}/tokens", json.dumps(req).encode(),
                               {"Content-Type": "application/json",
                                "Authorization": f"Bearer {self.key}"})
        if r.status not in (200, 201):
            raise SignalError(f"POST /v1/rooms/{room_id}/tokens ({role}) -> {r.short()}")
        try:
            return json.loads(r.body)["token"]
        except (ValueError, KeyError, TypeError) as e:
            raise SignalError(f"token response without token: {r.text()[:200]!r}: {e}")

    def resolve(self, location):
        return urllib.parse.urljoin(self.base + "/", location)


# ---------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------
class Peer:
    """One aiortc RTCPeerConnection in one role:
    'publish' (sendonly tone), 'listen' (recvonly), 'join' (sendrecv tone)."""

    def __init__(self, name, mode, freqs=None, amplitude=0.3, keep_s=12.0, srtp_profile=None):
        self.name, self.mode = name, mode
        self.srtp_profile = srtp_profile
        self.pc = make_pc()
        self.keep_s = keep_s
        self.frames = deque()
        self.decoded_samples = 0
        self.packets = 0
        self.t_created = time.monotonic()
        self.t_post = self.t_answer = self.t_connected = None
        self.t_first_packet = self.t_first_frame = None
        self.states = [(self.t_created, "new")]
        self.session_url = None
        self.token = None
        self.answer_sdp = ""
        self.dropped_candidates = []
        self.source = None
        self._tasks = []
        self._connected = asyncio.Event()
        self._failed = asyncio.Event()
        if mode in ("publish", "join"):
            self.source = SineSource(freqs, amplitude)
            tr = self.pc.addTransceiver(self.source, direction="sendonly" if mode == "publish" else "sendrecv")
        else:
            tr = self.pc.addTransceiver("audio", direction="recvonly")
        self.transceiver = tr
        if srtp_profile:
            # Offer only this DTLS-SRTP profile, so each profile the server
            # protects with is checked by libsrtp (aiortc prefers AES-256-GCM).
            tr.sender.transport._srtp_profiles = [SRTP_PROFILES_BY_NAME[srtp_profile]]
        self._count_packets(tr.receiver)

        @self.pc.on("connectionstatechange")
        def _on_state():
            st = self.pc.connectionState
            self.states.append((time.monotonic(), st))
            if st == "connected" and self.t_connected is None:
                self.t_connected = time.monotonic()
                self._connected.set()
            if st in ("failed", "closed"):
                self._failed.set()

        @self.pc.on("track")
        def _on_track(track):
            if track.kind == "audio" and mode in ("listen", "join"):
                self._tasks.append(asyncio.ensure_future(self._read(track)))

    def _count_packets(self, receiver):
        # Count SRTP-decrypted RTP packets as they reach the receiver (before
        # the jitter buffer), for time-to-first-packet and delivery counts.
        inner = receiver._handle_rtp_packet

        async def counting(packet, arrival_time_ms):
            now = time.monotonic()
            if self.t_first_packet is None:
                self.t_first_packet = now
            self.packets += 1
            return await inner(packet, arrival_time_ms)

        receiver._handle_rtp_packet = counting

    async def _read(self, track):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            except asyncio.CancelledError:
                return
            now = time.monotonic()
            x = frame_to_mono(frame)
            if self.t_first_frame is None:
                self.t_first_frame = now
            self.decoded_samples += len(x)
            self.frames.append((now, x))
            while self.frames and now - self.frames[0][0] > self.keep_s:
                self.frames.popleft()

    # -- signalling -------------------------------------------------------
    async def connect(self, api, path, token, connect_timeout=10.0):
        """Non-trickle offer/answer against POST {path}; waits for ICE+DTLS."""
        self.token = token
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)  # aiortc completes gathering here
        self.t_post = time.monotonic()
        r = await api.request("POST", path, self.pc.localDescription.sdp.encode(),
                              {"Content-Type": "application/sdp",
                               "Authorization": f"Bearer {token}"})
        self.t_answer = time.monotonic()
        if r.status != 201:
            raise SignalError(f"{self.name}: POST {path} -> {r.short()}")
        if not r.header("content-type").lower().startswith("application/sdp"):
            raise SignalError(f"{self.name}: POST {path}: answer Content-Type "
                              f"{r.header('content-type')!r}, expected application/sdp")
        loc = r.header("location")
        if not loc:
            raise SignalError(f"{self.name}: POST {path}: 201 without Location")
        self.session_url = api.resolve(loc)
        self.answer_sdp = r.text()
        sdp, self.dropped_candidates = loopback_only_sdp(self.answer_sdp)
        if self.dropped_candidates:
            LOG.warning("%s: ignoring non-loopback candidates in answer: %s",
                        self.name, self.dropped_candidates)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as e:  # noqa: BLE001 - aiortc raises various types
            raise SignalError(f"{self.name}: aiortc rejected the answer: {e!r}\n{self.answer_sdp}")
        waiter = asyncio.ensure_future(self._connected.wait())
        failer = asyncio.ensure_future(self._failed.wait())
        done, pending = await asyncio.wait({waiter, failer}, timeout=connect_timeout,
                                           return_when=asyncio.FIRST_COMPLETED)
        for p in pending:
            p.cancel()
        if not self._connected.is_set():
            raise SignalError(f"{self.name}: ICE/DTLS not connected {connect_timeout:.0f} s after "
                              f"the answer (state {self.pc.connectionState}); answer was:\n"
                              f"{self.answer_sdp}")

    async def delete(self, api):
        if not self.session_url:
            return None
        path = urllib.parse.urlsplit(self.session_url).path
        try:
            r = await api.request("DELETE", path, headers={"Authorization": f"Bearer {self.token}"},
                                  timeout=5.0)
            return r.status
        except OSError as e:
            LOG.warning("%s: DELETE failed: %s", self.name, e)
            return None

    async def close(self):
        for t in self._tasks:
            t.cancel()
        try:
            await asyncio.wait_for(self.pc.close(), 5.0)
        except Exception as e:  # noqa: BLE001
            LOG.warning("%s: close: %r", self.name, e)

    # -- audio ------------------------------------------------------------
    def last_samples(self, seconds):
        """The most recent `seconds` of decoded audio (by sample count)."""
        need = int(seconds * RATE)
        parts, have = [], 0
        for _, x in reversed(self.frames):
            parts.append(x)
            have += len(x)
            if have >= need:
                break
        if not parts:
            return np.zeros(0)
        return np.concatenate(parts[::-1])[-need:]

    def samples_between(self, t0, t1):
        xs = [x for (t, x) in self.frames if t0 <= t <= t1]
        return np.concatenate(xs) if xs else np.zeros(0)

    def decoded_seconds_since(self, t0):
        return sum(len(x) for (t, x) in self.frames if t >= t0) / RATE

    def rel(self, t):
        return None if t is None or self.t_post is None else round(t - self.t_post, 3)

    def negotiated_srtp_profile(self):
        ssl = getattr(self.transceiver.sender.transport, "_ssl", None)
        selected = ssl.get_selected_srtp_profile() if ssl is not None else None
        return selected.decode() if selected else None

    def summary(self):
        return {
            "name": self.name,
            "srtp_profile": self.negotiated_srtp_profile(),
            "state": self.pc.connectionState,
            "packets": self.packets,
            "decoded_s": round(self.decoded_samples / RATE, 2),
            "answer_s": self.rel(self.t_answer),
            "connected_s": self.rel(self.t_connected),
            "first_packet_s": self.rel(self.t_first_packet),
            "first_frame_s": self.rel(self.t_first_frame),
            "ttfp_after_answer_s": (None if self.t_first_packet is None or self.t_answer is None
                                    else round(self.t_first_packet - self.t_answer, 3)),
            "sent_frames": self.source.sent_frames if self.source else None,
        }


# ---------------------------------------------------------------------------
# Scenario plumbing
# ---------------------------------------------------------------------------
class Run:
    def __init__(self, scenario, args):
        self.scenario = scenario
        self.args = args
        self.t0 = time.monotonic()
        self.report = {"scenario": scenario, "ok": False}
        self.failures = []
        self.peers = []
        self.api = Api(args.base, args.key) if getattr(args, "base", None) else None

    def fail(self, msg):
        LOG.error("CHECK FAILED: %s", msg)
        self.failures.append(msg)

    def peer(self, *a, **kw):
        p = Peer(*a, **kw)
        self.peers.append(p)
        return p

    async def cleanup(self, delete=True):
        if delete and self.api:
            await asyncio.gather(*(p.delete(self.api) for p in self.peers if p.session_url),
                                 return_exceptions=True)
        await asyncio.gather(*(p.close() for p in self.peers), return_exceptions=True)

    def finish(self):
        self.report["failures"] = self.failures
        self.report["ok"] = not self.failures
        self.report["elapsed_s"] = round(time.monotonic() - self.t0, 2)
        return EXIT_OK if not self.failures else EXIT_CHECK


async def open_bounded(coros_factories, concurrency):
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(f):
        async with sem:
            return await f()

    return await asyncio.gather(*(one(f) for f in coros_factories), return_exceptions=True)


def first_exception(results):
    for r in results:
        if isinstance(r, BaseException):
            return r
    return None


async def wait_for_audio(peers, seconds, timeout):
    """Wait until each peer has decoded `seconds` of audio (or timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p.decoded_samples >= seconds * RATE for p in peers):
            return True
        await asyncio.sleep(0.1)
    return False


def check_listener(run, p, expect_hz, window_s, tag, now=None):
    """Dominant frequency / level / continuity of a listener's last window.
    Pass one `now` for a batch: the analysis blocks the event loop, so no
    frames arrive while a batch is checked."""
    now = time.monotonic() if now is None else now
    res = analyse_tone(p.last_samples(window_s), expect_hz, tol_hz=run.args.tol_hz,
                       min_rms_dbfs=run.args.min_rms_dbfs)
    res["continuity"] = round(p.decoded_seconds_since(now - window_s) / window_s, 3)
    res.update(p.summary())
    return verdict(run, p, res, window_s, f"{tag} {p.name}", "tone check failed")


def verdict(run, p, res, window_s, who, what_failed):
    """Folds peer p's connection, packets, the analysis in res and the
    continuity of its last window_s into res["ok"], failing the run with
    every problem named."""
    problems = []
    if p.pc.connectionState != "connected":
        problems.append(f"connection state {p.pc.connectionState}")
    if p.packets == 0:
        problems.append("no RTP packets received")
    if not res.get("ok"):
        problems.append(res.get("reason", what_failed))
    if res["continuity"] < 0.75:
        problems.append(f"gaps: only {res['continuity'] * window_s:.2f} s of audio decoded in "
                        f"the last {window_s:.1f} s")
    res["ok"] = not problems
    if problems:
        run.fail(f"{who}: " + "; ".join(problems))
    return res


# ---------------------------------------------------------------------------
# Scenario: rally
# ---------------------------------------------------------------------------
SRTP_PROFILES_BY_NAME = {
    "aes256gcm": SRTP_AEAD_AES_256_GCM,
    "aes128gcm": SRTP_AEAD_AES_128_GCM,
    "aes128cm": SRTP_AES128_CM_SHA1_80,
}


async def scenario_rally(run):
    a = run.args
    room = await run.api.create_room(f"e2e-rally-{os.getpid()}", "rally")
    rid = room["id"]
    run.report["room"] = room
    speaker = await run.api.mint(rid, "speaker", name="e2e-publisher")
    listener_tok = await run.api.mint(rid, "listener", name="e2e-listener")

    pub = run.peer("publisher", "publish", freqs=a.freq, amplitude=a.amplitude)
    await pub.connect(run.api, f"/v1/rooms/{rid}/whip", speaker)
    t_live = pub.t_connected
    LOG.info("publisher connected %.3f s after POST", pub.t_connected - pub.t_post)
    run.report["publisher_candidates"] = answer_candidates(pub.answer_sdp)
    run.report["answer_ice_lite"] = "a=ice-lite" in pub.answer_sdp

    profiles = [p for p in a.srtp_profiles.split(",") if p] if a.srtp_profiles else [None]
    listeners = [run.peer(f"listener-{i}", "listen", keep_s=a.window + 3,
                          srtp_profile=profiles[i % len(profiles)])
                 for i in range(a.listeners)]
    t_open = time.monotonic()
    results = await open_bounded(
        [lambda p=p: p.connect(run.api, f"/v1/rooms/{rid}/whep", listener_tok) for p in listeners],
        a.concurrency)
    err = first_exception(results)
    if err:
        raise err if isinstance(err, SignalError) else SignalError(f"listener setup: {err!r}")
    run.report["listeners_open_s"] = round(time.monotonic() - t_open, 2)
    LOG.info("%d listeners connected in %.2f s", len(listeners), run.report["listeners_open_s"])

    # late listener: joins once the publisher has been live for --late-after s
    wait = t_live + a.late_after - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)
    late = run.peer("late-listener", "listen", keep_s=a.window + 3)
    await late.connect(run.api, f"/v1/rooms/{rid}/whep", listener_tok)
    run.report["late_joined_after_live_s"] = round(late.t_post - t_live, 2)

    # hold: everyone plays for --seconds, and at least the analysis window
    await asyncio.sleep(max(a.seconds, a.window + 0.5))

    run.report["publisher"] = pub.summary()
    t_check = time.monotonic()
    rows = [check_listener(run, p, a.freq, a.window, "listener", t_check) for p in listeners]
    for p, row in zip(listeners, rows):
        wanted = p.srtp_profile and SRTP_PROFILES_BY_NAME[p.srtp_profile].openssl_profile.decode()
        if wanted and row["srtp_profile"] != wanted:
            row["ok"] = False
            run.fail(f"listener {p.name}: negotiated {row['srtp_profile']}, asked for {wanted}")
    late_row = check_listener(run, late, a.freq, a.window, "late listener", t_check)
    ttfp = late_row.get("ttfp_after_answer_s")
    late_row["audio_within_s"] = a.late_max_s
    if ttfp is None or ttfp > a.late_max_s:
        late_row["ok"] = False
        run.fail(f"late listener: first RTP packet {ttfp} s after the answer "
                 f"(limit {a.late_max_s} s)")
    run.report["listeners"] = rows
    run.report["late_listener"] = late_row
    ok_rows = [r for r in rows if r["ok"]]
    ttfps = sorted(r["ttfp_after_answer_s"] for r in rows if r["ttfp_after_answer_s"] is not None)
    run.report["summary"] = {
        "listeners": len(rows),
        "listeners_ok": len(ok_rows),
        "freq_hz": a.freq,
        "dominant_hz_min": min((r.get("dominant_hz", 0) for r in rows), default=None),
        "dominant_hz_max": max((r.get("dominant_hz", 0) for r in rows), default=None),
        "rms_dbfs_min": min((r.get("rms_dbfs", -240) for r in rows), default=None),
        "packets_min": min((r["packets"] for r in rows), default=0),
        "ttfp_after_answer_max_s": ttfps[-1] if ttfps else None,
        "ttfp_after_answer_p50_s": ttfps[len(ttfps) // 2] if ttfps else None,
        "late_ttfp_after_answer_s": ttfp,
    }
    statuses = await asyncio.gather(*(p.delete(run.api) for p in [late] + listeners + [pub]))
    run.report["delete_statuses"] = sorted(set(s for s in statuses if s is not None))
    bad = [s for s in statuses if s != 204]
    if bad:
        run.fail(f"DELETE of sessions returned {sorted(set(map(str, bad)))}, expected 204")
    for p in run.peers:
        p.session_url = None


# ---------------------------------------------------------------------------
# Scenario: bridge (mix-minus)
# ---------------------------------------------------------------------------
def check_talker(run, p, hear_hz, absent_hz, t0, t1, tag=""):
    """Mix-minus check of talker p (p.freq) on the audio that arrived in
    [t0, t1]: it hears every tone in hear_hz, and its own tone and each tone
    in absent_hz are >= --min-self-below-db under the weakest of them. Also
    connection state, packets and continuity. Call it for a batch with the
    same t1: the analysis blocks the event loop."""
    a = run.args
    res = analyse_mix_minus(p.samples_between(t0, t1), p.freq, hear_hz, tol_hz=a.tol_hz,
                            min_snr_db=a.min_snr_db, min_self_below_db=a.min_self_below_db,
                            absent_hz=absent_hz,
                            min_prominence_db=getattr(a, "min_prominence_db", None))
    res["freq_hz"] = p.freq
    res["continuity"] = round(p.decoded_seconds_since(t0) / (t1 - t0), 3) if t1 > t0 else 0.0
    return verdict(run, p, res, t1 - t0, f"{tag}{p.name} ({p.freq:g} Hz)", "mix-minus check failed")


async def scenario_bridge(run):
    a = run.args
    freqs = [float(f) for f in a.freqs.split(",") if f.strip()]
    if len(freqs) != a.talkers:
        raise SystemExit(f"--freqs has {len(freqs)} tones but --talkers is {a.talkers}")
    for i, f in enumerate(freqs):
        for g in freqs[i + 1:]:
            if abs(f - g) < 4 * a.tol_hz + 50:
                raise SystemExit(f"tones {f} and {g} too close together")
    amp = a.amplitude if a.amplitude else min(0.3, 0.8 / max(1, a.talkers - 1))
    room = await run.api.create_room(f"e2e-bridge-{os.getpid()}", "bridge")
    rid = room["id"]
    run.report["room"] = room
    talkers = []
    for i, f in enumerate(freqs):
        tok = await run.api.mint(rid, "participant", name=f"talker-{i}")
        p = run.peer(f"talker-{i}", "join", freqs=f, amplitude=amp, keep_s=a.window + 3)
        p.freq = f
        p.token = tok
        talkers.append(p)
    results = await open_bounded(
        [lambda p=p: p.connect(run.api, f"/v1/rooms/{rid}/join", p.token) for p in talkers],
        a.concurrency)
    err = first_exception(results)
    if err:
        raise err if isinstance(err, SignalError) else SignalError(f"talker setup: {err!r}")
    t_all = time.monotonic()
    await wait_for_audio(talkers, a.window, timeout=a.window + 6)
    await asyncio.sleep(max(0.0, a.seconds - (time.monotonic() - t_all)))

    rows = []
    t_check = time.monotonic()
    for p in talkers:
        others = [f for f in freqs if f != p.freq]
        res = check_talker(run, p, others, [], t_check - a.window, t_check)
        res.update(p.summary())
        rows.append(res)
    run.report["talkers"] = rows
    run.report["summary"] = {
        "talkers": len(rows), "talkers_ok": sum(1 for r in rows if r["ok"]),
        "freqs_hz": freqs, "amplitude": amp,
        "min_other_snr_db": min((o["snr_db"] for r in rows for o in r.get("others", {}).values()),
                                default=None),
        "max_self_rel_db": max((r["self"]["rel_db"] for r in rows if "self" in r), default=None),
    }
    statuses = await asyncio.gather(*(p.delete(run.api) for p in talkers))
    run.report["delete_statuses"] = statuses
    if any(s != 204 for s in statuses):
        run.fail(f"DELETE of talker sessions returned {statuses}, expected 204")
    for p in talkers:
        p.session_url = None


# ---------------------------------------------------------------------------
# Scenario: loudest (only the N loudest talkers are mixed; server-side mute)
# ---------------------------------------------------------------------------
INCUMBENT_BONUS_DB = 6.0  # the server ranks a talker already in the mix this much higher


def session_id(p):
    """The {pid} of a session: the last segment of its Location."""
    return urllib.parse.urlsplit(p.session_url).path.rstrip("/").rsplit("/", 1)[-1]


def amp_db(x, y):
    return round(db(x) - db(y), 1)


async def set_muted(run, rid, p, muted):
    """POST /v1/rooms/{rid}/participants/{pid}/(un)mute with the operator key.
    Returns (report dict, ok); ok None when the endpoint does not exist."""
    action = "mute" if muted else "unmute"
    path = f"/v1/rooms/{rid}/participants/{session_id(p)}/{action}"
    r = await run.api.request("POST", path, headers={"Authorization": f"Bearer {run.api.key}"})
    rec = {"request": f"POST {path}", "status": r.status,
           "content_type": r.header("content-type"), "body": r.text()[:400]}
    # the server says "no such participant" / "no such room" for ids it does
    # not know; any other 404 (e.g. "no such route") or 405: no such endpoint
    known = ("no such participant", "no such room")
    if r.status == 405 or (r.status == 404 and not any(k in r.text().lower() for k in known)):
        rec["error"] = "endpoint missing"
        run.fail(f"{action} endpoint missing: {rec['request']} -> {r.short()}")
        return rec, None
    if r.status != 200:
        run.fail(f"{action} of {p.name}: {rec['request']} -> {r.short()}, expected 200")
        return rec, False
    try:
        body = json.loads(r.body)
        rec["participant"] = body
    except ValueError:
        run.fail(f"{action} of {p.name}: 200 without a JSON body: {r.short()}")
        return rec, False
    if not isinstance(body, dict) or body.get("muted") is not muted or body.get("id") != session_id(p):
        run.fail(f"{action} of {p.name}: participant JSON {body!r} should have "
                 f"id {session_id(p)!r} and muted {muted}")
        return rec, False
    return rec, True


def presence(x, tones, chunk_s=0.1, min_dbfs=-45.0, tol_hz=15.0, rate=RATE):
    """Fraction of chunk_s chunks of x in which each tone reads >= min_dbfs:
    shows a talker flapping in and out of the mix (1.0 = always heard)."""
    n = int(chunk_s * rate)
    chunks = [x[i:i + n] for i in range(0, len(x) - n + 1, n)]
    out = {f"{f:g}": 0 for f in tones}
    for c in chunks:
        freqs, amp = spectrum(c, rate)
        for f in tones:
            if level_at(freqs, amp, f, tol_hz)[0] >= min_dbfs:
                out[f"{f:g}"] += 1
    return {k: round(v / max(1, len(chunks)), 2) for k, v in out.items()}


def check_phase(run, name, talkers, muted, t0, t1):
    """Every talker's audio in [t0, t1] against the mix the server should make:
    the --mixed loudest unmuted talkers. A mixed talker hears the other mixed
    ones; anyone else hears all of them; every other tone (own, unmixed,
    muted) must be --min-self-below-db under the weakest expected tone."""
    n = run.args.mixed
    ranked = [p for p in sorted(talkers, key=lambda p: -p.amp) if p not in muted]
    mixed = ranked[:n]
    rows = []
    flapping = {}
    for p in talkers:
        hear = [q.freq for q in mixed if q is not p]
        # An unmixed (not muted) tone heard in some 100 ms chunks but not most
        # is a brief reshuffle of the mix (a talker's packets stalled on this loaded
        # box): reported, not failed. One heard in most chunks — more than N
        # mixed, an ignored mute — or leaking all along still fails below.
        frac = presence(p.samples_between(t0, t1), [q.freq for q in talkers])
        absent = []
        for q in talkers:
            if q is p or q in mixed:
                continue
            seen = frac.get(f"{q.freq:g}", 0.0)
            if 0.0 < seen < 0.5 and q not in muted:
                flapping[f"{q.freq:g}"] = max(seen, flapping.get(f"{q.freq:g}", 0.0))
            else:
                absent.append(q.freq)
        res = check_talker(run, p, hear, absent, t0, t1, tag=f"{name}: ")
        res["amplitude"] = p.amp
        res["in_mix"] = p in mixed
        res["muted"] = p in muted
        res["packets"] = p.packets
        # every tone's level, and the floor, for a reader (and the Rust harness)
        levels = {}
        for group in (res.get("others", {}), res.get("absent", {})):
            for hz, o in group.items():
                levels[f"{float(hz):g}"] = o["level_dbfs"]
        if "self" in res:
            levels[f"{p.freq:g}"] = res["self"]["level_dbfs"]
            prom_self = res["self"]["prominence_db"]
        res["levels_dbfs"] = levels
        res["prominence_db"] = {f"{float(hz):g}": o["prominence_db"]
                                for hz, o in res.get("absent", {}).items()}
        if "self" in res:
            res["prominence_db"][f"{p.freq:g}"] = prom_self
        res["heard_fraction"] = frac
        rows.append(res)
    present = [o for r in rows for o in r.get("others", {}).values()]
    unwanted = ([r["self"]["rel_db"] for r in rows if "self" in r]
                + [o["rel_db"] for r in rows for o in r.get("absent", {}).values()])
    return {
        "phase": name,
        "window_s": [round(t0 - run.t0, 2), round(t1 - run.t0, 2)],
        "mixed_hz": [q.freq for q in mixed],
        "muted_hz": [q.freq for q in muted],
        "ok": all(r["ok"] for r in rows),
        "min_heard_snr_db": min((o["snr_db"] for o in present), default=None),
        "min_heard_dbfs": min((o["level_dbfs"] for o in present), default=None),
        "max_unwanted_rel_db": max(unwanted, default=None),
        "reshuffled_hz": flapping,
        "talkers": rows,
    }


async def scenario_loudest(run):
    a = run.args
    freqs = [float(f) for f in a.freqs.split(",") if f.strip()]
    amps = [float(x) for x in a.amps.split(",") if x.strip()]
    n = a.mixed
    if len(freqs) != len(amps):
        raise SystemExit(f"--freqs has {len(freqs)} tones but --amps has {len(amps)}")
    if len(freqs) < n + 2:
        raise SystemExit(f"need at least {n + 2} talkers for --mixed {n}")
    for i, f in enumerate(freqs):
        for g in freqs[i + 1:]:
            if abs(f - g) < 4 * a.tol_hz + 50:
                raise SystemExit(f"tones {f} and {g} too close together")
    ranked_amps = sorted(amps, reverse=True)
    if len(set(amps)) != len(amps) or not all(0.0 < x < 1.0 for x in amps):
        raise SystemExit("--amps must be distinct and in (0, 1)")
    if sum(ranked_amps[:n]) > 0.9:
        raise SystemExit(f"the {n} loudest amplitudes sum to {sum(ranked_amps[:n]):.2f}: the mix would clip")
    # Margins the ranking needs, given the server's incumbent bonus:
    # - the N-th loudest beats an unmixed talker that happened to get in first;
    # - the (N+1)-th beats the (N+2)-th when the loudest is muted;
    # - the loudest, unmuted, beats the (N+1)-th, now an incumbent.
    design = {
        "nth_over_next_db": amp_db(ranked_amps[n - 1], ranked_amps[n]),
        "next_over_rest_db": amp_db(ranked_amps[n], ranked_amps[n + 1]),
        "loudest_over_next_incumbent_db": round(
            amp_db(ranked_amps[0], ranked_amps[n]) - INCUMBENT_BONUS_DB, 1),
        "incumbent_bonus_db": INCUMBENT_BONUS_DB,
    }
    run.report["design"] = design
    if design["next_over_rest_db"] < 1.0 or design["loudest_over_next_incumbent_db"] < 1.0:
        raise SystemExit(f"--amps leave too little ranking margin: {design}")

    room = await run.api.create_room(f"e2e-loudest-{os.getpid()}", "bridge")
    rid = room["id"]
    run.report["room"] = room
    keep = max(a.window, a.settle + a.window) + 3
    talkers = []
    for i, (f, x) in enumerate(zip(freqs, amps)):
        tok = await run.api.mint(rid, "participant", name=f"talker-{i}")
        p = run.peer(f"talker-{i}", "join", freqs=f, amplitude=x, keep_s=keep)
        p.freq, p.amp, p.token = f, x, tok
        talkers.append(p)
    # One at a time, loudest first, each already mixed before the next one
    # arrives: the N-th is less than the incumbent bonus above the (N+1)-th,
    # so a quieter talker that started first would keep its place, rightly.
    order = sorted(talkers, key=lambda p: -p.amp)
    for p in order:
        await p.connect(run.api, f"/v1/rooms/{rid}/join", p.token)
        await asyncio.sleep(a.join_gap)
    run.report["sessions"] = {f"{p.freq:g}": session_id(p) for p in talkers}
    t_all = time.monotonic()
    await wait_for_audio(talkers, a.window, timeout=a.window + 6)
    await asyncio.sleep(max(0.0, a.seconds - (time.monotonic() - t_all)))

    phases = []
    t = time.monotonic()
    phases.append(check_phase(run, "all_speaking", talkers, [], t - a.window, t))

    loudest = order[0]
    run.report["muted_talker"] = {"name": loudest.name, "freq_hz": loudest.freq,
                                  "session": session_id(loudest)}
    rec, ok = await set_muted(run, rid, loudest, True)
    run.report["mute"] = rec
    if ok is None:
        run.report["mute_endpoint"] = "missing"
    else:
        run.report["mute_endpoint"] = "present"
        t_mute = time.monotonic()
        await asyncio.sleep(a.settle + a.window)
        t = time.monotonic()
        phases.append(check_phase(run, "loudest_muted", talkers, [loudest], t_mute + a.settle, t))
        rec, ok = await set_muted(run, rid, loudest, False)
        run.report["unmute"] = rec
        t_unmute = time.monotonic()
        await asyncio.sleep(a.settle + a.window)
        t = time.monotonic()
        phases.append(check_phase(run, "unmuted", talkers, [], t_unmute + a.settle, t))
    run.report["phases"] = phases
    run.report["summary"] = {
        "talkers": len(talkers), "mixed": n, "freqs_hz": freqs, "amplitudes": amps,
        "mute_endpoint": run.report["mute_endpoint"],
        "phases": {ph["phase"]: {k: ph[k] for k in ("ok", "mixed_hz", "min_heard_snr_db",
                                                     "min_heard_dbfs", "max_unwanted_rel_db")}
                   for ph in phases},
    }
    statuses = await asyncio.gather(*(p.delete(run.api) for p in talkers))
    run.report["delete_statuses"] = statuses
    if any(s != 204 for s in statuses):
        run.fail(f"DELETE of talker sessions returned {statuses}, expected 204")
    for p in talkers:
        p.session_url = None


# ---------------------------------------------------------------------------
# Scenario: bad input
# ---------------------------------------------------------------------------
def forge_expired(token):
    """Same header and signature, payload with exp in the past: must be refused."""
    try:
        h, p, s = token.split(".")
        pad = "=" * (-len(p) % 4)
        claims = json.loads(base64.urlsafe_b64decode(p + pad))
        claims["exp"] = int(time.time()) - 3600
        p2 = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        return f"{h}.{p2}.{s}"
    except (ValueError, TypeError):
        return token[:-4] + "AAAA"


async def pcmu_only_offer():
    pc = make_pc()
    try:
        tr = pc.addTransceiver("audio", direction="sendonly")
        caps = RTCRtpSender.getCapabilities("audio")
        tr.setCodecPreferences([c for c in caps.codecs if c.mimeType.lower() == "audio/pcmu"])
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def sendonly_offer():
    return await recvonly_offer("sendonly")


async def recvonly_offer(direction="recvonly"):
    pc = make_pc()
    try:
        pc.addTransceiver("audio", direction=direction)
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def ice_ufrag(sdp):
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line.split(":", 1)[1].strip()
    return None


def stun_hijack(rng, username):
    """A STUN Binding request with a session's real ICE username, USE-CANDIDATE
    and a wrong MESSAGE-INTEGRITY, from a foreign address: a server that does
    not verify the integrity would nominate the attacker's address."""
    def attr(t, v):
        return struct.pack("!HH", t, len(v)) + v + b"\x00" * (-len(v) % 4)
    body = (attr(0x0006, username) + attr(0x0024, struct.pack("!I", 0x6E7F1EFF))
            + attr(0x802A, rng.randbytes(8)) + attr(0x0025, b"") + attr(0x0008, rng.randbytes(20)))
    return struct.pack("!HH", 0x0001, len(body)) + b"\x21\x12\xa4\x42" + rng.randbytes(12) + body


def garbage_datagrams(rng, count, usernames=()):
    """(label, payload) list: random bytes, truncated STUN, STUN with bad auth,
    STUN with a real session's username but bad integrity, fake RTP/RTCP,
    fake DTLS records, empty datagrams."""
    out = []
    cookie = b"\x21\x12\xa4\x42"
    for i in range(count):
        kind = i % 9
        if kind == 8:
            if usernames:
                out.append(("stun-real-ufrag-bad-integrity", stun_hijack(rng, usernames[i % len(usernames)])))
                continue
            kind = 0
        if kind == 0:
            out.append(("random", rng.randbytes(rng.randint(1, 1400))))
        elif kind == 1:
            out.append(("stun-truncated", (b"\x00\x01\x00\x50" + cookie + rng.randbytes(12))[:rng.randint(1, 19)]))
        elif kind == 2:
            user = b"nosuchufrag:peer"
            attr = struct.pack("!HH", 0x0006, len(user)) + user + b"\x00" * (-len(user) % 4)
            attr += struct.pack("!HH", 0x0008, 20) + rng.randbytes(20)
            out.append(("stun-bad-auth", struct.pack("!HH", 0x0001, len(attr)) + cookie
                        + rng.randbytes(12) + attr))
        elif kind == 3:
            out.append(("stun-lying-length", struct.pack("!HH", 0x0001, 0xFFF0) + cookie + rng.randbytes(12)))
        elif kind == 4:
            hdr = struct.pack("!BBHII", 0x80, 111, rng.randint(0, 65535), rng.randint(0, 2**32 - 1),
                              rng.randint(0, 2**32 - 1))
            out.append(("rtp", hdr + rng.randbytes(rng.randint(0, 200))))
        elif kind == 5:
            out.append(("rtcp", struct.pack("!BBHI", 0x81, 200, 6, rng.randint(0, 2**32 - 1))
                        + rng.randbytes(rng.randint(0, 60))))
        elif kind == 6:
            body = rng.randbytes(rng.randint(0, 300))
            out.append(("dtls", struct.pack("!BHHIH", 22, 0xFEFD, 0, 0, 0)[:11]
                        + struct.pack("!H", len(body) + 40) + body))
        else:
            out.append(("empty" if i % 16 == 7 else "tiny", b"" if i % 16 == 7 else rng.randbytes(1)))
    return out


async def expect_problem(run, label, resp_coro, want, must_mention=None):
    """Run one bad request; check status in `want` and a problem+json body."""
    row = {"case": label, "want": list(want)}
    try:
        r = await resp_coro
    except OSError as e:
        row.update(ok=False, error=f"{type(e).__name__}: {e}")
        run.fail(f"bad-input {label}: request failed: {e}")
        return row
    row.update(status=r.status, content_type=r.header("content-type"))
    problems = []
    if r.status not in want:
        problems.append(f"status {r.status}, expected {' or '.join(map(str, want))}")
    if not r.header("content-type").lower().startswith("application/problem+json"):
        problems.append(f"Content-Type {r.header('content-type')!r}, expected application/problem+json")
    try:
        body = json.loads(r.body)
    except ValueError:
        body = None
        problems.append(f"body is not JSON: {r.text()[:120]!r}")
    if isinstance(body, dict):
        row["title"] = body.get("title")
        row["detail"] = body.get("detail")
        if not isinstance(body.get("title"), str) or not body["title"].strip():
            problems.append("problem has no non-empty title")
        if "status" in body and body["status"] != r.status:
            problems.append(f"problem status {body['status']} != HTTP {r.status}")
        if must_mention:
            text = f"{body.get('title', '')} {body.get('detail', '')}".lower()
            if must_mention.lower() not in text:
                problems.append(f"title/detail do not mention {must_mention!r}")
    elif body is not None:
        problems.append("problem body is not a JSON object")
    row["ok"] = not problems
    if problems:
        row["problems"] = problems
        run.fail(f"bad-input {label}: " + "; ".join(problems) + f" (got {r.short(200)})")
    return row


async def scenario_bad_input(run):
    a = run.args
    room = await run.api.create_room(f"e2e-bad-{os.getpid()}", "rally")
    rid = room["id"]
    run.report["room"] = room
    speaker = await run.api.mint(rid, "speaker", name="e2e-publisher")
    listener_tok = await run.api.mint(rid, "listener", name="e2e-listener")
    short_tok = await run.api.mint(rid, "speaker", name="e2e-short", ttl_s=1)
    t_short = time.monotonic()

    pub = run.peer("publisher", "publish", freqs=a.freq, amplitude=a.amplitude)
    await pub.connect(run.api, f"/v1/rooms/{rid}/whip", speaker)
    lis = run.peer("listener", "listen", keep_s=20.0)
    await lis.connect(run.api, f"/v1/rooms/{rid}/whep", listener_tok)
    if not await wait_for_audio([lis], a.window, timeout=a.window + 5):
        run.fail(f"listener decoded only {lis.decoded_samples / RATE:.2f} s of audio before the barrage")
    before = check_listener(run, lis, a.freq, a.window, "before barrage:")
    run.report["before"] = before

    good_offer = (await recvonly_offer()).encode()
    opus_pub = (await sendonly_offer()).encode()
    other = await run.api.create_room(f"e2e-bad-other-{os.getpid()}", "rally")
    other_tok = await run.api.mint(other["id"], "listener", name="e2e-other-room")
    pub_offer = (await pcmu_only_offer()).encode()
    media = []
    if a.media_addr:
        host, _, port = a.media_addr.rpartition(":")
        if not is_loopback(host):
            raise SystemExit(f"--media-addr must be on loopback, got {a.media_addr}")
        media.append((host, int(port), "configured"))
    for ip, port, typ in answer_candidates(pub.answer_sdp):
        if is_loopback(ip) and (ip, port) not in [(m[0], m[1]) for m in media]:
            media.append((ip, port, typ))
    whip, whep = f"/v1/rooms/{rid}/whip", f"/v1/rooms/{rid}/whep"

    def sdp_headers(tok, ctype="application/sdp"):
        return {"Content-Type": ctype, "Authorization": f"Bearer {tok}"}

    op = {"Content-Type": "application/json", "Authorization": f"Bearer {run.api.key}"}
    wait = t_short + 2.2 - time.monotonic()  # the ttl_s=1 token is expired by now
    if wait > 0:
        await asyncio.sleep(wait)
    t_barrage = time.monotonic()
    pk_before = lis.packets
    api = run.api
    cases = [
        ("malformed-sdp", api.request("POST", whep, b"v=0\r\nthis is not an SDP offer\r\nm=audio x\r\n",
                                      sdp_headers(listener_tok)), (400,), None),
        ("non-utf8-body", api.request("POST", whep, b"v=0\r\n\xff\xfe\x00garbage\r\n",
                                      sdp_headers(listener_tok)), (400,), None),
        ("sdp-without-opus", api.request("POST", whip, pub_offer, sdp_headers(speaker)), (406, 400), "opus"),
        ("wrong-direction-sendonly-on-whep", api.request("POST", whep, opus_pub, sdp_headers(listener_tok)),
         (400,), None),
        # the operator key is valid in every room, so only the room is wrong
        ("unknown-room", api.request("POST", "/v1/rooms/nosuchroom0e2e/whep", good_offer,
                                     sdp_headers(run.api.key)), (404,), None),
        ("token-for-another-room", api.request("POST", whep, good_offer, sdp_headers(other_tok)), (403,), None),
        ("garbage-token", api.request("POST", whep, good_offer, sdp_headers("garbage.not.ajwt")), (401,), None),
        ("expired-token-ttl1", api.request("POST", whep, good_offer, sdp_headers(short_tok)), (401,), None),
        ("forged-expired-token", api.request("POST", whep, good_offer, sdp_headers(forge_expired(listener_tok))),
         (401,), None),
        ("wrong-content-type", api.request("POST", whep, good_offer, sdp_headers(listener_tok, "text/plain")),
         (415,), None),
        ("body-over-64KiB", api.request("POST", whep, good_offer + b"a=x-pad:" + b"x" * (65 * 1024) + b"\r\n",
                                        sdp_headers(listener_tok)), (413,), None),
        ("malformed-json-room-create", api.request("POST", "/v1/rooms", b'{"name": "x", "kind": ', op),
         (400,), None),
    ]
    # listener token on WHIP, with a valid Opus sendonly offer: only the role is wrong
    cases.append(("listener-token-on-whip", api.request("POST", whip, opus_pub, sdp_headers(listener_tok)),
                  (403,), None))
    rows = []
    for label, coro, want, mention in cases:
        rows.append(await expect_problem(run, label, coro, want, mention))
    run.report["http_cases"] = rows

    # garbage UDP at the media port(s) taken from the answer's host candidates
    udp = {"targets": [f"{ip}:{port}" for ip, port, _ in media], "sent": 0, "by_kind": {}}
    if not media:
        run.fail("bad-input: answer has no loopback host candidate to aim garbage UDP at")
    rng = random.Random(a.seed)
    usernames = []
    for p in (lis, pub):
        theirs, ours = ice_ufrag(p.answer_sdp), ice_ufrag(p.pc.localDescription.sdp)
        if theirs and ours:
            usernames.append(f"{theirs}:{ours}".encode())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        for ip, port, _ in media[:3]:
            for label, payload in garbage_datagrams(rng, a.udp_count, usernames):
                sock.sendto(payload, (ip, port))
                udp["sent"] += 1
                udp["by_kind"][label] = udp["by_kind"].get(label, 0) + 1
                if udp["sent"] % 20 == 0:
                    await asyncio.sleep(0.005)
    finally:
        sock.close()
    run.report["udp_garbage"] = udp
    run.report["barrage_s"] = round(time.monotonic() - t_barrage, 2)

    # afterwards: listener keeps connected, packets keep flowing, tone still right
    await asyncio.sleep(a.window + 1.0)
    after = check_listener(run, lis, a.freq, a.window, "after barrage:")
    after["packets_during_and_after_barrage"] = lis.packets - pk_before
    expect_pk = (time.monotonic() - t_barrage) * 50 * 0.5
    if lis.packets - pk_before < expect_pk:
        after["ok"] = False
        run.fail(f"listener got only {lis.packets - pk_before} packets in the "
                 f"{time.monotonic() - t_barrage:.1f} s since the barrage started")
    run.report["after"] = after
    h = await api.request("GET", "/healthz")
    run.report["healthz_after"] = h.status
    if h.status != 200:
        run.fail(f"GET /healthz after the barrage -> {h.short()}")
    run.report["publisher"] = pub.summary()
    st = await asyncio.gather(lis.delete(api), pub.delete(api))
    run.report["delete_statuses"] = st
    if any(s != 204 for s in st):
        run.fail(f"DELETE returned {st}, expected 204")
    lis.session_url = pub.session_url = None


# ---------------------------------------------------------------------------
# Scenario: publisher leaves and a new one arrives
# ---------------------------------------------------------------------------
async def scenario_leave_rejoin(run):
    a = run.args
    room = await run.api.create_room(f"e2e-leave-{os.getpid()}", "rally")
    rid = room["id"]
    run.report["room"] = room
    tok_a = await run.api.mint(rid, "speaker", name="e2e-publisher-a")
    tok_b = await run.api.mint(rid, "speaker", name="e2e-publisher-b")
    tok_l = await run.api.mint(rid, "listener", name="e2e-listener")

    pub_a = run.peer("publisher-a", "publish", freqs=a.freq, amplitude=a.amplitude)
    await pub_a.connect(run.api, f"/v1/rooms/{rid}/whip", tok_a)
    lis = run.peer("listener", "listen", keep_s=a.gap + a.window + 12)
    await lis.connect(run.api, f"/v1/rooms/{rid}/whep", tok_l)
    if not await wait_for_audio([lis], a.window, timeout=a.window + 5):
        run.fail(f"listener decoded only {lis.decoded_samples / RATE:.2f} s before the leave")
    run.report["before_leave"] = check_listener(run, lis, a.freq, a.window, "before leave:")

    t_delete = time.monotonic()
    st = await pub_a.delete(run.api)
    run.report["delete_status"] = st
    if st != 204:
        run.fail(f"DELETE publisher-a session -> {st}, expected 204")
    pub_a.session_url = None
    await pub_a.close()

    # gap: the listener must stay connected while nobody publishes
    samples = []
    pk_at_delete = lis.packets
    while time.monotonic() - t_delete < a.gap:
        samples.append(lis.pc.connectionState)
        await asyncio.sleep(0.1)
    states = sorted(set(samples))
    run.report["gap"] = {"seconds": a.gap, "listener_states": states,
                         "packets_in_gap": lis.packets - pk_at_delete,
                         "decoded_s_in_gap": round(lis.decoded_seconds_since(t_delete), 2)}
    if states != ["connected"]:
        run.fail(f"listener connection state during the {a.gap} s gap: {states}, expected connected")
    stale = lis.samples_between(t_delete + 1.0, time.monotonic())
    if len(stale) >= RATE // 4:
        freqs, amp = spectrum(stale)
        lvl, _ = level_at(freqs, amp, a.freq, a.tol_hz)
        run.report["gap"]["old_tone_dbfs"] = round(lvl, 1)
        run.report["gap"]["rms_dbfs"] = round(rms_dbfs(stale), 1)
        if lvl > -50.0:
            run.fail(f"listener still hears the departed publisher's {a.freq} Hz at {lvl:.1f} dBFS "
                     f"more than 1 s after its DELETE")
    else:
        run.report["gap"]["old_tone_dbfs"] = None

    pub_b = run.peer("publisher-b", "publish", freqs=a.new_freq, amplitude=a.amplitude)
    await pub_b.connect(run.api, f"/v1/rooms/{rid}/whip", tok_b)
    await asyncio.sleep(max(a.window + 0.5, a.switch_max_s + 1.5))
    t_hear = first_detection(list(lis.frames), a.new_freq, pub_b.t_answer)
    switch = None if t_hear is None else round(t_hear - pub_b.t_answer, 3)
    run.report["new_publisher"] = pub_b.summary()
    run.report["new_tone_heard_after_answer_s"] = switch
    run.report["new_tone_heard_after_connected_s"] = (
        None if t_hear is None or pub_b.t_connected is None else round(t_hear - pub_b.t_connected, 3))
    if switch is None:
        run.fail(f"listener never heard the new publisher's {a.new_freq} Hz")
    elif switch > a.switch_max_s:
        run.fail(f"listener heard the new {a.new_freq} Hz {switch:.2f} s after the answer "
                 f"(limit {a.switch_max_s} s)")
    after = check_listener(run, lis, a.new_freq, a.window, "after rejoin:")
    freqs, amp = spectrum(lis.last_samples(a.window))
    old_lvl, _ = level_at(freqs, amp, a.freq, a.tol_hz)
    after["old_tone_rel_db"] = round(old_lvl - after.get("tone_dbfs", 0.0), 1)
    if old_lvl - after.get("tone_dbfs", 0.0) > -30.0:
        after["ok"] = False
        run.fail(f"after rejoin the old {a.freq} Hz is still audible "
                 f"({old_lvl - after.get('tone_dbfs', 0.0):.1f} dB relative to the new tone)")
    run.report["after_rejoin"] = after
    run.report["listener_states"] = [s for _, s in lis.states]
    st = await asyncio.gather(lis.delete(run.api), pub_b.delete(run.api))
    run.report["delete_statuses"] = st
    if any(s != 204 for s in st):
        run.fail(f"DELETE returned {st}, expected 204")
    lis.session_url = pub_b.session_url = None


# ---------------------------------------------------------------------------
# selftest: no server. Analysis on synthetic signals + aiortc loopback.
# ---------------------------------------------------------------------------
def _tone(f, amp, seconds, phase=0.0):
    n = np.arange(int(seconds * RATE))
    return amp * np.sin(2 * np.pi * f * n / RATE + phase)


def synthetic_checks():
    rng = np.random.default_rng(1)
    noise = lambda s, lvl: rng.normal(0, lvl, int(s * RATE))  # noqa: E731
    out = []

    def expect(name, cond, detail):
        out.append({"check": name, "ok": bool(cond), "detail": detail})

    r = analyse_tone(_tone(440, 0.3, 2) + noise(2, 0.01), 440)
    expect("tone+noise 440 found", r["ok"] and abs(r["dominant_hz"] - 440) < 0.5, r)
    r = analyse_tone(_tone(447.3, 0.3, 2), 447.3)
    expect("off-bin tone 447.3 interpolated", r["ok"] and abs(r["dominant_hz"] - 447.3) < 0.3, r)
    r = analyse_tone(_tone(660, 0.3, 2), 440)
    expect("wrong tone rejected", not r["ok"], r)
    r = analyse_tone(noise(2, 0.05), 440)
    expect("noise rejected", not r["ok"], r)
    r = analyse_tone(_tone(440, 0.003, 2), 440)
    expect("too quiet rejected (-50 dBFS)", not r["ok"] and "RMS" in r.get("reason", ""), r)
    r = analyse_tone(np.clip(_tone(440, 1.5, 2), -1, 1), 440)
    expect("clipping rejected", not r["ok"] and "clipping" in r.get("reason", ""), r)
    r = analyse_tone(np.zeros(RATE * 2), 440)
    expect("silence rejected", not r["ok"], r)
    r = analyse_tone(_tone(440, 0.3, 0.2), 440)
    expect("too short rejected", not r["ok"], r)

    two = _tone(660, 0.25, 2) + _tone(880, 0.25, 2, 1.0) + noise(2, 1e-4)
    r = analyse_mix_minus(two, 440, [660, 880])
    expect("mix-minus: hears 660+880, not 440", r["ok"], r)
    r = analyse_mix_minus(two + _tone(440, 0.25, 2), 440, [660, 880])
    expect("mix-minus: self echo at 0 dB rejected", not r["ok"] and "hears itself" in r["reason"], r)
    r = analyse_mix_minus(two + _tone(440, 0.25 * 10 ** (-20 / 20), 2), 440, [660, 880])
    expect("mix-minus: self at -20 dB rejected", not r["ok"], r)
    r = analyse_mix_minus(two + _tone(440, 0.25 * 10 ** (-60 / 20), 2), 440, [660, 880])
    expect("mix-minus: codec by-product at -60 dB tolerated", r["ok"], r)
    r = analyse_mix_minus(_tone(660, 0.25, 2) + noise(2, 1e-4), 440, [660, 880])
    expect("mix-minus: missing other talker rejected", not r["ok"] and "880" in r["reason"], r)
    r = analyse_mix_minus(_tone(660, 0.25, 2) + _tone(880, 0.25 * 10 ** (-70 / 20), 2) + noise(2, 1e-3),
                          440, [660, 880])
    expect("mix-minus: other talker at -82 dBFS rejected", not r["ok"], r)

    r = analyse_mix_minus(two + _tone(1000, 0.25 * 10 ** (-60 / 20), 2), 440, [660, 880],
                          absent_hz=[1000])
    expect("mix-minus: unmixed talker at -60 dB tolerated", r["ok"], r)
    r = analyse_mix_minus(two + _tone(1000, 0.05, 2), 440, [660, 880], absent_hz=[1000])
    expect("mix-minus: unmixed talker heard at -14 dB rejected",
           not r["ok"] and "must not be in its mix" in r["reason"], r)

    # timeline detection: 1 s of 440, 0.5 s of silence, then 660
    frames, t = [], 100.0
    sig = np.concatenate([_tone(440, 0.3, 1.0), np.zeros(RATE // 2), _tone(660, 0.3, 1.0)])
    for i in range(0, len(sig), FRAME):
        frames.append((t, sig[i:i + FRAME]))
        t += FRAME / RATE
    td = first_detection(frames, 660, 100.0)
    expect("first_detection finds the switch at ~1.5 s", td is not None and 1.45 <= td - 100.0 <= 1.65,
           {"t": None if td is None else td - 100.0})
    expect("first_detection: absent tone -> None", first_detection(frames, 1000, 100.0) is None, {})

    sdp = ("v=0\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n"
           "a=candidate:2 1 udp 1 10.1.2.3 5000 typ host\r\n")
    kept, dropped = loopback_only_sdp(sdp)
    expect("non-loopback answer candidates dropped", "10.1.2.3" not in kept and len(dropped) == 1, dropped)
    return out


async def loopback_pair(freqs, amplitude, seconds):
    """aiortc sender -> aiortc receiver over 127.0.0.1, in-process SDP exchange.
    Returns the receiver Peer after `seconds` of audio."""
    tx = Peer("loop-tx", "publish", freqs=freqs, amplitude=amplitude)
    rx = Peer("loop-rx", "listen", keep_s=seconds + 2)
    try:
        await tx.pc.setLocalDescription(await tx.pc.createOffer())
        await rx.pc.setRemoteDescription(tx.pc.localDescription)
        await rx.pc.setLocalDescription(await rx.pc.createAnswer())
        rx.t_post = tx.t_post = time.monotonic()
        await tx.pc.setRemoteDescription(rx.pc.localDescription)
        for c in answer_candidates(tx.pc.localDescription.sdp + rx.pc.localDescription.sdp):
            if not is_loopback(c[0]):
                raise AssertionError(f"aiortc gathered a non-loopback candidate {c}")
        rx.t_answer = time.monotonic()
        if not await wait_for_audio([rx], seconds, timeout=seconds + 8):
            raise AssertionError(f"loopback: only {rx.decoded_samples / RATE:.2f} s decoded")
        return rx, tx
    except BaseException:
        await asyncio.gather(tx.close(), rx.close(), return_exceptions=True)
        raise


async def scenario_token_listen(run):
    """A listener with a token made elsewhere (PIN join, invite) hears the
    tone an operator-minted speaker publishes into that room."""
    a = run.args
    rid = a.room
    run.report["room"] = {"id": rid}
    tok_p = await run.api.mint(rid, "speaker", name="e2e-publisher")
    pub = run.peer("publisher", "publish", freqs=a.freq, amplitude=a.amplitude)
    await pub.connect(run.api, f"/v1/rooms/{rid}/whip", tok_p)
    lis = run.peer("listener", "listen", keep_s=a.window + 12)
    await lis.connect(run.api, f"/v1/rooms/{rid}/whep", a.listener_token)
    if not await wait_for_audio([lis], a.window, timeout=a.window + 8):
        run.fail(f"listener decoded only {lis.decoded_samples / RATE:.2f} s")
    run.report["listener"] = check_listener(run, lis, a.freq, a.window, "listener:")
    for peer in (lis, pub):
        st = await peer.delete(run.api)
        if st != 204:
            run.fail(f"DELETE {peer.name} session -> {st}, expected 204")
        peer.session_url = None
        await peer.close()


async def scenario_selftest(run):
    checks = synthetic_checks()
    for c in checks:
        if not c["ok"]:
            run.fail(f"analysis self-check '{c['check']}' failed: {c['detail']}")
    run.report["synthetic"] = [{"check": c["check"], "ok": c["ok"]} for c in checks]

    # single tone through the real Opus encoder/decoder of aiortc
    rx, tx = await loopback_pair(523.0, 0.3, 2.0)
    try:
        res = analyse_tone(rx.last_samples(2.0), 523.0)
        res.update(rx.summary())
        run.report["loopback_tone"] = res
        if not res["ok"]:
            run.fail(f"aiortc loopback 523 Hz: {res.get('reason')}")
    finally:
        await asyncio.gather(tx.close(), rx.close(), return_exceptions=True)

    # a 'mix' of two tones through Opus: the mix-minus check must pass for a
    # talker at 440 and must flag a talker at 660 as hearing itself
    rx, tx = await loopback_pair([660.0, 880.0], 0.25, 2.0)
    try:
        x = rx.last_samples(2.0)
        good = analyse_mix_minus(x, 440.0, [660.0, 880.0])
        echo = analyse_mix_minus(x, 660.0, [880.0])
        run.report["loopback_mix"] = {"as_440_talker": good, "as_660_talker": echo}
        if not good["ok"]:
            run.fail(f"aiortc loopback mix 660+880: {good.get('reason')}")
        if echo["ok"]:
            run.fail("aiortc loopback mix: a 660 Hz talker hearing 660 Hz was not flagged as self-echo")
    finally:
        await asyncio.gather(tx.close(), rx.close(), return_exceptions=True)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
SCENARIOS = {
    "selftest": scenario_selftest,
    "rally": scenario_rally,
    "bridge": scenario_bridge,
    "loudest": scenario_loudest,
    "bad-input": scenario_bad_input,
    "leave-rejoin": scenario_leave_rejoin,
    "token-listen": scenario_token_listen,
}


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, server=True, timeout=90.0):
        if server:
            p.add_argument("--base", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
            p.add_argument("--key", default=os.environ.get("SABHA_OPERATOR_KEY"),
                           help="operator key (default: $SABHA_OPERATOR_KEY)")
        p.add_argument("--timeout", type=float, default=timeout, help="hard limit for the whole run, s")
        p.add_argument("--tol-hz", type=float, default=5.0, help="frequency tolerance, Hz")
        p.add_argument("--min-rms-dbfs", type=float, default=-40.0)
        p.add_argument("--window", type=float, default=2.0, help="analysed tail of the audio, s")
        p.add_argument("--amplitude", type=float, default=0.3, help="tone amplitude (0..1)")
        p.add_argument("-v", "--verbose", action="store_true")

    p = sub.add_parser("selftest", help="analysis + aiortc loopback checks, no server")
    common(p, server=False, timeout=60.0)

    p = sub.add_parser("rally", help="1 publisher, N listeners + 1 late listener")
    common(p, timeout=120.0)
    p.add_argument("--listeners", type=int, default=20)
    p.add_argument("--srtp-profiles", default="",
                   help="comma list of aes256gcm,aes128gcm,aes128cm cycled over the listeners "
                        "(default: aiortc's preference)")
    p.add_argument("--freq", type=float, default=440.0)
    p.add_argument("--seconds", type=float, default=4.0, help="hold time after the late listener joins")
    p.add_argument("--concurrency", type=int, default=5, help="listeners being opened at once")
    p.add_argument("--late-after", type=float, default=3.0,
                   help="late listener joins once the publisher has been live this long, s")
    p.add_argument("--late-max-s", type=float, default=1.0,
                   help="late listener's first packet must come this soon after the answer, s")

    p = sub.add_parser("bridge", help="K /join talkers, mix-minus")
    common(p, timeout=90.0)
    p.set_defaults(amplitude=None, tol_hz=8.0)
    p.add_argument("--talkers", type=int, default=3)
    p.add_argument("--freqs", default="440,660,880")
    p.add_argument("--seconds", type=float, default=4.0, help="hold time once all talkers are up")
    p.add_argument("--concurrency", type=int, default=3)
    p.add_argument("--min-snr-db", type=float, default=20.0)
    p.add_argument("--min-self-below-db", type=float, default=30.0)

    p = sub.add_parser("loudest", help="6 talkers, only the 4 loudest mixed; mute/unmute the loudest")
    common(p, timeout=120.0)
    p.set_defaults(tol_hz=8.0)
    p.add_argument("--freqs", default="360,490,700,890,1000,1170",
                   help="one tone per talker (clear of each other's 2nd/3rd-order products)")
    p.add_argument("--amps", default="0.24,0.20,0.16,0.13,0.05,0.02",
                   help="one amplitude per talker; must rank them unambiguously")
    p.add_argument("--mixed", type=int, default=4, help="N: how many talkers the server mixes")
    p.add_argument("--seconds", type=float, default=4.0, help="hold time once all talkers are up")
    p.add_argument("--settle", type=float, default=1.5,
                   help="wait after a mute/unmute before the analysed window starts, s")
    p.add_argument("--join-gap", type=float, default=0.3,
                   help="pause after each talker connects before the next joins, s")
    p.add_argument("--min-prominence-db", type=float, default=20.0,
                   help="an unwanted tone counts as heard only if it stands this far above "
                        "the noise 10-60 Hz around it")
    p.add_argument("--min-snr-db", type=float, default=20.0)
    p.add_argument("--min-self-below-db", type=float, default=30.0)

    p = sub.add_parser("bad-input", help="bad requests + garbage UDP while audio flows")
    common(p, timeout=90.0)
    p.add_argument("--freq", type=float, default=523.0)
    p.add_argument("--udp-count", type=int, default=450, help="garbage datagrams per media port")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--media-addr", help="server media UDP address (default: the answer's host candidates)")

    p = sub.add_parser("token-listen", help="a listener with a given token hears a published tone")
    common(p)
    p.add_argument("--room", required=True)
    p.add_argument("--listener-token", required=True)
    p.add_argument("--freq", type=float, default=440.0)

    p = sub.add_parser("leave-rejoin", help="publisher leaves, listener stays, new publisher")
    common(p, timeout=90.0)
    p.add_argument("--freq", type=float, default=440.0)
    p.add_argument("--new-freq", type=float, default=660.0)
    p.add_argument("--gap", type=float, default=3.0, help="seconds with no publisher")
    p.add_argument("--switch-max-s", type=float, default=1.0,
                   help="new tone must be heard this soon after the new publisher's answer, s")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("aioice", "aiortc", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if getattr(args, "base", None) is not None and not args.key:
        print("--key or SABHA_OPERATOR_KEY is required", file=sys.stderr)
        return EXIT_SIGNAL
    try:
        run = Run(args.cmd, args)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return EXIT_SIGNAL
    run.report["args"] = {k: v for k, v in vars(args).items() if k not in ("key", "verbose")}

    async def go():
        try:
            await asyncio.wait_for(SCENARIOS[args.cmd](run), args.timeout)
            return run.finish()
        except SignalError as e:
            run.report["fatal"] = f"signalling: {e}"
        except asyncio.TimeoutError:
            run.report["fatal"] = f"timeout: scenario did not finish within {args.timeout} s"
        except SystemExit as e:
            run.report["fatal"] = f"bad arguments: {e}"
        except OSError as e:
            run.report["fatal"] = f"HTTP/socket error: {e!r}"
        finally:
            try:
                await asyncio.wait_for(run.cleanup(), 10.0)
            except (asyncio.TimeoutError, Exception) as e:  # noqa: BLE001
                LOG.warning("cleanup: %r", e)
        LOG.error("FATAL: %s", run.report["fatal"])
        run.finish()
        run.report["ok"] = False
        return EXIT_SIGNAL

    code = asyncio.run(go())
    run.report["exit_code"] = code
    print(json.dumps(run.report, default=str), flush=True)
    LOG.info("%s: %s (exit %d) in %.1f s", args.cmd, "PASS" if code == 0 else "FAIL", code,
             run.report.get("elapsed_s", 0))
    return code


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
