#!/usr/bin/env python3
"""Sabha side by side with Janus 1.1.x on one machine, in one run.

Fan-out: for each N, Janus' Streaming plugin (fed by its own gst-launch Opus
tone) and a Sabha rally (fed by an aiortc WHIP publisher) each get N aiortc
listeners. Bridge: one bridge of P participants, T talking, on Janus'
AudioBridge and on Sabha's `/join`.

Both sides are measured by the *same* function, `measure_window` of the
interop client (`whip_whep_client.py`), given the server's pid: over one hold
window it reads the server's utime+stime from /proc/<pid>/stat and counts the
RTP packets every aiortc peer received (SRTP-decrypted, before any decode).
So "delivered packet" and "window" mean the same on both sides, and
CPU us per delivered packet = server CPU seconds in the window / packets.
For Janus, janus_bench.py runs unmodified; this file only hands its
`measure_window` the Janus pid (see `janus_driver`).

Run it through `scripts/bench-vs-janus`, which installs what is missing
first. This file needs only the standard library; the `--janus-driver`
mode (started by this file in the interop venv) imports janus_bench.py.
Only loopback is used; every child runs under `timeout` and is stopped on
exit, and Janus is stopped with the interop's stop_janus.sh.
"""
import argparse
import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

# Every client of a benchmark comes from 127.0.0.1, so the per-IP rate
# limits on session creation and minting (docs/http-api.md) would refuse a
# crowd joining at once with 429: lifted here, as sabha-loadgen does.
UNTHROTTLED = {
    "SABHA_SESSION_RATE_BURST": "1000000",
    "SABHA_SESSION_RATE_PER_S": "1000000",
    "SABHA_MINT_RATE_BURST": "1000000",
    "SABHA_MINT_RATE_PER_S": "1000000",
}

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PTIME_S = 0.020  # both feeders send 20 ms Opus packets: 50 per second per peer
TONE_HZ = 440.0
# Seconds added to a step's own settle + hold + setup for its `timeout`.
STEP_SLACK_S = 120
SETUP_S_PER_PEER = 0.5  # the interop client's own budget per listener
BRIDGE_LISTEN_LEAD_S = 3.0  # the bridge's listeners join this long after its talkers

CHILDREN = []  # Popen objects started here (own process groups)
CLEANUPS = []  # callables run once on exit


def log(msg):
    print(f"bench-vs-janus: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Processes: everything we start is tracked and stopped on exit
# ---------------------------------------------------------------------------
def spawn(cmd, seconds, **kw):
    """Start `cmd` under coreutils `timeout` (SIGTERM, then SIGKILL 15 s
    later) in a process group of its own."""
    full = ["timeout", "--kill-after=15", str(int(seconds))] + list(cmd)
    p = subprocess.Popen(full, start_new_session=True, **kw)
    CHILDREN.append(p)
    return p


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def stop(p, grace=10.0):
    """SIGINT to the command itself (not through `timeout`, which would pass
    it on a second time), so an interop client DELETEs its sessions; then
    SIGKILL to the whole group."""
    if p.poll() is None:
        for pid in children(p.pid):
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            # bounded: from the signal handler, the main thread may hold this
            # Popen's wait lock, and an unbounded wait would never return
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass


def cleanup():
    """Clients first (newest first, while their servers still answer their
    DELETEs), then the servers, Janus and the temporary directory."""
    for p in reversed(CHILDREN):
        stop(p, grace=5.0)
    while CLEANUPS:
        try:
            CLEANUPS.pop()()
        except Exception as e:  # noqa: BLE001 -- keep cleaning up
            log(f"cleanup: {e}")


def on_signal(signum, _frame):
    """Stop everything and leave at once: unwinding would run the steps'
    own `finally` blocks against what is already gone."""
    signal.signal(signum, signal.SIG_IGN)
    log(f"signal {signum}: stopping every process started here")
    cleanup()
    os._exit(128 + signum)


# ---------------------------------------------------------------------------
# Janus
# ---------------------------------------------------------------------------
def janus_driver(argv):
    """Run janus_bench.py's main() in this process with `measure_window`
    given the Janus pid, and print each window as a `{"window": ...}` line.

    janus_bench.measure() calls measure_window(peers, hold) without a pid and
    keeps only some of its fields; with the pid the same function returns the
    server CPU and the packets delivered in the window, exactly as
    `whip_whep_client.py listen --server-pid` does for Sabha."""
    interop = os.environ["SABHA_INTEROP"]
    sys.path.insert(0, os.path.join(interop, "janus"))
    import janus_bench as jb  # noqa: PLC0415 -- only inside the interop venv

    original = jb.measure_window

    async def measured(peers, seconds, ptime=PTIME_S, server_pid=None):
        pid = server_pid or jb.janus_pid()
        w = await original(peers, seconds, ptime=ptime, server_pid=pid)
        print(json.dumps({"window": w, "peers": len(peers),
                          "peers_errors": sum(1 for p in peers if p.error)}), flush=True)
        return w

    jb.measure_window = measured
    sys.argv = ["janus_bench.py"] + argv
    jb.main()


class Janus:
    def __init__(self, a, run_dir):
        self.a = a
        self.env = dict(os.environ, INTEROP_RUN=run_dir, SABHA_INTEROP=a.interop)
        self.dir = os.path.join(a.interop, "janus")
        self.up = False

    def start(self):
        r = subprocess.run(["timeout", "60", os.path.join(self.dir, "start_janus.sh")],
                           env=self.env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"start_janus.sh failed: {r.stdout.strip()} {r.stderr.strip()}")
        self.up = True

    def stop(self):
        if self.up:
            subprocess.run(["timeout", "30", os.path.join(self.dir, "stop_janus.sh")],
                           env=self.env, capture_output=True)
            self.up = False

    def bench(self, args, budget, out_json):
        """janus_bench.py `args` through janus_driver; returns (windows, rows)."""
        cmd = [self.a.python, os.path.abspath(__file__), "--janus-driver", *args,
               "--max-seconds", str(int(budget)), "--json-out", out_json]
        p = spawn(cmd, budget + 30, env=self.env, stdout=subprocess.PIPE, text=True)
        out, _ = p.communicate()
        windows, rows = [], []
        for line in out.splitlines():
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if "window" in m:
                windows.append(m)
            elif "step" in m:
                rows.append(m)
        if p.returncode != 0:
            log(f"janus_bench exited {p.returncode}")
        # the --json-out rows have the fields janus_bench adds after printing a row
        try:
            with open(out_json) as f:
                rows = json.load(f)["rows"]
        except (OSError, ValueError, KeyError):
            pass
        return windows, rows


# ---------------------------------------------------------------------------
# Sabha
# ---------------------------------------------------------------------------
def free_port():
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    t.close()
    return port


class Sabha:
    def __init__(self, a, tmp, label):
        self.a = a
        self.label = label
        self.key = "sk_bench_" + secrets.token_hex(16)
        self.data = tempfile.mkdtemp(prefix=f"sabha-{label}-", dir=tmp)
        http = free_port()
        self.base = f"http://127.0.0.1:{http}"
        self.log = open(os.path.join(self.data, "sabha.log"), "w")
        env = dict(os.environ, SABHA_OPERATOR_KEY=self.key, SABHA_LOG="warn",
                   **UNTHROTTLED)
        self.proc = spawn([a.sabha, "serve", "--http", f"127.0.0.1:{http}",
                           "--media", "127.0.0.1:0", "--data-dir", self.data],
                          a.step_budget_s * 4, env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sabha exited {self.proc.returncode}; log {self.log.name}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"sabha did not answer /healthz; log {self.log.name}")
        self.pid = self.server_pid()

    def server_pid(self):
        """The sabha process itself (the child of `timeout`)."""
        kids = children(self.proc.pid)
        if len(kids) != 1:
            raise RuntimeError(f"expected one sabha under timeout, found {kids}")
        return kids[0]

    def rss_mb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
        return None

    def post(self, path, body):
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {self.key}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def room(self, kind):
        return self.post("/v1/rooms", {"name": f"bench {kind}", "kind": kind})["id"]

    def token(self, room, role):
        return self.post(f"/v1/rooms/{room}/tokens", {"role": role, "name": "bench"})["token"]

    def counters(self):
        """Totals from /metrics that tell a late server from a late client."""
        want = {"sabha_audio_packets_out_total": "server_audio_packets_out",
                "sabha_mixer_ticks_total": "mixer_ticks",
                "sabha_mixer_tick_overruns_total": "mixer_tick_overruns"}
        out = {}
        try:
            with urllib.request.urlopen(self.base + "/metrics", timeout=5) as r:
                for line in r.read().decode().splitlines():
                    name, _, value = line.partition(" ")
                    if name in want:
                        out[want[name]] = int(float(value))
        except (OSError, ValueError) as e:
            log(f"/metrics: {e}")
        return out

    def stop(self):
        stop(self.proc)
        self.log.close()
        try:
            shutil.copy(self.log.name, os.path.join(self.a.raw_dir, f"sabha-{self.label}.log"))
        except OSError as e:
            log(f"server log not kept: {e}")


def client(a, *args):
    return [a.python, os.path.join(a.interop, "whip_whep_client.py"), *args]


def run_client(a, cmd, budget, out_json):
    """Run one interop client command; return its --json-out document."""
    p = spawn(cmd, budget, stdout=subprocess.DEVNULL)
    p.wait()
    try:
        with open(out_json) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        doc = {"fatal": f"no JSON from client (exit {p.returncode})"}
    doc["exit"] = p.returncode
    return doc


# ---------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------
def row(scenario, n, server, w, peers, **extra):
    """One comparable row from a measure_window result `w` over `peers` peers."""
    r = {"scenario": scenario, "n": n, "server": server, "peers": peers, **extra}
    if not w or "packets_in_window" not in w:
        r["error"] = r.get("error") or "no measurement window"
        return r
    secs = w["window_s"]
    pkts = w["packets_in_window"]
    r.update({
        "window_s": secs,
        "server_cpu_pct": w["server_cpu_pct"],
        "server_rss_mb": w["server_rss_mb"],
        "packets_in_window": pkts,
        "delivered_pps": round(pkts / secs, 1),
        "cpu_us_per_packet": w["server_cpu_us_per_packet"],
        # packets received / packets sent to every peer we opened (failed ones count as 0)
        "delivery": round(pkts / (peers * secs / PTIME_S), 4),
        "delivery_min": w["delivery_min"],
        "client_cpu_pct": w["client_cpu_pct"],
        "host_busy_pct": w["host_busy_pct"],
    })
    return r


def janus_fanout(a, tmp, n):
    j = Janus(a, os.path.join(tmp, f"janus-fanout-{n}"))
    budget = a.settle + a.hold + n * SETUP_S_PER_PEER + STEP_SLACK_S
    try:
        j.start()
        CLEANUPS.append(j.stop)
        windows, rows = j.bench(["streaming", "--n", str(n), "--decode-every", str(a.decode_every),
                                 "--concurrency", str(a.concurrency), "--settle", str(a.settle),
                                 "--hold", str(a.hold), "--freq", str(TONE_HZ)],
                                budget, os.path.join(a.raw_dir, f"janus-fanout-{n}.json"))
    finally:
        j.stop()
    jr = rows[-1] if rows else {}
    return row("fanout", n, "janus", windows[-1]["window"] if windows else None, n,
               peers_ok=jr.get("peers_ok"), freq_ok=jr.get("freq_ok"),
               decoded=jr.get("decoded_listeners"), error=jr.get("first_error"))


def sabha_fanout(a, tmp, n):
    s = Sabha(a, tmp, f"fanout-{n}")
    CLEANUPS.append(s.stop)
    try:
        room = s.room("rally")
        speak, listen = s.token(room, "speaker"), s.token(room, "listener")
        idle_rss = s.rss_mb()
        budget = a.settle + a.hold + n * SETUP_S_PER_PEER + STEP_SLACK_S
        pub = spawn(client(a, "publish", "--whip", f"{s.base}/v1/rooms/{room}/whip",
                           "--token", speak, "--freq", str(TONE_HZ), "--duration", str(budget)),
                    budget + 30, stdout=subprocess.DEVNULL)
        time.sleep(a.publish_lead)
        out = os.path.join(a.raw_dir, f"sabha-fanout-{n}.json")
        doc = run_client(a, client(a, "listen", "--whep", f"{s.base}/v1/rooms/{room}/whep",
                                   "--token", listen, "-n", str(n),
                                   "--concurrency", str(a.concurrency),
                                   "--settle", str(a.settle), "--duration", str(a.hold),
                                   "--decode-every", str(a.decode_every),
                                   "--expect-freq", str(TONE_HZ),
                                   "--server-pid", str(s.pid), "--json-out", out),
                         budget, out)
        stop(pub)
        counters = s.counters()
    finally:
        s.stop()
        CLEANUPS.remove(s.stop)
    sm = doc.get("summary", {})
    decoded = [x for x in doc.get("listeners", []) if x.get("analyzed")]
    return row("fanout", n, "sabha", sm, n, peers_ok=sm.get("ok"),
               freq_ok=sum(1 for x in decoded if x.get("dominant_hz") is not None
                           and abs(x["dominant_hz"] - TONE_HZ) <= 5),
               decoded=len(decoded), idle_rss_mb=idle_rss, **counters,
               error=doc.get("fatal") or sm.get("first_error"))


def janus_bridge(a, tmp):
    p, t = a.bridge_participants, a.bridge_talkers
    j = Janus(a, os.path.join(tmp, "janus-bridge"))
    budget = 2 * (a.settle + a.hold) + p * SETUP_S_PER_PEER + STEP_SLACK_S
    try:
        j.start()
        CLEANUPS.append(j.stop)
        # K talkers first (one window), then P-T muted recv-only listeners (the window we keep)
        windows, rows = j.bench(["audiobridge", "--k", str(t), "--listeners", str(p - t),
                                 "--decode-every", str(a.decode_every),
                                 "--concurrency", str(a.concurrency), "--settle", str(a.settle),
                                 "--hold", str(a.hold)],
                                budget, os.path.join(a.raw_dir, "janus-bridge.json"))
    finally:
        j.stop()
    jr = rows[-1] if rows else {}
    w = windows[-1] if windows and windows[-1]["peers"] == p else None
    return row("bridge", p, "janus", w["window"] if w else None, p,
               peers_ok=jr.get("peers_ok"), talkers=t,
               mix_check=f"talker0 hears {rows[0].get('talker0_hears_others')} others, "
                         f"self {rows[0].get('talker0_hears_self')}; "
                         f"listener0 hears {jr.get('listener0_hears_talkers')}" if rows else None,
               error=jr.get("first_error"))


def sabha_bridge(a, tmp):
    p, t = a.bridge_participants, a.bridge_talkers
    s = Sabha(a, tmp, "bridge")
    CLEANUPS.append(s.stop)
    try:
        room = s.room("bridge")
        tok = s.token(room, "participant")
        join_url = f"{s.base}/v1/rooms/{room}/join"
        common = ["--token", tok, "--concurrency", str(a.concurrency), "--server-pid", str(s.pid)]
        if a.bridge_silent == "join":
            # every member on /join (sendrecv); the P-T silent ones send digital silence
            budget = a.settle + a.hold + p * SETUP_S_PER_PEER + STEP_SLACK_S
            out = os.path.join(a.raw_dir, "sabha-bridge.json")
            doc = run_client(a, client(a, "join", "--join", join_url, "--k", str(t),
                                       "--silent-talkers", str(p - t), "--settle", str(a.settle),
                                       "--hold-seconds", str(a.hold), "--json-out", out, *common),
                             budget, out)
            sm, docs = doc.get("summary", {}), [doc]
        else:
            sm, docs = sabha_bridge_whep(a, s, room, join_url, common)
        counters = s.counters()
    finally:
        s.stop()
        CLEANUPS.remove(s.stop)
    fatal = next((d["fatal"] for d in docs if d.get("fatal")), None)
    js = docs[0].get("summary", {})
    return row("bridge", p, "sabha", sm, p, peers_ok=sm.get("ok"), talkers=t,
               silent_members=a.bridge_silent,
               mix_check=f"{js.get('hear_all_others')}/{js.get('talkers')} talkers hear all others, "
                         f"{js.get('self_absent')}/{t} own tone absent" if js else None,
               error=fatal or sm.get("first_error"), **counters)


def sabha_bridge_whep(a, s, room, join_url, common):
    """T talkers on /join and P-T recv-only members on the bridge's WHEP, as
    Janus' bench has T talkers and P-T muted recv-only participants. Two
    client processes (one would be saturated by 20 full talkers); the listen
    window (all P present) gives the server CPU, and the talkers' packet rate
    over their own window, which covers it, is added to the listeners'."""
    p, t = a.bridge_participants, a.bridge_talkers
    budget = a.settle + a.hold + p * SETUP_S_PER_PEER + STEP_SLACK_S + BRIDGE_LISTEN_LEAD_S
    jout = os.path.join(a.raw_dir, "sabha-bridge-join.json")
    lout = os.path.join(a.raw_dir, "sabha-bridge-listen.json")
    join = spawn(client(a, "join", "--join", join_url, "--k", str(t), "--settle", str(a.settle),
                        "--hold-seconds", str(a.hold + 2 * BRIDGE_LISTEN_LEAD_S),
                        "--json-out", jout, *common), budget, stdout=subprocess.DEVNULL)
    time.sleep(BRIDGE_LISTEN_LEAD_S)
    ldoc = run_client(a, client(a, "listen", "--whep", f"{s.base}/v1/rooms/{room}/whep",
                                "-n", str(p - t), "--settle", str(a.settle),
                                "--duration", str(a.hold), "--decode-every", str(a.decode_every),
                                "--json-out", lout, *common), budget, lout)
    join.wait()
    try:
        with open(jout) as f:
            jdoc = json.load(f)
    except (OSError, ValueError):
        jdoc = {"fatal": f"no JSON from the join client (exit {join.returncode})"}
    js, ls = jdoc.get("summary", {}), ldoc.get("summary", {})
    if "packets_in_window" not in js or "packets_in_window" not in ls:
        return {"ok": None, "first_error": js.get("first_error") or ls.get("first_error")}, [jdoc, ldoc]
    secs = ls["window_s"]
    pkts = ls["packets_in_window"] + js["packets_in_window"] * secs / js["window_s"]
    cpu_s = ls["server_cpu_pct"] / 100.0 * secs
    sm = {"ok": (js.get("ok") or 0) + (ls.get("ok") or 0), "window_s": secs,
          "packets_in_window": round(pkts), "server_cpu_pct": ls["server_cpu_pct"],
          "server_cpu_us_per_packet": round(1e6 * cpu_s / max(1.0, pkts), 3),
          "server_rss_mb": ls["server_rss_mb"],
          "delivery_min": min(js["delivery_min"], ls["delivery_min"]),
          "client_cpu_pct": round(js["client_cpu_pct"] + ls["client_cpu_pct"], 1),
          "host_busy_pct": ls["host_busy_pct"],
          "first_error": js.get("first_error") or ls.get("first_error")}
    return sm, [jdoc, ldoc]


def add_ratios(rows):
    """Janus CPU / Sabha CPU per delivered packet (and per run), on each Sabha row."""
    by = {(r["scenario"], r["n"], r["server"]): r for r in rows}
    for r in rows:
        if r["server"] != "sabha":
            continue
        j = by.get((r["scenario"], r["n"], "janus"))
        if j and j.get("cpu_us_per_packet") and r.get("cpu_us_per_packet"):
            r["janus_over_sabha"] = round(j["cpu_us_per_packet"] / r["cpu_us_per_packet"], 2)
        if j and j.get("server_cpu_pct") and r.get("server_cpu_pct"):
            # same people, same window length: the bridge's cost, whatever was delivered
            r["janus_over_sabha_cpu"] = round(j["server_cpu_pct"] / r["server_cpu_pct"], 2)


COLUMNS = [("scenario", "scenario", "{}"), ("n", "N", "{}"), ("server", "server", "{}"),
           ("peers_ok", "ok", "{}"), ("server_cpu_pct", "CPU %", "{:.1f}"),
           ("server_rss_mb", "RSS MB", "{:.1f}"), ("delivered_pps", "pkt/s", "{:.0f}"),
           ("cpu_us_per_packet", "CPU us/pkt", "{:.2f}"), ("delivery", "delivery", "{:.4f}"),
           ("delivery_min", "min", "{:.3f}"), ("host_busy_pct", "host %", "{:.0f}"),
           ("janus_over_sabha", "J/S per pkt", "{:.1f}x"), ("janus_over_sabha_cpu", "J/S CPU", "{:.1f}x")]


def table(rows):
    cells = [[h for _, h, _ in COLUMNS]]
    for r in rows:
        cells.append([fmt.format(r[k]) if r.get(k) is not None else "-" for k, _, fmt in COLUMNS])
    width = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) if i > 2 else c.ljust(w) for i, (c, w) in enumerate(zip(line, width)))
             for line in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def machine():
    model = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    janus = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "janus"],
                           capture_output=True, text=True).stdout.strip() or None
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": os.uname().release,
            "janus_version": janus, "load_avg_at_start": os.getloadavg(),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
def parse(argv):
    ap = argparse.ArgumentParser(
        prog="scripts/bench-vs-janus",
        description="Sabha and Janus 1.1.x side by side on this machine: server CPU per "
                    "delivered packet for a rally fan-out and one audio bridge, same aiortc "
                    "client on both. Loopback only; takes a few minutes.",
        epilog="The aiortc client runs on the same cores as the server under test: read the "
               "host % and delivery columns before trusting a number. See docs/benchmarks.md.")
    ap.add_argument("--listeners", default="100,200",
                    help="fan-out listener counts, one fresh server per count (default 100,200)")
    ap.add_argument("--bridge-participants", type=int, default=20, help="bridge size (default 20)")
    ap.add_argument("--bridge-talkers", type=int, default=3,
                    help="of them sending a tone; the rest are silent (default 3)")
    ap.add_argument("--bridge-silent", choices=["whep", "join"], default="whep",
                    help="Sabha's silent members: recv-only on the bridge's WHEP, like Janus' muted "
                         "recv-only participants (default), or sendrecv on /join sending digital "
                         "silence (one client process then runs all P talkers and saturates)")
    ap.add_argument("--scenarios", default="fanout,bridge", help="fanout,bridge (default both)")
    ap.add_argument("--servers", default="janus,sabha", help="janus,sabha (default both)")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds after the peers are set up before measuring (default 5)")
    ap.add_argument("--hold", type=float, default=15.0, help="measurement window, s (default 15)")
    ap.add_argument("--decode-every", type=int, default=20,
                    help="Opus-decode and check the tone on every k-th listener; the others only "
                         "count packets (default 20)")
    ap.add_argument("--concurrency", type=int, default=10,
                    help="peers set up at a time (default 10)")
    ap.add_argument("--publish-lead", type=float, default=3.0,
                    help="seconds between Sabha's publisher and its listeners (default 3)")
    ap.add_argument("--json-out", default=None,
                    help="all rows as JSON (default target/bench-vs-janus/results.json); the "
                         "clients' JSON and the server logs go to raw/ next to it")
    ap.add_argument("--interop", default=os.environ.get("SABHA_INTEROP")
                    or os.path.join(REPO, "..", "shared", "interop"),
                    help="the interop directory ($SABHA_INTEROP, default ../shared/interop)")
    ap.add_argument("--python", default=os.environ.get("INTEROP_PY") or os.path.expanduser(
                    os.path.join(os.environ.get("INTEROP_VENV", "~/.cache/interop-venv"),
                                 "bin", "python")),
                    help="interop venv python ($INTEROP_PY)")
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    ap.add_argument("--sabha", default=os.path.join(target, "release", "sabha"),
                    help="the sabha binary (default $CARGO_TARGET_DIR/release/sabha)")
    a = ap.parse_args(argv)
    a.listeners = [int(x) for x in a.listeners.split(",") if x.strip()]
    a.scenarios = {x.strip() for x in a.scenarios.split(",") if x.strip()}
    a.servers = [x.strip() for x in a.servers.split(",") if x.strip()]
    if not a.scenarios <= {"fanout", "bridge"} or not set(a.servers) <= {"janus", "sabha"}:
        ap.error("--scenarios takes fanout,bridge and --servers janus,sabha")
    if any(n < 1 for n in a.listeners) or not 1 <= a.bridge_talkers <= a.bridge_participants:
        ap.error("counts must be positive and talkers <= participants")
    if a.settle < 0 or a.hold < 1:
        ap.error("--settle must be >= 0 and --hold >= 1")
    a.interop = os.path.abspath(a.interop)
    a.json_out = a.json_out or os.path.join(target, "bench-vs-janus", "results.json")
    # the clients' own JSON documents of every step, kept for a closer look
    a.raw_dir = os.path.join(os.path.dirname(os.path.abspath(a.json_out)), "raw")
    biggest = max(a.listeners + [a.bridge_participants])
    a.step_budget_s = int(2 * (a.settle + a.hold) + biggest * SETUP_S_PER_PEER + STEP_SLACK_S)
    return a


def main(argv):
    if argv[:1] == ["--janus-driver"]:
        return janus_driver(argv[1:])
    a = parse(argv)
    for need in [a.python, os.path.join(a.interop, "whip_whep_client.py")] + (
            [a.sabha] if "sabha" in a.servers else []):
        if not os.path.exists(need):
            sys.exit(f"bench-vs-janus: missing {need} (scripts/bench-vs-janus installs it)")
    if "janus" in a.servers and not shutil.which("janus"):
        sys.exit("bench-vs-janus: janus is not installed (run ../shared/interop/setup.sh)")
    atexit.register(cleanup)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    os.makedirs(a.raw_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="bench-vs-janus-")
    CLEANUPS.insert(0, lambda: shutil.rmtree(tmp, ignore_errors=True))
    info = machine()
    log(f"{info['nproc']} cores, {info['cpu_model']}, load {info['load_avg_at_start']}; "
        "the aiortc client shares these cores with the server")
    steps = []
    for n in a.listeners if "fanout" in a.scenarios else []:
        for srv in a.servers:
            steps.append((f"fanout N={n} {srv}", janus_fanout if srv == "janus" else sabha_fanout, (n,)))
    if "bridge" in a.scenarios:
        for srv in a.servers:
            steps.append((f"bridge {a.bridge_participants}/{a.bridge_talkers} {srv}",
                          janus_bridge if srv == "janus" else sabha_bridge, ()))
    rows = []
    for label, fn, args in steps:
        log(f"{label} ...")
        t = time.monotonic()
        try:
            r = fn(a, tmp, *args)
        except Exception as e:  # noqa: BLE001 -- one failed step must not lose the others
            n = args[0] if args else a.bridge_participants
            r = {"scenario": label.split()[0], "n": n, "server": label.split()[-1],
                 "error": f"{type(e).__name__}: {e}"}
        r["step_s"] = round(time.monotonic() - t, 1)
        log(f"{label}: " + json.dumps({k: r.get(k) for k in
                                      ("server_cpu_pct", "cpu_us_per_packet", "delivery", "error")}))
        rows.append(r)
    add_ratios(rows)
    print(table(rows))
    print(f"\n{info['nproc']} cores ({info['cpu_model']}), kernel {info['kernel']}, "
          f"Janus {info['janus_version']}, {info['date_utc']}. CPU % of one core, server process "
          "only; the aiortc client ran on the same cores (host % = whole machine busy).")
    for r in rows:
        if r.get("error"):
            print(f"{r['scenario']} N={r['n']} {r['server']}: {r['error']}")
    os.makedirs(os.path.dirname(os.path.abspath(a.json_out)), exist_ok=True)
    with open(a.json_out, "w") as f:
        json.dump({"machine": info, "settings": {k: (sorted(v) if isinstance(v, set) else v)
                                                 for k, v in vars(a).items()},
                   "rows": rows}, f, indent=1)
    print(f"rows written to {a.json_out}; each client's own JSON in {a.raw_dir}/")
    return 0 if all("cpu_us_per_packet" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
