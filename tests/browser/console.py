"""The operator console (/console) in a real browser.

An organisation (a state, two districts, four mandals, eight booths) and
five members are imported through the API. In the console: a wrong key is
refused with the problem's detail; the right key signs in; the tree is
expanded and a district selected; a room (now, for two hours) is scheduled
through the form and shows up in today's rooms, and the API agrees on its
unit and window. Then reach is made real: member tokens from the room's
invite, three aiortc WHEP listeners (two booths of the district; one
invited member stays away) and an aiortc WHIP publisher, kept a little over
a minute. The console's reach chart (min 1 minute, per district and per
mandal) must show exactly the booths the imported org and the listeners
imply, and the same numbers as GET /reach; the attendance table must list
the listeners; the CSV downloads must carry what the API serves.
"""

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

UNITS = [
    ("ST", "state", "Maharashtra", None),
    ("D1", "district", "Pune", "ST"),
    ("D2", "district", "Nashik", "ST"),
    ("M1", "mandal", "Haveli", "D1"),
    ("M2", "mandal", "Mulshi", "D1"),
    ("M3", "mandal", "Sinnar", "D2"),
    ("M4", "mandal", "Igatpuri", "D2"),
    ("B1", "booth", "Booth 1", "M1"),
    ("B2", "booth", "Booth 2", "M1"),
    ("B3", "booth", "Booth 3", "M1"),
    ("B4", "booth", "Booth 4", "M2"),
    ("B5", "booth", "Booth 5", "M2"),
    ("B6", "booth", "Booth 6", "M3"),
    ("B7", "booth", "Booth 7", "M3"),
    ("B8", "booth", "Booth 8", "M4"),
]
# (id, name, booth): m3 is invited but never listens; m5 is outside D1.
MEMBERS = [
    ("m1", "Asha Patil", "B1"),
    ("m2", "Ravi Kulkarni", "B1"),
    ("m3", "Meena Joshi", "B2"),
    ("m4", "Kiran More", "B4"),
    ("m5", "Sunil Pawar", "B6"),
]
LISTENING = ["m1", "m2", "m4"]
DISTRICT = "D1"
HOLD_S = 66  # reach counts a listener after min_minutes=1


def children(parent):
    return [u for u in UNITS if u[3] == parent]


def booths_under(uid):
    kids = children(uid)
    if not kids:
        return {uid}
    return set().union(*(booths_under(k[0]) for k in kids))


def descendants(uid):
    for k in children(uid):
        yield k[0]
        yield from descendants(k[0])


def expected_reach(root, kind, reached_booths):
    """{unit: [booths_reached, booths]} for the units of `kind` in root's subtree."""
    out = {}
    for u in UNITS:
        if u[1] == kind and u[0] in {root, *descendants(root)}:
            under = booths_under(u[0])
            out[u[0]] = [len(under & reached_booths), len(under)]
    return out


CHART_JS = """
const out = {};
for (const g of document.querySelectorAll('#reach-chart svg g.unit')) {
  const rb = g.querySelector('rect.booths'), rr = g.querySelector('rect.reached');
  out[g.dataset.unit] = {booths: Number(g.dataset.booths), reached: Number(g.dataset.reached),
    text: g.querySelector('text').textContent, title: g.querySelector('title').textContent,
    w_booths: Number(rb.getAttribute('width')), w_reached: Number(rr.getAttribute('width'))};
}
const svg = document.querySelector('#reach-chart svg');
return {units: out, role: svg && svg.getAttribute('role'), label: svg && svg.getAttribute('aria-label'),
        totals: document.querySelector('#reach-totals').textContent,
        table: Array.from(document.querySelectorAll('#reach-table tbody tr'),
                          tr => [tr.dataset.unit, ...Array.from(tr.children, c => c.textContent)])};
"""

# Captures what the page hands to a download link instead of saving it.
CAPTURE_JS = """
window.__saved = [];
if (!window.__origCreate) window.__origCreate = URL.createObjectURL;
URL.createObjectURL = (blob) => { blob.text().then(t => window.__saved.push(t)); return window.__origCreate(blob); };
"""


def chart_facts(b):
    return b.js(CHART_JS)


def check_chart(report, label, facts, expected, api_units):
    """The chart's groups against the expectation and the API's rows."""
    got = {u: [v["reached"], v["booths"]] for u, v in facts["units"].items()}
    report.check(got == expected, f"{label}: chart {got} != expected {expected}")
    api = {u["id"]: [u["booths_reached"], u["booths"]] for u in api_units}
    report.check(got == api, f"{label}: chart {got} != API {api}")
    widest = max((v["w_booths"] for v in facts["units"].values()), default=0)
    for uid, v in facts["units"].items():
        r, n = expected.get(uid, [None, None])
        report.check(f": {r} / {n}" in v["text"], f"{label}: {uid} label {v['text']!r}, want {r} / {n}")
        report.check(f"{r} of {n} booths" in v["title"], f"{label}: {uid} title {v['title']!r}")
        # The reached bar is the reached share of the booths bar.
        if n:
            report.check(math.isclose(v["w_reached"], v["w_booths"] * r / n, abs_tol=0.05),
                         f"{label}: {uid} bars {v['w_reached']} vs {v['w_booths']} for {r}/{n}")
    report.check(widest > 0, f"{label}: no bars drawn")
    report.check(facts["role"] == "img", f"{label}: svg role {facts['role']!r}")
    rows = {row[0]: row for row in facts["table"]}
    for uid, (r, n) in expected.items():
        row = rows.get(uid)
        report.check(row is not None and row[2] == str(r) and row[3] == str(n),
                     f"{label}: table row for {uid} is {row}, want {r} of {n}")
    return got


def body(server, report, args):
    b = harness.Browser("console", args.artifacts)
    peers = []
    try:
        scenario(server, report, b, peers)
    finally:
        for p in peers:
            p.close()
        b.quit()


def scenario(server, report, b, held):
    units = [{"id": i, "kind": k, "name": n, "parent": p} for (i, k, n, p) in UNITS]
    server.ok("PUT", "/v1/org", {"units": units})
    members = [{"id": i, "name": n, "phone": f"+9190000000{j}", "unit": u}
               for j, (i, n, u) in enumerate(MEMBERS)]
    server.ok("PUT", "/v1/members", {"members": members})

    # -- sign in: a wrong key first -----------------------------------------
    b.open(server.base + "/console")
    b.wait(lambda: b.visible("#key"), "the sign-in form")
    wrong = "sk_not_the_key_000000000000"
    status, problem = server.call("GET", "/v1/org?roots=true", token=wrong)
    report.check(status == 401, f"wrong key: API answered {status}")
    b.fill("#key", wrong)
    b.click("#signin-form button[type=submit]")
    b.wait(lambda: b.visible("#signin-error"), "the sign-in error")
    shown = b.text("#signin-error")
    detail = problem.get("detail", "") if isinstance(problem, dict) else ""
    refused = bool(detail) and detail in shown and "401" in shown and not b.visible("#app")
    report.check(refused, f"wrong key: shown {shown!r}, problem detail {detail!r}")
    report.fact("wrong_key_refused", refused)
    b.screenshot(report, "console-signin", ["#key", "#signin-error", "#signin-form button[type=submit]"])

    b.fill("#key", harness.OPERATOR_KEY)
    b.click("#signin-form button[type=submit]")
    b.wait(lambda: b.visible("#app") and not b.visible("#signin"), "the console after sign-in")
    stored = b.js("return sessionStorage.getItem('sabha.operator_key')")
    report.check(stored == harness.OPERATOR_KEY, "the key is not kept in sessionStorage")

    # -- the tree -----------------------------------------------------------
    b.click('#tree button.toggle[data-unit="ST"]')
    b.wait(lambda: b.visible(f'#tree button.unit[data-unit="{DISTRICT}"]'), "the districts under ST")
    shown_districts = b.js("return Array.from(document.querySelectorAll('#tree li[data-unit=ST] > ul > li'),"
                           " li => li.dataset.unit)")
    report.check(shown_districts == ["D1", "D2"], f"tree under ST shows {shown_districts}")
    b.click(f'#tree button.toggle[data-unit="{DISTRICT}"]')
    b.wait(lambda: b.visible('#tree button.unit[data-unit="M2"]'), "the mandals under D1")
    b.click(f'#tree button.unit[data-unit="{DISTRICT}"]')
    current = b.js("return Array.from(document.querySelectorAll('#tree [aria-current=true]'), e => e.dataset.unit)")
    report.check(current == [DISTRICT], f"aria-current on {current}")
    report.check(DISTRICT in b.text("#schedule-unit"), f"schedule form is for {b.text('#schedule-unit')!r}")

    # -- schedule a room: now, for two hours --------------------------------
    zone = b.js("return Intl.DateTimeFormat().resolvedOptions().timeZone")
    report.check(b.js("return document.querySelector('#room-tz').value") == zone, "time zone default")
    before = time.time()
    b.js("""const now = new Date(), two = n => String(n).padStart(2, '0');
            document.querySelector('#room-date').value = `${now.getFullYear()}-${two(now.getMonth()+1)}-${two(now.getDate())}`;
            document.querySelector('#room-start').value = `${two(now.getHours())}:${two(now.getMinutes())}`;""")
    b.fill("#room-name", "Evening rally, Pune")
    b.fill("#room-duration", "120")
    b.js("document.querySelector('#org').scrollIntoView()")
    b.screenshot(report, "console-tree-schedule", ["#tree", "#room-name", "#room-tz", "#schedule-submit"])
    b.click("#schedule-submit")
    b.wait(lambda: "live" in b.find("#schedule-status").get_attribute("class"), "the room scheduled", 15)
    room = b.find("#schedule-status").get_attribute("data-room")
    created = server.ok("GET", f"/v1/rooms/{room}")
    starts = harness_time(created["starts_at"])
    ends = harness_time(created["ends_at"])
    report.fact("scheduled_unit", created["unit"])
    report.fact("scheduled_window_s", ends - starts)
    report.check(created["unit"] == DISTRICT, f"room unit {created['unit']}")
    report.check(ends - starts == 7200, f"window {ends - starts} s")
    report.check(math.floor(before / 60) * 60 - 60 <= starts <= time.time(),
                 f"starts_at {created['starts_at']} is not the minute the form was filled")
    report.check(created["time_zone"] == zone, f"time zone {created['time_zone']} != {zone}")
    # The scheduler opens the window just after the room is created.
    deadline = time.monotonic() + 10
    while created["status"] != "open" and time.monotonic() < deadline:
        time.sleep(0.2)
        created = server.ok("GET", f"/v1/rooms/{room}")
    report.check(created["status"] == "open", f"status {created['status']}")

    # The same form shows a 422 as the problem's detail.
    b.fill("#room-name", "Hourly, refused")
    b.fill("#room-duration", "120")
    b.js("document.querySelector('#room-recurrence').value = 'FREQ=HOURLY'")
    b.click("#schedule-submit")
    b.wait(lambda: "bad" in b.find("#schedule-status").get_attribute("class"), "the 422 shown")
    report.check("422" in b.text("#schedule-status"), f"422 shown as {b.text('#schedule-status')!r}")
    b.js("document.querySelector('#room-recurrence').value = ''")

    # -- today's rooms -----------------------------------------------------
    row = f'#rooms li[data-room="{room}"]'
    b.wait(lambda: b.visible(row), "the room in today's rooms")
    row_text = b.text(row)
    report.check("Evening rally, Pune" in row_text and DISTRICT in row_text, f"row shows {row_text!r}")
    b.wait(lambda: b.find(f"{row} .room-status").get_attribute("data-status") == "open", "the row's status open", 15)
    report.check(b.text(f"{row} .room-status") == "Open", f"status shown as {b.text(row + ' .room-status')!r}")

    # -- listeners with invites, and a publisher ----------------------------
    invites = server.ok("GET", f"/v1/rooms/{room}/invite?unit={DISTRICT}")["invites"]
    by_member = {i["member"]: i for i in invites}
    report.check(sorted(by_member) == ["m1", "m2", "m3", "m4"], f"invites for {sorted(by_member)}")
    peers = harness.Peers(server)
    held.append(peers)
    host = server.token(room, "host", "Stage")
    peers.open("pub", "publish", f"/v1/rooms/{room}/whip", host, freqs=[440])
    for m in LISTENING:
        peers.open(m, "listen", f"/v1/rooms/{room}/whep", by_member[m]["token"])
    t_open = time.monotonic()
    live = len(server.participants(room))
    b.wait(lambda: b.find(f"{row} .live-count").get_attribute("data-count") == str(live), f"live count {live}", 15)
    report.check(b.text(f"{row} .live-count") == f"{live} live", f"live count shown as {b.text(row + ' .live-count')!r}")
    report.fact("live_count", live)

    # Host and listener links, while the listeners listen.
    b.click(f'{row} button[data-action="host_link"]')
    b.wait(lambda: "#token=" in b.js("return document.querySelector('#link-text').value"), "a host link")
    host_link = b.js("return document.querySelector('#link-text').value")
    report.check(f"/h/{room}#token=" in host_link, f"host link {host_link[:60]}")
    b.click(f'{row} button[data-action="listener_link"]')
    b.wait(lambda: f"/l/{room}#token=" in b.js("return document.querySelector('#link-text').value"),
           "a listener link")
    b.js("document.querySelector('#today').scrollIntoView()")
    b.screenshot(report, "console-today", ["#rooms-status", "#link-text", "#link-open", "#link-copy"])

    while time.monotonic() - t_open < HOLD_S:
        time.sleep(1)

    # -- attendance ----------------------------------------------------------
    b.click(f'{row} button[data-action="attendance"]')
    names = {by_member[m]["name"] for m in LISTENING}
    b.wait(lambda: b.js("return document.querySelectorAll('#attendance-table td.who').length")
           >= len(LISTENING) + 1, "attendance rows (the listeners and the publisher)")
    shown_names = set(b.js("return Array.from(document.querySelectorAll('#attendance-table td.who'),"
                           " e => e.textContent)"))
    names_ok = names <= shown_names and by_member["m3"]["name"] not in shown_names
    report.check(names_ok, f"attendance shows {sorted(shown_names)}, want {sorted(names)}")
    report.fact("attendance_names_ok", names_ok)
    b.js(CAPTURE_JS)
    b.click("#attendance-csv")
    b.wait(lambda: b.js("return window.__saved.length") >= 1, "the attendance CSV")
    csv = b.js("return window.__saved[0]")
    report.check(csv.startswith("session,name,member") and all(n in csv for n in names),
                 f"attendance CSV: {csv[:120]!r}")

    # -- reach ---------------------------------------------------------------
    reached_booths = {u for (i, _, u) in MEMBERS if i in LISTENING}
    b.click(f'{row} button[data-action="reach"]')
    b.wait(lambda: b.visible("#reach-min"), "the reach form")
    b.fill("#reach-min", "1")
    b.click("#reach-show")
    b.wait(lambda: b.js("return document.querySelector('#reach-chart svg') !== null && "
                        "document.querySelector('#reach-status').classList.contains('hidden')"), "the reach chart")
    b.wait(lambda: chart_facts(b)["label"] and "1 min" in chart_facts(b)["totals"], "reach at 1 minute")
    api = server.ok("GET", f"/v1/rooms/{room}/reach?min_minutes=1&kind=district")
    facts = chart_facts(b)
    want = expected_reach(DISTRICT, "district", reached_booths)
    got = check_chart(report, "district", facts, want, api["units"])
    report.fact("chart", {u: v for u, v in got.items()})
    report.fact("expected_reach", want)
    totals = api["totals"]
    label = facts["label"] or ""
    report.check(f"{totals['booths_reached']} of {totals['booths']}" in label, f"svg aria-label {label!r}")
    report.check(f"{totals['booths_reached']} of {totals['booths']} booths" in facts["totals"]
                 and f"{totals['listeners']} listeners" in facts["totals"], f"totals text {facts['totals']!r}")
    report.check(totals["listeners"] == len(LISTENING), f"API counts {totals['listeners']} listeners")
    b.js("document.querySelector('#reach-chart').scrollIntoView()")
    b.screenshot(report, "console-reach", ["#reach-chart svg", "#reach-totals", "#reach-min"])

    b.js("const s = document.querySelector('#reach-kind'); s.value = 'mandal';"
         " s.dispatchEvent(new Event('change'))")
    b.wait(lambda: "M1" in chart_facts(b)["units"], "the mandal chart")
    api_m = server.ok("GET", f"/v1/rooms/{room}/reach?min_minutes=1&kind=mandal")
    want_m = expected_reach(DISTRICT, "mandal", reached_booths)
    got_m = check_chart(report, "mandal", chart_facts(b), want_m, api_m["units"])
    report.fact("chart_mandal", got_m)
    report.fact("chart_matches_api", got == {u["id"]: [u["booths_reached"], u["booths"]] for u in api["units"]}
                and got_m == {u["id"]: [u["booths_reached"], u["booths"]] for u in api_m["units"]})

    b.js(CAPTURE_JS)
    b.click("#reach-csv")
    b.wait(lambda: b.js("return window.__saved.length") >= 1, "the reach CSV")
    csv = b.js("return window.__saved[0]")
    status, api_csv = server.call("GET", f"/v1/rooms/{room}/reach.csv?min_minutes=1&kind=mandal")
    # listener_seconds (the last column) of open sessions grows by the second.
    def stable(text):
        return [line.rsplit(",", 1)[0] for line in text.splitlines()]
    report.check(status == 200 and len(stable(csv)) == 3 and stable(csv) == stable(api_csv),
                 f"reach CSV {csv!r} != API {api_csv!r}")

    # -- Hindi and back: the dynamic parts are redrawn -------------------------
    b.click("#lang")
    b.wait(lambda: b.js("return document.documentElement.lang") == "hi", "the page in Hindi")
    report.check(b.text("#today-h") == "आज की सभाएँ", f"Hindi heading {b.text('#today-h')!r}")
    report.check("बूथ पहुँचे" in b.text("#reach-totals"), f"Hindi totals {b.text('#reach-totals')!r}")
    b.click("#lang")
    b.wait(lambda: b.js("return document.documentElement.lang") == "en", "the page in English again")

    # -- what went wrong -------------------------------------------------------
    b.accessibility(report, "console")
    errors = b.console_errors()
    # The wrong key's 401 and the bad recurrence's 422 are logged by
    # Chromium as failed loads; anything else (a CSP violation) is a failure.
    errors = [e for e in errors if not ("Failed to load resource" in e and (" 401 " in e or " 422 " in e))]
    report.fact("console_errors", errors)
    report.check(not errors, f"console errors: {errors}")

    b.click("#signout")
    b.wait(lambda: b.visible("#signin") and not b.visible("#app"), "signed out")
    report.check(b.js("return sessionStorage.getItem('sabha.operator_key')") is None, "key kept after sign-out")


def harness_time(text):
    from datetime import datetime
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


if __name__ == "__main__":
    harness.run("console", body, harness.parser(__doc__).parse_args())
