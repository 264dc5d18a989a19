#!/usr/bin/env python3
"""The Listen page in headless Chromium, against an aiortc publisher.

0. A member opens the short link /j/{code}: a wrong PIN is refused on the
   page, the right one lands on the Listen page of the room.
1. The page before the button: the room's title, the big button, weight of
   everything it loaded (<= 100 KB), accessible names, a screenshot.
2. Press Listen: the page plays the publisher's 440 Hz (WebAudio in the
   page, +-10 Hz) and names the speaker. Two more WHEP listeners come and
   go: the page's count follows (the server's `audience` counts).
3. Raise hand: the server's roster has the hand up.
4. Data saver on: a new session in the low profile (60 ms packets: about
   17 packets/s instead of 50) and the tone is still heard.
5. The server drops the session: the page opens a new one by itself and
   the tone comes back.
6. Hindi: the strings switch; a screenshot.
7. A host promotes the listener: the page takes the speaker token it was
   sent and opens a /join session on stage; its WHEP session closes.
8. The host ends the room: the page says so.
No console errors (CSP violations included) anywhere.
"""

import time

import harness

FREQ = 440
NAME = "Asha Rao"
UNITS = "id,kind,name,parent\nMH,state,Maharashtra,\nD1,district,Pune,MH\nB1,booth,Booth 1,D1\n"
MEMBERS = "id,name,phone,unit\nm1,Asha Rao,+919800000001,B1\n"



def listeners(server, room):
    return [p for p in server.participants(room) if p["kind"] == "listen"]


def wait_session(browser, server, room, not_id=None, timeout=20.0):
    found = {}

    def ready():
        for p in listeners(server, room):
            if p["name"] == NAME and p["id"] != not_id:
                found["p"] = p
                return True
        return False
    browser.wait(ready, "the page's WHEP session in the roster", timeout)
    return found["p"]


def heard(browser, report, label, seconds=3.0):
    spec = browser.spectrum("#program", seconds)
    hz, db = spec.dominant_hz()
    report.fact(f"heard_{label}", spec.summary([FREQ]))
    report.check(abs(hz - FREQ) <= 10, f"{label}: the page played {hz:.1f} Hz, expected {FREQ}+-10 Hz")
    report.check(spec.present(FREQ), f"{label}: {FREQ} Hz not above the floor: {spec.summary([FREQ])}")


def body(server, report, args):
    server.ok("PUT", "/v1/org", UNITS.encode(), content_type="text/csv")
    server.ok("PUT", "/v1/members", MEMBERS.encode(), content_type="text/csv")
    created = server.room("Evening rally", "rally", unit="D1")
    room, code = created["id"], created["code"]
    pins = server.ok("POST", "/v1/pins", {"unit": "MH", "members": True})["pins"]
    pin = next(p["pin"] for p in pins if p["id"] == "m1")
    host = server.token(room, "host", "Leader")
    peers = harness.Peers(server)
    browser = harness.Browser("listener", args.artifacts)
    try:
        peers.open("leader", "publish", f"/v1/rooms/{room}/whip", host, freqs=FREQ)
        browser.track_peer_connections()

        # 0. the short link and a PIN
        browser.open(f"{server.base}/j/{code}")
        browser.wait(lambda: browser.find("#code").get_attribute("value") == code, "the code filled in")
        browser.accessibility(report, "pin")
        wrong = "000000" if pin != "000000" else "111111"
        browser.expect_refusal("/v1/pin-join")
        browser.fill("#pin", wrong)
        browser.click("#go")
        browser.wait(lambda: browser.visible("#state") and browser.text("#state"), "the refusal shown")
        report.check("not right" in browser.text("#state"), f"wrong PIN: {browser.text('#state')!r}")
        browser.screenshot(report, "pin-refused", ["#code", "#pin", "#go", "#state"])
        browser.fill("#pin", pin)
        browser.click("#go")
        browser.wait(lambda: f"/l/{room}" in browser.driver.current_url, "the Listen page after the PIN")

        # 1. before the button
        browser.wait_text("#title", "Evening rally")
        weight = browser.page_weight()
        report.fact("page_weight_bytes", weight)
        report.check(weight <= 100 * 1024, f"the page loaded {weight} bytes before audio")
        browser.accessibility(report, "listen")
        browser.screenshot(report, "listen-before", ["#title", "#listen", "#saver", "#lang"])

        # 2. listen
        browser.click("#listen")
        browser.wait_text("#state", "Live")
        first = wait_session(browser, server, room)
        heard(browser, report, "standard")
        browser.wait_text("#speakers", "Leader", timeout=10)
        browser.screenshot(report, "listen-live", ["#title", "#state", "#speakers", "#hand", "#stop"])

        # 2b. the crowd is a count: two more listeners are counted, though
        # a listener's socket never lists them
        listener_token = server.token(room, "listener", "Crowd")
        crowd = [peers.open(f"crowd{i}", "listen", f"/v1/rooms/{room}/whep", listener_token) for i in range(2)]
        browser.wait_text("#count", "3 listening", timeout=10)
        for peer in crowd:
            peers.hang_up(peer)
        browser.wait_text("#count", "1 listening", timeout=10)

        # 3. raise hand
        browser.wait(lambda: browser.find("#hand").is_enabled(), "the hand button enabled")
        browser.click("#hand")
        browser.wait(lambda: any(p["hand_raised"] for p in listeners(server, room)), "hand up on the server")
        browser.wait(lambda: browser.find("#hand").get_attribute("aria-pressed") == "true", "hand pressed")

        # 4. data saver: a new session, 60 ms packets
        standard_rate = browser.packet_rate()
        browser.click("#saver")
        second = wait_session(browser, server, room, not_id=first["id"])
        browser.wait(lambda: len(listeners(server, room)) == 1, "the old session hung up")
        browser.wait_text("#state", "Live")
        time.sleep(1.0)
        low_rate = browser.packet_rate()
        report.fact("packets_per_s", {"standard": round(standard_rate, 1), "low": round(low_rate, 1)})
        report.check(40 <= standard_rate <= 60, f"standard profile: {standard_rate:.1f} packets/s, expected ~50")
        report.check(10 <= low_rate <= 25, f"data saver: {low_rate:.1f} packets/s, expected ~17 (60 ms)")
        heard(browser, report, "low")

        # 5. the server drops the session: the page reconnects by itself
        t0 = time.monotonic()
        server.ok("DELETE", f"/v1/sessions/{second['id']}", token=None)
        third = wait_session(browser, server, room, not_id=second["id"], timeout=40)
        browser.wait_text("#state", "Live", timeout=20)
        report.fact("reconnect_s", round(time.monotonic() - t0, 1))
        heard(browser, report, "after_reconnect")
        report.check(third["id"] != second["id"], "no new session after the drop")

        # 6. Hindi
        browser.click("#lang")
        browser.wait_text("#lang", "English")
        report.check("सुन" in browser.text("#count") or "बोल" in browser.text("#speakers"),
                     f"strings not in Hindi: {browser.text('#count')!r} {browser.text('#speakers')!r}")
        report.check(browser.text("#title") == "Evening rally",
                     f"the title became {browser.text('#title')!r} in Hindi")
        browser.screenshot(report, "listen-hindi", ["#title", "#state", "#speakers"])
        browser.click("#lang")
        browser.wait_text("#lang", "हिन्दी")

        # 7. a host promotes the listener: the page moves to a talking session
        server.ok("POST", f"/v1/rooms/{room}/participants/{third['id']}/promote")

        def on_stage():
            mine = [p for p in server.participants(room) if p["name"] == NAME]
            return len(mine) == 1 and mine[0]["kind"] == "join" and mine[0]["on_stage"]
        browser.wait(on_stage, "Asha's /join session on stage, the WHEP one closed", timeout=20)
        browser.wait_text("#state", "stage", timeout=10)

        # 8. the end
        server.ok("POST", f"/v1/rooms/{room}/end")
        browser.wait_text("#state", "ended", timeout=15)
        browser.screenshot(report, "listen-ended", ["#title", "#state"])

        errors = browser.console_errors()
        report.fact("console_errors", errors)
        report.check(not errors, f"console errors: {errors}")
    finally:
        browser.quit()
        peers.close()


if __name__ == "__main__":
    harness.run("listen", body, harness.parser(__doc__).parse_args())
