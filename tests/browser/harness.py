"""What every browser scenario shares: a private network, the server, Chromium.

- `isolate()`: re-executes the driver inside a fresh network namespace with
  only `lo` up (`unshare --net`, as root; `unshare -rn` otherwise), so neither
  Chromium nor the server can reach or be reached by anything but loopback.
  The server is started in there too, by `Server`.
- `Server`: `sabha serve` on free loopback ports, a fresh data directory,
  the operator key of tests/common (OPERATOR_KEY), its log in a file.
- `Browser`: headless Debian chromium through chromedriver (Selenium), a
  phone viewport (360x740), an optional fake microphone WAV, WebRTC allowed
  on loopback. It collects the console, so a CSP violation or an uncaught
  error fails the scenario, measures what the page plays with WebAudio, and
  takes screenshots checked for obvious breakage.
- `Report`: failures and facts, printed as one JSON line at the end; exit 0
  pass, 1 a check failed, 2 setup or signalling broke.

aiortc peers come from tests/e2e/sabha_e2e.py (`Peer`, `Api`, analysis).
"""

import base64
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import sabha_e2e  # noqa: E402  (aiortc peers, HTTP, tone analysis)

LOG = logging.getLogger("sabha_browser")
OPERATOR_KEY = "sk_e2e_operator_key_0123456789abcdef"
NETNS_MARK = "SABHA_BROWSER_NETNS"
EXIT_OK, EXIT_CHECK, EXIT_SETUP = 0, 1, 2
PHONE = (360, 740)


class SetupError(Exception):
    """The scenario could not run (server, browser, signalling)."""


# ---------------------------------------------------------------------------
# A private network
# ---------------------------------------------------------------------------
def isolate():
    """Re-exec this process in a new network namespace (only lo), once."""
    if os.environ.get(NETNS_MARK) == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    env = dict(os.environ, **{NETNS_MARK: "1"})
    cmd = [sys.executable] + sys.argv
    for unshare in (["unshare", "--net"], ["unshare", "--map-root-user", "--net"]):
        probe = subprocess.run(unshare + ["true"], capture_output=True)
        if probe.returncode == 0:
            os.execvpe(unshare[0], unshare + cmd, env)
    print(json.dumps({"ok": False, "fatal": "cannot create a network namespace (unshare --net)"}))
    sys.exit(EXIT_SETUP)


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------
class Server:
    def __init__(self, binary, log_path, env=None):
        self.dir = tempfile.mkdtemp(prefix="sabha-browser-")
        self.http = f"127.0.0.1:{free_port()}"
        # Port 0: each media thread binds a free port of its own; the
        # browser learns them from the SDP answers.
        self.media = "127.0.0.1:0"
        self.base = f"http://{self.http}"
        self.log_path = log_path
        log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, "serve", "--http", self.http, "--media", self.media,
             "--data-dir", os.path.join(self.dir, "data")],
            env=dict(os.environ, SABHA_OPERATOR_KEY=OPERATOR_KEY,
                     SABHA_LOG=os.environ.get("SABHA_LOG", "info"), **(env or {})),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SetupError(f"sabha serve exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise SetupError("sabha serve did not answer /healthz within 30 s")
        self.api = sabha_e2e.Api(self.base, OPERATOR_KEY)

    def call(self, method, path, body=None, token=OPERATOR_KEY, content_type="application/json"):
        """A blocking API call: (status, parsed JSON or text)."""
        data = None if body is None else (json.dumps(body).encode() if not isinstance(body, bytes) else body)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, raw, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, raw, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
        return status, (json.loads(raw) if "json" in ctype and raw else raw.decode(errors="replace"))

    def ok(self, method, path, body=None, token=OPERATOR_KEY, content_type="application/json"):
        status, value = self.call(method, path, body, token, content_type)
        if status >= 300:
            raise SetupError(f"{method} {path} -> {status}: {value}")
        return value

    def room(self, name, kind, **fields):
        return self.ok("POST", "/v1/rooms", {"name": name, "kind": kind, **fields})

    def token(self, room, role, name=None):
        body = {"role": role}
        if name:
            body["name"] = name
        return self.ok("POST", f"/v1/rooms/{room}/tokens", body)["token"]

    def participants(self, room):
        return self.ok("GET", f"/v1/rooms/{room}/participants")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# Audio files for the fake microphone
# ---------------------------------------------------------------------------
def tone_wav(path, freq, seconds=30, amplitude=0.3, rate=48000):
    n = np.arange(int(seconds * rate))
    pcm = np.round(np.sin(2 * np.pi * freq * n / rate) * amplitude * 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


# ---------------------------------------------------------------------------
# Chromium
# ---------------------------------------------------------------------------
SPECTRUM_JS = """
const [selector, ms, done] = arguments;
const media = document.querySelector(selector);
if (!media || !media.srcObject) { done({error: 'no ' + selector + ' with a stream'}); return; }
const ctx = new AudioContext();
const an = ctx.createAnalyser();
an.fftSize = 8192; an.smoothingTimeConstant = 0;
ctx.createMediaStreamSource(media.srcObject).connect(an);
const buf = new Float32Array(an.frequencyBinCount);
const acc = new Float64Array(an.frequencyBinCount);
let n = 0;
const id = setInterval(() => {
  an.getFloatFrequencyData(buf);
  for (let i = 0; i < buf.length; i++) acc[i] += Math.pow(10, buf[i] / 10);
  n++;
}, 100);
setTimeout(() => {
  clearInterval(id);
  const rate = ctx.sampleRate;
  ctx.close();
  done({bin_hz: rate / an.fftSize, frames: n,
        db: Array.from(acc, x => n ? 10 * Math.log10(x / n + 1e-30) : -300)});
}, ms);
"""


PACKET_RATE_JS = """
const [ms, done] = arguments;
const pc = (window.__sabhaPeers || []).filter(p => p.connectionState === 'connected').pop();
if (!pc) { done({error: 'no connected RTCPeerConnection (track_peer_connections before open)'}); return; }
const count = async () => {
  let n = 0;
  (await pc.getStats()).forEach(r => { if (r.type === 'inbound-rtp') n += r.packetsReceived; });
  return n;
};
count().then(a => setTimeout(() => count().then(b => done({per_s: (b - a) * 1000 / ms})), ms));
"""


class Spectrum:
    """The average power spectrum of what an element played."""

    def __init__(self, raw):
        self.bin_hz = raw["bin_hz"]
        self.db = np.array(raw["db"])
        self.frames = raw["frames"]

    def band(self, lo, hi):
        i0, i1 = int(lo / self.bin_hz), int(hi / self.bin_hz) + 1
        return i0, i1

    def dominant_hz(self, lo=50.0, hi=4000.0):
        i0, i1 = self.band(lo, hi)
        i = i0 + int(np.argmax(self.db[i0:i1]))
        return i * self.bin_hz, float(self.db[i])

    def level(self, freq, tol=15.0):
        i0, i1 = self.band(freq - tol, freq + tol)
        return float(np.max(self.db[i0:i1]))

    def floor(self, exclude=(), lo=50.0, hi=4000.0, guard=40.0):
        i0, i1 = self.band(lo, hi)
        keep = [i for i in range(i0, i1)
                if all(abs(i * self.bin_hz - f) > guard for f in exclude)]
        return float(np.median(self.db[keep]))

    def present(self, freq, others=(), snr_db=20.0):
        """A tone at freq stands snr_db above the floor (other tones excluded)."""
        return self.level(freq) - self.floor(exclude=(freq, *others)) >= snr_db

    def summary(self, freqs):
        floor = self.floor(exclude=freqs)
        return {"dominant_hz": round(self.dominant_hz()[0], 1), "floor_db": round(floor, 1),
                "levels_db": {str(f): round(self.level(f), 1) for f in freqs}}


class Browser:
    def __init__(self, name, artifacts, mic_wav=None):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.name = name
        self.artifacts = artifacts
        opts = webdriver.ChromeOptions()
        opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
        self.profile = tempfile.mkdtemp(prefix=f"chromium-{name}-")
        for flag in [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions",
            f"--user-data-dir={self.profile}", f"--window-size={PHONE[0]},{PHONE[1]}",
            "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        ]:
            opts.add_argument(flag)
        if mic_wav:
            opts.add_argument(f"--use-file-for-fake-audio-capture={mic_wav}")
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
        try:
            self.driver = webdriver.Chrome(service=service, options=opts)
        except Exception as e:  # noqa: BLE001 - selenium raises many types
            raise SetupError(f"cannot start chromium/chromedriver: {e}")
        self.driver.set_script_timeout(60)
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 2, "mobile": True})
        self.console = []
        self.refusals = []

    # -- pages -----------------------------------------------------------
    def open(self, url):
        self.driver.get(url)

    def find(self, css):
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def click(self, css, timeout=10.0):
        """Clicks css once it is visible. Lists redraw rows whose state
        changed (a speaking mark, a mute), so the element found may be
        replaced before the click lands: then find it again and retry."""
        from selenium.common.exceptions import StaleElementReferenceException
        self.wait(lambda: self.visible(css), f"{css} visible")
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.find(css).click()
                return
            except StaleElementReferenceException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def visible(self, css):
        from selenium.common.exceptions import NoSuchElementException
        try:
            return self.find(css).is_displayed()
        except NoSuchElementException:
            return False

    def text(self, css):
        return self.find(css).text

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, cond, what, timeout=20.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                if cond():
                    return
            except Exception as e:  # noqa: BLE001 - the element may not exist yet
                last = e
            time.sleep(0.1)
        raise SetupError(f"{self.name}: timed out waiting for {what}" + (f" ({last})" if last else ""))

    def wait_text(self, css, needle, timeout=20.0):
        self.wait(lambda: needle in self.text(css), f"{css} to contain {needle!r}", timeout)

    def fill(self, css, value):
        e = self.find(css)
        e.clear()
        e.send_keys(value)

    def track_peer_connections(self):
        """From the next page load on, keep every RTCPeerConnection the page
        makes in window.__sabhaPeers (for getStats); injected through CDP,
        which the page's CSP does not govern."""
        self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
          window.__sabhaPeers = [];
          const Native = window.RTCPeerConnection;
          window.RTCPeerConnection = function (...args) {
            const pc = new Native(...args);
            window.__sabhaPeers.push(pc);
            return pc;
          };
          window.RTCPeerConnection.prototype = Native.prototype;
        """})

    def packet_rate(self, seconds=3.0):
        """RTP packets per second the page's connected peer receives."""
        raw = self.driver.execute_async_script(PACKET_RATE_JS, int(seconds * 1000))
        if "error" in raw:
            raise SetupError(f"{self.name}: {raw['error']}")
        return raw["per_s"]

    def page_weight(self):
        """Bytes of the document and everything it loaded so far (encoded
        body sizes as served; headers not counted)."""
        return self.js("""
          const nav = performance.getEntriesByType('navigation')[0];
          let total = nav ? nav.encodedBodySize : 0;
          for (const r of performance.getEntriesByType('resource')) total += r.encodedBodySize;
          return total;""")

    # -- audio -----------------------------------------------------------
    def spectrum(self, selector="audio", seconds=3.0):
        raw = self.driver.execute_async_script(SPECTRUM_JS, selector, int(seconds * 1000))
        if "error" in raw:
            raise SetupError(f"{self.name}: {raw['error']}")
        return Spectrum(raw)

    # -- what went wrong -------------------------------------------------
    def console_errors(self):
        """Severe console entries so far (CSP violations, uncaught errors)."""
        for entry in self.driver.get_log("browser"):
            self.console.append(entry)
        return [e["message"] for e in self.console if e.get("level") == "SEVERE"
                and not self.expected(e)]

    def expect_refusal(self, path):
        """The scenario provokes an error answer from `path` (a wrong PIN,
        say): Chromium logs it as a failed load, which is not a page error."""
        self.refusals.append(path)

    def expected(self, entry):
        """Failed loads that are the page doing the right thing: a hang-up
        of a session the server had already ended (DELETE /v1/sessions/… is
        404), the room socket re-binding after its session ended (the upgrade
        with ?session= of the old one is 404, then it connects unbound), and
        refusals the scenario provoked."""
        m = entry["message"]
        if "/v1/sessions/" in m and "404" in m:
            return True
        if "/events?" in m and "session=" in m and "404" in m:
            return True
        return any(path in m for path in self.refusals)

    def screenshot(self, report, label, key_elements):
        """Saves <artifacts>/<label>.png and checks it: a real image, every key
        element displayed inside the phone's width, no sideways scrolling."""
        path = os.path.join(self.artifacts, f"{label}.png")
        png = self.driver.get_screenshot_as_png()
        with open(path, "wb") as f:
            f.write(png)
        width, height = struct.unpack(">II", png[16:24])
        report.fact(f"screenshot_{label}", {"path": path, "bytes": len(png), "size": [width, height]})
        if len(png) < 5000 or width < PHONE[0]:
            report.fail(f"{label}: screenshot looks empty ({len(png)} bytes, {width}x{height})")
        scroll = self.js("return document.documentElement.scrollWidth")
        if scroll > PHONE[0] + 1:
            report.fail(f"{label}: page is {scroll} px wide on a {PHONE[0]} px phone")
        for css in key_elements:
            if not self.visible(css):
                report.fail(f"{label}: {css} is not visible")
                continue
            rect = self.find(css).rect
            if rect["width"] <= 0 or rect["x"] < 0 or rect["x"] + rect["width"] > PHONE[0] + 1:
                report.fail(f"{label}: {css} is outside the screen: {rect}")

    def accessibility(self, report, label):
        """Every control has an accessible name; every input a label."""
        missing = self.js("""
          const bad = [];
          for (const e of document.querySelectorAll('button, a[href], input, select, textarea')) {
            if (e.type === 'hidden' || e.closest('.hidden')) continue;
            const named = (e.getAttribute('aria-label') || '').trim() || (e.textContent || '').trim()
              || (e.labels && e.labels.length) || e.getAttribute('title');
            if (!named) bad.push(e.outerHTML.slice(0, 80));
          }
          return bad;""")
        for m in missing:
            report.fail(f"{label}: control without an accessible name: {m}")

    def quit(self):
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


# ---------------------------------------------------------------------------
# aiortc peers, on an event loop of their own
# ---------------------------------------------------------------------------
class Peers:
    """aiortc peers (sabha_e2e.Peer) on a background asyncio loop, so that
    scenarios stay plain blocking code next to Selenium."""

    def __init__(self, server):
        import asyncio
        import threading

        self.asyncio = asyncio
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.peers = []

    def run(self, coro, timeout=30.0):
        return self.asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def open(self, name, mode, path, token, freqs=None, amplitude=0.3):
        """A connected peer: mode publish (WHIP), listen (WHEP) or join."""
        async def go():
            peer = sabha_e2e.Peer(name, mode, freqs=freqs, amplitude=amplitude)
            self.peers.append(peer)
            await peer.connect(self.server.api, path, token)
            return peer
        return self.run(go())

    def tone(self, peer, expect_hz, seconds=2.0, **kw):
        """sabha_e2e.analyse_tone over the peer's last `seconds`."""
        return sabha_e2e.analyse_tone(peer.last_samples(seconds), expect_hz, **kw)

    def hang_up(self, peer):
        """Ends one peer's session (DELETE) and its connection."""
        async def go():
            self.peers.remove(peer)
            await peer.delete(self.server.api)
            await peer.close()
        self.run(go())

    def close(self):
        async def go():
            for p in self.peers:
                await p.delete(self.server.api)
                await p.close()
        try:
            self.run(go(), timeout=20)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------
class Report:
    def __init__(self, scenario):
        self.data = {"scenario": scenario, "ok": False}
        self.failures = []
        self.t0 = time.monotonic()

    def fail(self, msg):
        LOG.error("CHECK FAILED: %s", msg)
        self.failures.append(msg)

    def check(self, cond, msg):
        if not cond:
            self.fail(msg)
        return cond

    def fact(self, key, value):
        self.data[key] = value

    def emit(self, fatal=None):
        self.data["failures"] = self.failures
        self.data["ok"] = not self.failures and not fatal
        self.data["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        if fatal:
            self.data["fatal"] = fatal
        print(json.dumps(self.data), flush=True)
        if fatal:
            return EXIT_SETUP
        return EXIT_OK if not self.failures else EXIT_CHECK


def run(scenario, body, args, browsers_needed=True):
    """Runs body(server, report, args) with the server up; cleans up; exits."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    isolate()
    os.makedirs(args.artifacts, exist_ok=True)
    report = Report(scenario)
    server = None
    code = EXIT_SETUP
    try:
        server = Server(args.sabha, args.server_log)
        body(server, report, args)
        code = report.emit()
    except (SetupError, sabha_e2e.SignalError) as e:
        code = report.emit(fatal=str(e))
    except Exception as e:  # noqa: BLE001 - report, never hang
        LOG.exception("scenario crashed")
        code = report.emit(fatal=f"crashed: {e!r}")
    finally:
        if server:
            server.stop()
    sys.exit(code)


def parser(description):
    import argparse
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--sabha", required=True, help="the sabha binary")
    p.add_argument("--artifacts", required=True, help="directory for screenshots")
    p.add_argument("--server-log", required=True, help="file for the server's output")
    return p
