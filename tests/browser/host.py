"""The Speak/host page in a real browser.

A rally; Chromium with a fake microphone playing 660 Hz opens
/h/{room}#token=<host token>, checks the microphone (the meter moves) and
goes live over WHIP. Two aiortc WHEP listeners must hear 660 Hz, and the page
must count them. One listener raises its hand over its own event socket; the
page shows it in the queue, and Promote sends that socket a speaker token.
Mute all, Lock/Unlock and End room are checked against the server's state
(participants, 423 while locked, 410 and an empty roster after the end).
"""

import json
import os
import tempfile
import time

import harness
import websocket

ROOM_NAME = "Evening rally (host page)"
MIC_HZ = 660


def read_until(ws, pred, timeout):
    """The first message on ws that satisfies pred, within timeout seconds."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ws.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            m = json.loads(ws.recv())
        except websocket.WebSocketTimeoutException:
            break
        seen.append(m.get("type"))
        if pred(m):
            return m, seen
    return None, seen


def session_id(peer):
    return peer.session_url.rstrip("/").rsplit("/", 1)[1]


def refused_status(server, room, token):
    """The status of a WHEP offer that is not SDP: 423 while locked (the
    lock is checked before the offer), 400 otherwise."""
    status, _ = server.call("POST", f"/v1/rooms/{room}/whep", b"v=0\r\n", token=token,
                            content_type="application/sdp")
    return status


def body(server, report, args):
    room = server.room(ROOM_NAME, "rally")["id"]
    host = server.token(room, "host", "Asha")
    listener_tokens = [server.token(room, "listener", n) for n in ("Ravi", "Meena", "Late")]
    wav = harness.tone_wav(os.path.join(tempfile.mkdtemp(prefix="sabha-mic-"), "mic.wav"), MIC_HZ)
    browser = harness.Browser("host", args.artifacts, mic_wav=wav)
    peers = harness.Peers(server)
    hand_ws = None
    try:
        browser.open(f"{server.base}/h/{room}#token={host}")
        browser.wait_text("#room", ROOM_NAME)

        # -- microphone check --------------------------------------------
        browser.click("#check")
        now = lambda: int(browser.find("#meter").get_attribute("aria-valuenow") or 0)  # noqa: E731
        browser.wait(lambda: now() > 0, "the meter to move")
        levels = []
        for _ in range(10):
            levels.append(now())
            time.sleep(0.1)
        report.fact("meter_values", levels)
        report.check(max(levels) > 20, f"meter hardly moves for a 660 Hz tone: {levels}")
        browser.screenshot(report, "host-mic-check", ["#check", "#meter", "#live"])

        # -- live ----------------------------------------------------------
        browser.click("#live")
        browser.wait(lambda: "live" in browser.find("#status").get_attribute("class").split(),
                     "the status to say live")
        listeners = [peers.open(f"listener{i}", "listen", f"/v1/rooms/{room}/whep", tok)
                     for i, tok in enumerate(listener_tokens[:2])]
        time.sleep(4)
        for p in listeners:
            tone = peers.tone(p, MIC_HZ, tol_hz=10)
            report.fact(f"{p.name}_hears", tone)
            report.check(tone["ok"], f"{p.name} does not hear the page's {MIC_HZ} Hz: {tone}")
        browser.wait_text("#listeners", "2 listening")
        try:
            browser.wait_text("#speakers", "Asha", timeout=10)
        except harness.SetupError as e:
            report.fail(str(e))
        report.fact("speakers_text", browser.text("#speakers"))
        report.fact("page_speaking", browser.js("return window.__sabha_speaking || null"))

        # -- a raised hand, promoted ----------------------------------------
        raiser = listeners[0]
        sid = session_id(raiser)
        hand_ws = websocket.create_connection(
            f"ws://{server.http}/v1/rooms/{room}/events?token={listener_tokens[0]}&session={sid}",
            timeout=10)
        first, _ = read_until(hand_ws, lambda m: True, 5)
        report.check(first and first["type"] == "roster", f"first message is not a roster: {first}")
        hand_ws.send(json.dumps({"type": "raise_hand"}))
        row = f'#queue li[data-id="{sid}"]'
        browser.wait(lambda: browser.visible(row), "the raised hand in the queue")
        report.check("Ravi" in browser.text(row), f"queue row does not name Ravi: {browser.text(row)!r}")
        browser.js("document.querySelector(arguments[0]).scrollIntoView({block: 'center'})", row)
        browser.screenshot(report, "host-live", ["#status", "#listeners", row, "#stop"])
        browser.click(f"{row} button.promote")
        promoted, seen = read_until(
            hand_ws, lambda m: m.get("type") == "promoted" and m.get("participant") == sid, 10)
        report.fact("promoted_message", promoted and {k: v for k, v in promoted.items() if k != "token"})
        report.check(bool(promoted and promoted.get("token") and promoted.get("join")),
                     f"the listener's socket got no promotion token (saw {seen})")
        browser.wait(lambda: not browser.visible(row), "the queue to empty after Promote")

        # -- mute all -------------------------------------------------------
        speaker = peers.open("speaker", "join", f"/v1/rooms/{room}/join",
                             server.token(room, "speaker", "Dev"), freqs=[440])
        dev = session_id(speaker)
        browser.wait(lambda: browser.visible(f'#roster li[data-id="{dev}"]'), "Dev in the list")
        browser.click("#mute-all")
        browser.wait_text(f'#roster li[data-id="{dev}"]', "muted", timeout=10)
        by_id = {p["id"]: p for p in server.participants(room)}
        report.fact("after_mute_all", {p["name"]: p["muted"] for p in by_id.values()})
        report.check(by_id[dev]["muted"], "Mute all left Dev unmuted")
        report.check(not any(p["muted"] for p in by_id.values() if p["role"] == "host"),
                     "Mute all muted the host")
        browser.click(f'#roster li[data-id="{dev}"] button.unmute')
        browser.wait(lambda: not {p["id"]: p for p in server.participants(room)}[dev]["muted"],
                     "Unmute to take effect", timeout=10)

        # -- lock / unlock --------------------------------------------------
        report.check(refused_status(server, room, listener_tokens[2]) == 400, "open room refuses")
        browser.click("#lock")
        browser.wait(lambda: browser.find("#lock").get_attribute("aria-pressed") == "true",
                     "Lock pressed")
        locked = refused_status(server, room, listener_tokens[2])
        report.fact("whep_while_locked", locked)
        report.check(locked == 423, f"a new WHEP got {locked} while locked, not 423")
        browser.click("#lock")
        browser.wait(lambda: browser.find("#lock").get_attribute("aria-pressed") == "false",
                     "Lock released")
        unlocked = refused_status(server, room, listener_tokens[2])
        report.check(unlocked == 400, f"a new WHEP got {unlocked} after unlock")

        # -- end ------------------------------------------------------------
        browser.click("#end")
        report.check(browser.visible("#confirm-end"), "End room asks for no confirmation")
        report.check(server.participants(room) != [], "the room ended before it was confirmed")
        browser.click("#end-yes")
        browser.wait_text("#status", "ended", timeout=10)
        ended, seen = read_until(hand_ws, lambda m: m.get("type") == "room_ended", 10)
        report.check(ended is not None, f"the listener's socket got no room_ended (saw {seen})")
        left = server.participants(room)
        report.fact("participants_after_end", left)
        report.check(left == [], f"sessions left after End room: {left}")
        after = refused_status(server, room, listener_tokens[2])
        report.fact("whep_after_end", after)
        report.check(after == 410, f"a new WHEP got {after} after the end, not 410")
        report.fact("summary_after_end", server.ok("GET", f"/v1/rooms/{room}/summary", token=host))
        browser.screenshot(report, "host-ended", ["#status"])

        browser.accessibility(report, "host")
        errors = browser.console_errors()
        report.fact("console_errors", errors)
        report.check(not errors, f"console errors: {errors}")
    finally:
        if hand_ws:
            hand_ws.close()
        peers.close()
        browser.quit()


if __name__ == "__main__":
    harness.run("host", body, harness.parser(__doc__).parse_args())
