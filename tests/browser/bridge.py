"""The bridge page in two real browsers and one aiortc peer.

A bridge room; Chromium A (fake microphone at 500 Hz) and Chromium B (700 Hz)
open /b/{room}#token=… and press Join; an aiortc `join` peer sends 900 Hz.
Each must hear the other two and not itself (mix-minus): A 700+900, B
500+900, aiortc 500+700. The roster marks the talkers as speaking. Then A
presses Mute: B and aiortc stop hearing 500 Hz within about 2 s while the
other tones stay; Unmute brings it back. A host's mute (REST) shows on B's
page, and B can unmute itself.
"""

import os
import tempfile
import time

import harness
import sabha_e2e

ROOM_NAME = "Booth bridge (bridge page)"
A_HZ, B_HZ, PEER_HZ = 500, 700, 900
# a tone that must not be heard stands this far below the loudest one that must
SELF_BELOW_DB = 30.0


def page_check(report, label, spec, hear, not_hear):
    """hear: tones that must stand out; not_hear: tones SELF_BELOW_DB below them."""
    tones = (*hear, *not_hear)
    report.fact(f"{label}_spectrum", spec.summary(tones))
    ok = True
    for f in hear:
        ok &= report.check(spec.present(f, others=tones), f"{label}: {f} Hz missing: {spec.summary(tones)}")
    # Against the loudest wanted tone: an echo of oneself would come in at
    # about the others' level (0 dB), while codec by-products of a correct
    # mix-minus sit 45-60 dB below it. The weakest wanted tone is no
    # reference: a talker whose microphone was just re-enabled ramps up
    # through Chrome's gain control and noise suppression for seconds.
    loudest = max(spec.level(f) for f in hear)
    for f in not_hear:
        ok &= report.check(spec.level(f) <= loudest - SELF_BELOW_DB,
                           f"{label}: {f} Hz is only {loudest - spec.level(f):.1f} dB below the "
                           f"loudest wanted tone (need {SELF_BELOW_DB}): {spec.summary(tones)}")
    return ok


def peer_check(report, label, peer, hear, not_hear):
    res = sabha_e2e.analyse_mix_minus(peer.last_samples(2.0), None, list(hear),
                                      absent_hz=list(not_hear), min_self_below_db=SELF_BELOW_DB)
    report.fact(label, res)
    report.check(res["ok"], f"{label}: {res.get('reason')}")


def session_of(server, room, name):
    for p in server.participants(room):
        if p["name"] == name:
            return p["id"]
    raise harness.SetupError(f"{name} has no session in the room")


def joined(browser):
    browser.click("#join")
    browser.wait(lambda: "live" in browser.find("#status").get_attribute("class").split(),
                 f"{browser.name} to be live")


def body(server, report, args):
    room = server.room(ROOM_NAME, "bridge")["id"]
    mics = tempfile.mkdtemp(prefix="sabha-mic-")
    a = harness.Browser("A", args.artifacts, mic_wav=harness.tone_wav(os.path.join(mics, "a.wav"), A_HZ))
    b = harness.Browser("B", args.artifacts, mic_wav=harness.tone_wav(os.path.join(mics, "b.wav"), B_HZ))
    peers = harness.Peers(server)
    try:
        a.open(f"{server.base}/b/{room}#token={server.token(room, 'participant', 'Anil')}")
        b.open(f"{server.base}/b/{room}#token={server.token(room, 'participant', 'Bela')}")
        for br in (a, b):
            br.wait_text("#room", ROOM_NAME)
        a.screenshot(report, "bridge-before-join", ["#join", "#room"])
        joined(a)
        joined(b)
        peer = peers.open("chitra", "join", f"/v1/rooms/{room}/join",
                          server.token(room, "participant", "Chitra"), freqs=[PEER_HZ])
        time.sleep(4)

        # -- mix-minus ------------------------------------------------------
        page_check(report, "A_hears", a.spectrum("#program", 3), (B_HZ, PEER_HZ), (A_HZ,))
        page_check(report, "B_hears", b.spectrum("#program", 3), (A_HZ, PEER_HZ), (B_HZ,))
        peer_check(report, "aiortc_hears", peer, (A_HZ, B_HZ), (PEER_HZ,))

        # -- speaking indicators ----------------------------------------------
        def speaking(br):  # in one script: the roster is redrawn on every event
            return br.js("return [...document.querySelectorAll('#roster li.speaking')]"
                         ".map(e => e.textContent)")
        try:
            a.wait(lambda: {"Bela", "Chitra"} <= {w.split()[0] for w in speaking(a) if w},
                   "Bela and Chitra marked speaking on A", timeout=10)
        except harness.SetupError as e:
            report.fail(str(e))
        report.fact("A_speaking_rows", speaking(a))
        report.fact("A_speakers_text", a.text("#speakers"))
        a.screenshot(report, "bridge-live", ["#mute", "#hand", "#leave", "#roster"])

        # -- A mutes itself ---------------------------------------------------
        anil = session_of(server, room, "Anil")
        a.click("#mute")
        a.wait(lambda: a.find("#mute").get_attribute("aria-pressed") == "true", "Mute pressed")
        server_muted = {p["id"]: p["muted"] for p in server.participants(room)}[anil]
        report.check(server_muted, "A pressed Mute but the server does not hold A muted")
        report.check(not a.visible("#host-muted"), "A's own mute is shown as a host's")
        time.sleep(2)
        page_check(report, "B_hears_A_muted", b.spectrum("#program", 2), (PEER_HZ,), (A_HZ,))
        peer_check(report, "aiortc_hears_A_muted", peer, (B_HZ,), (A_HZ, PEER_HZ))
        a.screenshot(report, "bridge-muted", ["#mute", "#roster"])

        a.click("#mute")
        a.wait(lambda: a.find("#mute").get_attribute("aria-pressed") == "false", "Mute released")
        time.sleep(2)
        page_check(report, "B_hears_A_unmuted", b.spectrum("#program", 2), (A_HZ, PEER_HZ), (B_HZ,))
        peer_check(report, "aiortc_hears_A_unmuted", peer, (A_HZ, B_HZ), (PEER_HZ,))

        # -- a host mutes B; B sees it and unmutes itself -----------------------
        bela = session_of(server, room, "Bela")
        server.ok("POST", f"/v1/rooms/{room}/participants/{bela}/mute")
        try:
            b.wait(lambda: b.visible("#host-muted"), "B to show that a host muted it", timeout=5)
        except harness.SetupError as e:
            report.fail(str(e))
        b.screenshot(report, "bridge-host-muted", ["#host-muted", "#mute"])
        b.click("#mute")
        b.wait(lambda: not {p["id"]: p["muted"] for p in server.participants(room)}[bela],
               "B's unmute to reach the server", timeout=5)
        report.check(not b.visible("#host-muted"), "B still shows the host's mute after unmuting")

        # -- hand and leave -------------------------------------------------------
        b.click("#hand")
        b.wait(lambda: b.find("#hand").get_attribute("aria-pressed") == "true", "B's hand up")
        a.wait(lambda: any("Bela" in w and "hand" in w for w in
                           a.js("return [...document.querySelectorAll('#roster li')]"
                                ".map(e => e.textContent)")), "B's hand on A's roster", timeout=5)
        b.click("#hand")
        b.click("#leave")
        b.wait(lambda: b.visible("#join"), "B's Join button back after Leave")
        a.wait(lambda: "Bela" not in a.text("#roster"), "Bela gone from A's roster", timeout=10)

        for br in (a, b):
            br.accessibility(report, f"bridge-{br.name}")
            errors = br.console_errors()
            report.fact(f"console_errors_{br.name}", errors)
            report.check(not errors, f"{br.name}: console errors: {errors}")
    finally:
        peers.close()
        a.quit()
        b.quit()


if __name__ == "__main__":
    harness.run("bridge", body, harness.parser(__doc__).parse_args())
