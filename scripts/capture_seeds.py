#!/usr/bin/env python3
"""Records fuzz seeds from WebRTC stacks we did not write (scripts/capture-seeds).

Inside a network namespace of its own (only `lo`, tests/browser/harness.py),
it starts tshark on `lo`, then `sabha serve`, and drives it with

  aiortc    a WHIP publisher, a WHEP listener and a /join talker
  Chromium  the Listen page (WHEP) and the bridge page (/join, microphone)

one client at a time, noting when each ran. tshark then reads the capture
back and the datagrams that reached the server's media port, and the SDP
offers and WebSocket commands that reached its HTTP port, are written under
the corpus directory, named after the client that sent them:

  sdp_offer/{client}-{kind}.sdp        the offer as POSTed
  udp_datagram/{client}-{class}-NN     STUN, DTLS, RTP, RTCP (RFC 7983 classes),
                                       after the target's source-selector byte
  ws_command/{client}-NN.json          commands the bridge page sent

Traffic leaves no machine: the namespace has nothing but loopback.
"""

import argparse
import codecs
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "browser"))
import harness  # noqa: E402

# Datagrams kept per client and class: enough variety (every DTLS flight,
# the first STUN checks and consent refreshes, RTP with each header
# extension the client sends) without growing the corpus by megabytes.
KEEP = {"stun": 8, "dtls": 16, "rtp": 8, "rtcp": 8}
# The udp_datagram target's sources: three clients and a stranger.
UDP_SOURCES = 4


def classify(payload):
    """RFC 7983 demultiplexing by the first byte; RTCP by RFC 5761's range."""
    first = payload[0]
    if first <= 3:
        return "stun"
    if 20 <= first <= 63:
        return "dtls"
    if 128 <= first <= 191 and len(payload) > 1:
        return "rtcp" if 192 <= payload[1] <= 223 else "rtp"
    return None


def start_capture(pcap):
    proc = subprocess.Popen(["tshark", "-i", "lo", "-q", "-w", pcap, "-f", "udp or tcp"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise harness.SetupError(f"tshark exited: {proc.stderr.read().decode(errors='replace')}")
        if os.path.exists(pcap) and os.path.getsize(pcap) > 0:
            time.sleep(0.5)  # the capture filter is compiled and applied
            return proc
        time.sleep(0.1)
    raise harness.SetupError("tshark did not start capturing within 20 s")


def stop_capture(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_aiortc(server):
    rally = server.room("Seeds rally", "rally")["id"]
    bridge = server.room("Seeds bridge", "bridge")["id"]
    peers = harness.Peers(server)
    try:
        peers.open("leader", "publish", f"/v1/rooms/{rally}/whip", server.token(rally, "host", "Leader"), freqs=440)
        peers.open("crowd", "listen", f"/v1/rooms/{rally}/whep", server.token(rally, "listener"))
        peers.open("talker", "join", f"/v1/rooms/{bridge}/join",
                   server.token(bridge, "participant", "Talker"), freqs=[660])
        time.sleep(4)
    finally:
        peers.close()


def run_chromium(server, artifacts):
    # No aiortc peer here: every datagram and offer of this phase is Chromium's.
    rally = server.room("Seeds rally 2", "rally")["id"]
    bridge = server.room("Seeds bridge 2", "bridge")["id"]
    mics = tempfile.mkdtemp(prefix="sabha-mic-")
    listener = harness.Browser("listener", artifacts)
    talker = harness.Browser("talker", artifacts, mic_wav=harness.tone_wav(os.path.join(mics, "t.wav"), 523))
    try:
        listener.open(f"{server.base}/l/{rally}#token={server.token(rally, 'listener', 'Asha')}")
        listener.click("#listen")
        listener.wait_text("#state", "Live")
        talker.open(f"{server.base}/b/{bridge}#token={server.token(bridge, 'participant', 'Bela')}")
        talker.click("#join")
        talker.wait(lambda: "live" in talker.find("#status").get_attribute("class").split(), "the talker live")
        time.sleep(3)
        for button in ("#mute", "#mute", "#hand", "#hand"):
            talker.click(button)
            time.sleep(0.3)
        time.sleep(1)
        talker.click("#leave")
        time.sleep(1)
    finally:
        listener.quit()
        talker.quit()


def tshark_fields(pcap, display_filter, fields):
    cmd = ["tshark", "-r", pcap, "-Y", display_filter, "-T", "fields", "-E", "separator=\t"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def unescape(field):
    """A text field as tshark prints it (C escapes: \\r, \\n, \\xhh) back to bytes."""
    return codecs.decode(field, "unicode_escape").encode("latin-1")


def client_at(phases, t):
    for name, start, end in phases:
        if start <= t <= end:
            return name
    return None


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def extract(pcap, server, phases, corpus):
    http_port = int(server.http.rsplit(":", 1)[1])
    media_port = int(server.media.rsplit(":", 1)[1])
    written = {}

    kept = {}
    for t, payload in tshark_fields(pcap, f"udp.dstport == {media_port}", ["frame.time_epoch", "udp.payload"]):
        client = client_at(phases, float(t))
        data = bytes.fromhex(payload.replace(":", ""))
        kind = classify(data) if client and data else None
        if kind is None:
            continue
        n = kept.setdefault((client, kind), [])
        if len(n) < KEEP[kind] and data not in n:
            n.append(data)
            # The target reads a source selector first (fuzz/fuzz_targets/
            # udp_datagram.rs): in turn, so each of its sources gets some.
            selector = bytes([len(n) % UDP_SOURCES])
            write(os.path.join(corpus, "udp_datagram", f"{client}-{kind}-{len(n):02}"), selector + data)
    for (client, kind), n in kept.items():
        written[f"udp_datagram {client} {kind}"] = len(n)

    offers = tshark_fields(
        pcap, f'tcp.dstport == {http_port} && http.request.method == "POST" && http.content_type contains "sdp"',
        ["frame.time_epoch", "http.request.uri", "http.file_data"])
    seen = set()
    for t, uri, body in offers:
        client = client_at(phases, float(t))
        kind = uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]  # whip, whep, join
        if not client or (client, kind) in seen:
            continue
        seen.add((client, kind))
        sdp = unescape(body)
        if not sdp.startswith(b"v=0\r\n"):
            raise harness.SetupError(f"{client} {kind}: not an SDP offer: {sdp[:40]!r}")
        write(os.path.join(corpus, "sdp_offer", f"{client}-{kind}.sdp"), sdp)
        written[f"sdp_offer {client} {kind}"] = 1

    commands = tshark_fields(pcap, f"tcp.dstport == {http_port} && websocket.opcode == 1",
                             ["frame.time_epoch", "websocket.payload.text"])
    n = 0
    for t, text in commands:
        client = client_at(phases, float(t))
        if client and text:
            n += 1
            write(os.path.join(corpus, "ws_command", f"{client}-{n:02}.json"), unescape(text))
    written["ws_command"] = n
    return written


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sabha", required=True, help="the sabha binary")
    p.add_argument("--corpus", required=True, help="fuzz/corpus")
    p.add_argument("--work", required=True, help="directory for the capture and the server log")
    args = p.parse_args()
    harness.isolate()
    os.makedirs(args.work, exist_ok=True)
    pcap = os.path.join(args.work, "seeds.pcapng")
    if os.path.exists(pcap):
        os.remove(pcap)
    capture = start_capture(pcap)
    server = harness.Server(args.sabha, os.path.join(args.work, "server.log"))
    phases = []
    try:
        for name, run in (("aiortc", lambda: run_aiortc(server)),
                          ("chromium", lambda: run_chromium(server, args.work))):
            start = time.time()
            run()
            phases.append((name, start, time.time()))
            time.sleep(1)
    finally:
        server.stop()
        time.sleep(1)
        stop_capture(capture)
    for what, n in sorted(extract(pcap, server, phases, args.corpus).items()):
        print(f"{what}: {n}")


if __name__ == "__main__":
    main()
