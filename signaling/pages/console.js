// The operator console: sign in with an operator key, browse the
// organisation, schedule a room for a unit, watch today's rooms, hand out
// host and listener links, and read attendance and reach. Everything goes
// through the REST API with `Authorization: Bearer <key>`; the key is kept
// in sessionStorage (this tab only) until sign-out.

import { $, api, ApiError, el, formatTime, initPage } from "./sabha.js";
import { addStrings, applyI18n, lang, onLangChange, t } from "./i18n.js";

addStrings({
  en: {
    console_title: "Operator console",
    sign_in_title: "Sign in",
    key_label: "Operator key",
    key_help: "The key stays in this tab only and is forgotten when you sign out or close it.",
    sign_in: "Sign in",
    sign_out: "Sign out",
    key_missing: "Enter an operator key (it starts with sk_).",
    signin_failed: "Sign-in failed: {detail}",
    org_title: "Organisation",
    current_unit: "Current unit:",
    whole_org: "Whole organisation",
    expand: "Show units under {name}",
    collapse: "Hide units under {name}",
    no_units: "No units under it.",
    no_org: "No organisation imported yet: rooms are for the whole organisation.",
    loading: "Loading…",
    schedule_title: "Schedule a room",
    for_unit: "For:",
    room_name: "Name",
    room_kind: "Kind",
    kind_rally: "Rally (one stage, many listeners)",
    kind_bridge: "Bridge (everyone talks)",
    room_date: "Date",
    room_start: "Start time",
    room_duration: "Duration (minutes)",
    room_tz: "Time zone",
    more_options: "More options",
    room_recurrence: "Repeat (RRULE, optional)",
    room_capacity: "Capacity (sessions, optional)",
    room_lobby: "Lobby: listeners may wait before the start",
    schedule_submit: "Schedule",
    scheduling: "Scheduling…",
    scheduled: "Scheduled “{name}”: {start} – {end}. Room code {code}.",
    bad_name: "Give the room a name.",
    bad_date: "Choose a date and a start time.",
    bad_duration: "The duration must be 1 to 1440 minutes.",
    bad_tz: "Unknown time zone: {tz}",
    bad_capacity: "The capacity must be a whole number of at least 1.",
    problem: "{title} ({status}): {detail}",
    today_title: "Today's rooms",
    no_rooms: "No rooms today.",
    rooms_count: "Rooms today: {n}. Live counts refresh every 5 seconds.",
    live_n: "{n} live",
    col_unit: "Unit",
    col_who: "Name",
    col_member: "Member",
    col_role: "Role",
    col_joined: "Joined",
    col_left: "Left",
    col_minutes: "Minutes",
    col_reason: "Reason",
    col_reached: "Reached",
    col_booths: "Booths",
    col_listeners: "Listeners",
    kind_rally_short: "Rally",
    kind_bridge_short: "Bridge",
    status_open: "Open",
    status_scheduled: "Scheduled",
    status_ended: "Ended",
    status_missed: "Missed",
    unscheduled: "Any time",
    host_link: "Host link",
    listener_link: "Listener link",
    attendance: "Attendance",
    reach: "Reach",
    host_link_for: "Host link: {name}",
    listener_link_for: "Listener link: {name}",
    link_expires: "Valid until {time}. Anyone with this link can join as {role}.",
    role_host: "host",
    role_listener: "listener",
    copy: "Copy link",
    link_label: "Link to send",
    open_link: "Open",
    copied: "Copied.",
    copy_failed: "Could not copy: select the link and copy it by hand.",
    attendance_for: "Attendance: {name}",
    attendance_totals: "{sessions} sessions ({open} open), {minutes} minutes in all.",
    no_sessions: "Nobody has joined yet.",
    refresh: "Refresh",
    download_csv: "Download CSV",
    reach_for: "Reach: {name}",
    reach_kind: "Group by",
    kind_district: "District",
    kind_mandal: "Mandal",
    kind_booth: "Booth",
    reach_min: "Counted after (minutes, 1–1440)",
    reach_show: "Show reach",
    bad_min: "Minutes must be a whole number from 1 to 1440.",
    reach_totals:
      "{reached} of {booths} booths reached ({pct}%), {listeners} listeners, {minutes} listener-minutes (listening at least {min} min).",
    reach_unplaced: "Sessions not placed in any booth: {n}.",
    reach_chart_label: "Booths reached per {kind}: {reached} of {booths} in all.",
    reach_bar: "{name}: {reached} of {booths} booths reached",
    reach_table_caption: "Booths reached per unit",
    no_units_of_kind: "No units of this kind in the room's audience.",
  },
  hi: {
    console_title: "संचालक कंसोल",
    sign_in_title: "साइन इन",
    key_label: "संचालक कुंजी",
    key_help: "कुंजी केवल इसी टैब में रहती है; साइन आउट करने या टैब बंद करने पर भुला दी जाती है।",
    sign_in: "साइन इन करें",
    sign_out: "साइन आउट",
    key_missing: "संचालक कुंजी डालें (यह sk_ से शुरू होती है)।",
    signin_failed: "साइन इन नहीं हुआ: {detail}",
    org_title: "संगठन",
    current_unit: "चुनी हुई इकाई:",
    whole_org: "पूरा संगठन",
    expand: "{name} के नीचे की इकाइयाँ दिखाएँ",
    collapse: "{name} के नीचे की इकाइयाँ छिपाएँ",
    no_units: "इसके नीचे कोई इकाई नहीं।",
    no_org: "अभी कोई संगठन आयात नहीं हुआ: सभाएँ पूरे संगठन के लिए हैं।",
    loading: "लोड हो रहा है…",
    schedule_title: "सभा तय करें",
    for_unit: "किसके लिए:",
    room_name: "नाम",
    room_kind: "प्रकार",
    kind_rally: "रैली (एक मंच, बहुत से श्रोता)",
    kind_bridge: "ब्रिज (सब बोलते हैं)",
    room_date: "तारीख़",
    room_start: "शुरू होने का समय",
    room_duration: "अवधि (मिनट)",
    room_tz: "समय क्षेत्र",
    more_options: "और विकल्प",
    room_recurrence: "दोहराएँ (RRULE, वैकल्पिक)",
    room_capacity: "क्षमता (सत्र, वैकल्पिक)",
    room_lobby: "लॉबी: श्रोता शुरू होने से पहले इंतज़ार कर सकते हैं",
    schedule_submit: "तय करें",
    scheduling: "तय कर रहे हैं…",
    scheduled: "“{name}” तय हुई: {start} – {end}। सभा कोड {code}।",
    bad_name: "सभा का नाम दें।",
    bad_date: "तारीख़ और शुरू होने का समय चुनें।",
    bad_duration: "अवधि 1 से 1440 मिनट होनी चाहिए।",
    bad_tz: "अनजान समय क्षेत्र: {tz}",
    bad_capacity: "क्षमता कम से कम 1 की पूर्ण संख्या होनी चाहिए।",
    problem: "{title} ({status}): {detail}",
    today_title: "आज की सभाएँ",
    no_rooms: "आज कोई सभा नहीं।",
    rooms_count: "आज की सभाएँ: {n}। लाइव संख्या हर 5 सेकंड में ताज़ा होती है।",
    live_n: "{n} लाइव",
    col_unit: "इकाई",
    col_who: "नाम",
    col_member: "सदस्य",
    col_role: "भूमिका",
    col_joined: "जुड़े",
    col_left: "गए",
    col_minutes: "मिनट",
    col_reason: "कारण",
    col_reached: "पहुँचे",
    col_booths: "बूथ",
    col_listeners: "श्रोता",
    kind_rally_short: "रैली",
    kind_bridge_short: "ब्रिज",
    status_open: "खुली",
    status_scheduled: "तय",
    status_ended: "समाप्त",
    status_missed: "छूटी",
    unscheduled: "कभी भी",
    host_link: "होस्ट लिंक",
    listener_link: "श्रोता लिंक",
    attendance: "उपस्थिति",
    reach: "पहुँच",
    host_link_for: "होस्ट लिंक: {name}",
    listener_link_for: "श्रोता लिंक: {name}",
    link_expires: "{time} तक मान्य। इस लिंक वाला कोई भी {role} के रूप में जुड़ सकता है।",
    role_host: "होस्ट",
    role_listener: "श्रोता",
    copy: "लिंक कॉपी करें",
    link_label: "भेजने के लिए लिंक",
    open_link: "खोलें",
    copied: "कॉपी हो गया।",
    copy_failed: "कॉपी नहीं हो सका: लिंक चुनकर ख़ुद कॉपी करें।",
    attendance_for: "उपस्थिति: {name}",
    attendance_totals: "{sessions} सत्र ({open} खुले), कुल {minutes} मिनट।",
    no_sessions: "अभी कोई नहीं जुड़ा।",
    refresh: "ताज़ा करें",
    download_csv: "CSV डाउनलोड करें",
    reach_for: "पहुँच: {name}",
    reach_kind: "किस स्तर पर",
    kind_district: "ज़िला",
    kind_mandal: "मंडल",
    kind_booth: "बूथ",
    reach_min: "कितने मिनट बाद गिना जाए (1–1440)",
    reach_show: "पहुँच दिखाएँ",
    bad_min: "मिनट 1 से 1440 की पूर्ण संख्या होनी चाहिए।",
    reach_totals:
      "{booths} में से {reached} बूथ पहुँचे ({pct}%), {listeners} श्रोता, {minutes} श्रोता-मिनट (कम से कम {min} मिनट सुना)।",
    reach_unplaced: "किसी बूथ में न रखे जा सके सत्र: {n}।",
    reach_chart_label: "हर {kind} में पहुँचे बूथ: कुल {booths} में से {reached}।",
    reach_bar: "{name}: {booths} में से {reached} बूथ पहुँचे",
    reach_table_caption: "हर इकाई में पहुँचे बूथ",
    no_units_of_kind: "सभा के श्रोताओं में इस स्तर की कोई इकाई नहीं।",
  },
});

const KEY_STORE = "sabha.operator_key";
const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";

const state = {
  key: null,
  unit: null, // the current unit {id, name, kind} or null (whole organisation)
  units: new Map(), // every unit seen, by id
  rooms: [], // today's rooms, as listed
  rows: new Map(), // room id -> {tr, cells}
  timer: null,
  reachRoom: null,
  reachData: null,
  attendanceRoom: null,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The key-authorised API call.
const call = (path, opts = {}) => api(path, { token: state.key, ...opts });

/// A problem for people: its detail (what to fix), with status and title.
function explain(error) {
  if (error instanceof ApiError) {
    return t("problem", {
      title: error.problem?.title || "HTTP",
      status: error.status,
      detail: error.problem?.detail || error.message,
    });
  }
  return error.message || String(error);
}

function show(node, on = true) {
  node.classList.toggle("hidden", !on);
}

function say(node, text, kind) {
  node.textContent = text;
  node.classList.remove("bad", "live", "warn");
  if (kind) node.classList.add(kind);
  show(node, Boolean(text));
}

function locale() {
  return lang() === "hi" ? "hi-IN" : "en-IN";
}

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  for (const c of children) e.append(c);
  return e;
}

/// A time in the room's own zone ("18:30" today, else with the date), with
/// the zone named when it is not the browser's.
function roomTime(iso, zone) {
  if (!iso) return t("unscheduled");
  const here = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (!zone || zone === here) return formatTime(iso);
  try {
    const d = new Date(iso);
    const sameDay = sameLocalDay(d, new Date(), zone);
    const opts = sameDay
      ? { hour: "2-digit", minute: "2-digit", timeZone: zone }
      : { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", timeZone: zone };
    return `${d.toLocaleString(locale(), opts)} (${zone})`;
  } catch (_) {
    return formatTime(iso);
  }
}

/// "YYYY-MM-DD" of an instant in a zone.
function dayIn(date, zone) {
  const parts = new Intl.DateTimeFormat("en-CA", {
    timeZone: zone,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
  }).formatToParts(date);
  const get = (type) => parts.find((p) => p.type === type).value;
  return `${get("year")}-${get("month")}-${get("day")}`;
}

function sameLocalDay(a, b, zone) {
  return dayIn(a, zone) === dayIn(b, zone);
}

/// The zone's offset from UTC (ms) at an instant.
function offsetAt(ms, zone) {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: zone,
    hourCycle: "h23",
    year: "numeric",
    month: "numeric",
    day: "numeric",
    hour: "numeric",
    minute: "numeric",
    second: "numeric",
  }).formatToParts(new Date(ms));
  const n = (type) => Number(parts.find((p) => p.type === type).value);
  const asUtc = Date.UTC(n("year"), n("month") - 1, n("day"), n("hour") % 24, n("minute"), n("second"));
  return asUtc - Math.floor(ms / 1000) * 1000;
}

/// The instant (ms) of a wall-clock date and time in a zone.
function wallClockToUtc(date, time, zone) {
  const [y, mo, d] = date.split("-").map(Number);
  const [h, mi] = time.split(":").map(Number);
  const guess = Date.UTC(y, mo - 1, d, h, mi);
  let ms = guess - offsetAt(guess, zone);
  ms = guess - offsetAt(ms, zone); // once more, across a daylight-saving change
  return ms;
}

/// RFC 3339 UTC to the second, as the API wants it.
function rfc3339(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function validZone(zone) {
  try {
    new Intl.DateTimeFormat("en", { timeZone: zone });
    return true;
  } catch (_) {
    return false;
  }
}

/// Saves text as a file through a Blob and a download link.
function saveFile(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el("a", { href: url, download: name, class: "hidden" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function unitLabel(id) {
  if (!id) return t("whole_org");
  const u = state.units.get(id);
  return u ? `${u.name} (${u.id})` : id;
}

// ---------------------------------------------------------------------------
// Sign in and out
// ---------------------------------------------------------------------------

function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORE);
  } catch (_) {
    return null;
  }
}

function storeKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORE, key);
    else sessionStorage.removeItem(KEY_STORE);
  } catch (_) {
    /* storage disabled: the key lives in this page only */
  }
}

async function signIn(key) {
  const error = $("#signin-error");
  say(error, "");
  state.key = key;
  let roots;
  try {
    roots = (await call("/v1/org?roots=true")).units;
  } catch (e) {
    state.key = null;
    storeKey(null);
    say(error, t("signin_failed", { detail: explain(e) }), "bad");
    show($("#signin"));
    show($("#app"), false);
    $("#key").focus();
    return;
  }
  storeKey(key);
  $("#key").value = "";
  show($("#signin"), false);
  show($("#app"));
  show($("#signout"));
  renderTree(roots);
  selectUnit(null);
  await refreshRooms();
  clearInterval(state.timer);
  state.timer = setInterval(refreshRooms, REFRESH_MS);
}

function signOut() {
  clearInterval(state.timer);
  state.timer = null;
  state.key = null;
  storeKey(null);
  state.units.clear();
  state.rows.clear();
  state.rooms = [];
  $("#tree").replaceChildren();
  $("#rooms").replaceChildren();
  for (const id of ["#links", "#attendance", "#reach", "#app", "#signout"]) show($(id), false);
  show($("#signin"));
  say($("#signin-error"), "");
  $("#key").focus();
}

// ---------------------------------------------------------------------------
// The organisation tree
// ---------------------------------------------------------------------------

function unitItem(u) {
  state.units.set(u.id, u);
  const pick = el("button", {
    type: "button",
    class: "unit",
    "data-unit": u.id,
    text: `${u.name} · ${u.kind}`,
    on: { click: () => selectUnit(u) },
  });
  const li = el("li", { "data-unit": u.id });
  if (u.kind !== "booth") {
    const toggle = el("button", {
      type: "button",
      class: "toggle",
      "aria-expanded": "false",
      "aria-label": t("expand", { name: u.name }),
      "data-unit": u.id,
      text: "▸",
    });
    toggle.addEventListener("click", () => expand(u, li, toggle));
    li.append(toggle, " ", pick);
  } else {
    li.append(pick);
  }
  return li;
}

async function expand(u, li, toggle) {
  const open = toggle.getAttribute("aria-expanded") === "true";
  const existing = li.querySelector(":scope > ul, :scope > p");
  if (open) {
    toggle.setAttribute("aria-expanded", "false");
    toggle.setAttribute("aria-label", t("expand", { name: u.name }));
    toggle.textContent = "▸";
    if (existing) show(existing, false);
    return;
  }
  toggle.setAttribute("aria-expanded", "true");
  toggle.setAttribute("aria-label", t("collapse", { name: u.name }));
  toggle.textContent = "▾";
  if (existing) {
    show(existing);
    return;
  }
  const status = el("p", { class: "muted", text: t("loading") });
  li.append(status);
  try {
    const { units } = await call(`/v1/org?parent=${encodeURIComponent(u.id)}`);
    status.remove();
    if (!units.length) li.append(el("p", { class: "muted", text: t("no_units") }));
    else li.append(el("ul", {}, ...units.map(unitItem)));
  } catch (e) {
    status.textContent = explain(e);
    status.className = "status bad";
  }
}

function renderTree(roots) {
  const tree = $("#tree");
  const whole = el("button", {
    type: "button",
    class: "unit",
    "data-unit": "",
    "data-i18n": "whole_org",
    text: t("whole_org"),
    on: { click: () => selectUnit(null) },
  });
  tree.replaceChildren(el("ul", {}, el("li", { "data-unit": "" }, whole), ...roots.map(unitItem)));
  say($("#org-status"), roots.length ? "" : t("no_org"));
}

function selectUnit(u) {
  state.unit = u;
  for (const b of document.querySelectorAll("#tree button.unit")) {
    if (b.dataset.unit === (u ? u.id : "")) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
  $("#current-unit").textContent = unitLabel(u?.id);
  $("#schedule-unit").textContent = unitLabel(u?.id);
}

// ---------------------------------------------------------------------------
// Scheduling
// ---------------------------------------------------------------------------

function two(n) {
  return String(n).padStart(2, "0");
}

function fillScheduleDefaults() {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const now = new Date();
  $("#room-date").value = `${now.getFullYear()}-${two(now.getMonth() + 1)}-${two(now.getDate())}`;
  $("#room-start").value = `${two(now.getHours())}:${two(now.getMinutes())}`;
  $("#room-tz").value = zone;
  const list = $("#time-zones");
  if (!list.children.length && Intl.supportedValuesOf) {
    for (const z of Intl.supportedValuesOf("timeZone")) list.append(el("option", { value: z }));
  }
}

async function schedule(event) {
  event.preventDefault();
  const status = $("#schedule-status");
  const name = $("#room-name").value.trim();
  const date = $("#room-date").value;
  const start = $("#room-start").value;
  const minutes = Number($("#room-duration").value);
  const zone = $("#room-tz").value.trim();
  const recurrence = $("#room-recurrence").value.trim();
  const capacityText = $("#room-capacity").value.trim();
  const fail = (text, field) => {
    say(status, text, "bad");
    field?.focus();
  };
  if (!name) return fail(t("bad_name"), $("#room-name"));
  if (!date || !start) return fail(t("bad_date"), $(date ? "#room-start" : "#room-date"));
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > 1440) return fail(t("bad_duration"), $("#room-duration"));
  if (!zone || !validZone(zone)) return fail(t("bad_tz", { tz: zone }), $("#room-tz"));
  const capacity = capacityText ? Number(capacityText) : null;
  if (capacityText && (!Number.isInteger(capacity) || capacity < 1)) return fail(t("bad_capacity"), $("#room-capacity"));
  const startsMs = wallClockToUtc(date, start, zone);
  const body = {
    name,
    kind: $("#room-kind").value,
    unit: state.unit ? state.unit.id : null,
    starts_at: rfc3339(startsMs),
    ends_at: rfc3339(startsMs + minutes * 60000),
    time_zone: zone,
  };
  if (recurrence) body.recurrence = recurrence;
  if (capacity) body.capacity = capacity;
  if ($("#room-lobby").checked) body.lobby = true;
  const button = $("#schedule-submit");
  button.disabled = true;
  say(status, t("scheduling"));
  try {
    const room = await call("/v1/rooms", { method: "POST", json: body });
    say(
      status,
      t("scheduled", {
        name: room.name,
        start: roomTime(room.next_starts_at || room.starts_at, room.time_zone),
        end: roomTime(room.next_ends_at || room.ends_at, room.time_zone),
        code: room.code,
      }),
      "live",
    );
    status.dataset.room = room.id;
    $("#room-name").value = "";
    await refreshRooms();
  } catch (e) {
    say(status, explain(e), "bad");
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------
// Today's rooms
// ---------------------------------------------------------------------------

/// A room belongs to today when its window (open now, or the next one)
/// touches today in the browser's zone, or when it is open and unscheduled.
function isToday(room, now = new Date()) {
  if (!room.starts_at) return room.status === "open";
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const today = dayIn(now, zone);
  const begins = room.next_starts_at || room.starts_at;
  const ends = room.next_ends_at || room.ends_at;
  if (room.status === "open") return true;
  if (room.status !== "scheduled") return dayIn(new Date(ends), zone) === today;
  return dayIn(new Date(begins), zone) <= today && dayIn(new Date(ends), zone) >= today;
}

function statusText(s) {
  return t(`status_${s}`) || s;
}

/// One room of today's list: name, kind, unit, start, status and the live
/// count, then its actions (a list, not a table: it wraps on a phone).
function roomRow(room) {
  const cells = {
    name: el("strong", { class: "name" }),
    meta: el("span", { class: "muted meta" }),
    status: el("span", { class: "pill room-status" }),
    live: el("span", { class: "pill live-count", text: "–" }),
  };
  const action = (key, fn) =>
    el("button", { type: "button", "data-action": key, "data-i18n": key, text: t(key), on: { click: () => fn(row.room) } });
  const tr = el(
    "li",
    { "data-room": room.id },
    el("span", { class: "who" }, cells.name, el("br"), cells.meta),
    cells.status,
    cells.live,
    action("host_link", (r) => link(r, "host")),
    action("listener_link", (r) => link(r, "listener")),
    action("attendance", showAttendance),
    action("reach", openReach),
  );
  const row = { tr, cells, room };
  return row;
}

function fillRow(row, room) {
  row.room = room;
  row.cells.name.textContent = room.name;
  row.cells.meta.textContent = [
    t(`kind_${room.kind}_short`),
    unitLabel(room.unit),
    roomTime(room.next_starts_at || room.starts_at, room.time_zone),
  ].join(" · ");
  row.cells.status.textContent = statusText(room.status);
  row.cells.status.dataset.status = room.status;
  row.cells.status.classList.toggle("live", room.status === "open");
  const n = row.cells.live.dataset.count;
  row.cells.live.textContent = n === undefined ? "–" : t("live_n", { n });
}

async function refreshRooms() {
  if (!state.key) return;
  let rooms;
  try {
    rooms = await call("/v1/rooms");
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return signOut();
    say($("#rooms-status"), explain(e));
    return;
  }
  const today = rooms.filter((r) => isToday(r));
  state.rooms = today;
  const body = $("#rooms");
  const keep = new Set(today.map((r) => r.id));
  for (const [id, row] of state.rows) {
    if (!keep.has(id)) {
      row.tr.remove();
      state.rows.delete(id);
    }
  }
  for (const room of today) {
    let row = state.rows.get(room.id);
    if (!row) {
      row = roomRow(room);
      state.rows.set(room.id, row);
    }
    fillRow(row, room);
    // New rooms go last (the API lists oldest first); rows already there
    // stay put, so a focused button keeps its focus across refreshes.
    if (!row.tr.isConnected) body.append(row.tr);
  }
  $("#rooms-status").textContent = today.length ? t("rooms_count", { n: today.length }) : t("no_rooms");
  await Promise.all(
    today.map(async (room) => {
      const cell = state.rows.get(room.id)?.cells.live;
      if (!cell) return;
      try {
        const people = await call(`/v1/rooms/${room.id}/participants`);
        cell.dataset.count = String(people.length);
        cell.textContent = t("live_n", { n: people.length });
      } catch (_) {
        delete cell.dataset.count;
        cell.textContent = "–";
      }
    }),
  );
}

// ---------------------------------------------------------------------------
// Links
// ---------------------------------------------------------------------------

async function link(room, role) {
  const card = $("#links");
  const status = $("#link-status");
  status.textContent = "";
  try {
    const { token, expires_at } = await call(`/v1/rooms/${room.id}/tokens`, { method: "POST", json: { role } });
    const page = role === "host" ? (room.kind === "bridge" ? "b" : "h") : "l";
    const url = `${location.origin}/${page}/${room.id}#token=${token}`;
    $("#links-h").textContent = t(role === "host" ? "host_link_for" : "listener_link_for", { name: room.name });
    $("#link-text").value = url;
    $("#link-text").dataset.role = role;
    $("#link-open").href = url;
    show($("#link-open"));
    $("#link-expiry").textContent = t("link_expires", { time: formatTime(expires_at), role: t(`role_${role}`) });
  } catch (e) {
    $("#links-h").textContent = t(role === "host" ? "host_link_for" : "listener_link_for", { name: room.name });
    $("#link-text").value = "";
    show($("#link-open"), false);
    status.textContent = explain(e);
  }
  show(card);
  card.focus();
}

async function copyLink() {
  const status = $("#link-status");
  try {
    await navigator.clipboard.writeText($("#link-text").value);
    status.textContent = t("copied");
  } catch (_) {
    status.textContent = t("copy_failed");
  }
}

// ---------------------------------------------------------------------------
// Attendance
// ---------------------------------------------------------------------------

async function showAttendance(room) {
  state.attendanceRoom = room;
  const card = $("#attendance");
  $("#attendance-h").textContent = t("attendance_for", { name: room.name });
  show(card);
  card.focus();
  await loadAttendance();
}

async function loadAttendance() {
  const room = state.attendanceRoom;
  if (!room) return;
  const totals = $("#attendance-totals");
  const body = $("#attendance-table tbody");
  try {
    const data = await call(`/v1/rooms/${room.id}/attendance`);
    body.replaceChildren(
      ...data.sessions.map((s) =>
        el(
          "tr",
          { "data-session": s.session },
          el("td", { class: "who", text: s.name ?? "–" }),
          el("td", { text: s.member ?? "–" }),
          el("td", { text: s.unit ? unitLabel(s.unit) : "–" }),
          el("td", { text: `${s.role} · ${s.kind}` }),
          el("td", { text: formatTime(s.joined_at) }),
          el("td", { text: s.left_at ? formatTime(s.left_at) : "–" }),
          el("td", { text: String(Math.round(s.seconds / 60)) }),
          el("td", { text: s.leave_reason ?? "" }),
        ),
      ),
    );
    totals.textContent = data.sessions.length
      ? t("attendance_totals", {
          sessions: data.totals.sessions,
          open: data.totals.open,
          minutes: Math.round(data.totals.seconds / 60),
        })
      : t("no_sessions");
    totals.className = "";
  } catch (e) {
    body.replaceChildren();
    totals.textContent = explain(e);
    totals.className = "status bad";
  }
}

async function download(room, file, query = "") {
  try {
    const text = await call(`/v1/rooms/${room.id}/${file}${query}`, { accept: "text/csv" });
    saveFile(`${room.id}-${file}`, text, "text/csv;charset=utf-8");
  } catch (e) {
    const where = file.startsWith("reach") ? $("#reach-status") : $("#attendance-totals");
    say(where, explain(e), "bad");
  }
}

// ---------------------------------------------------------------------------
// Reach
// ---------------------------------------------------------------------------

function openReach(room) {
  state.reachRoom = room;
  state.reachData = null;
  const card = $("#reach");
  $("#reach-h").textContent = t("reach_for", { name: room.name });
  $("#reach-chart").replaceChildren();
  $("#reach-table tbody").replaceChildren();
  $("#reach-totals").textContent = "";
  show(card);
  card.focus();
  return loadReach();
}

function minMinutes() {
  const v = Number($("#reach-min").value);
  return Number.isInteger(v) && v >= 1 && v <= 1440 ? v : null;
}

async function loadReach(event) {
  event?.preventDefault();
  const room = state.reachRoom;
  if (!room) return;
  const status = $("#reach-status");
  const min = minMinutes();
  if (min === null) {
    say(status, t("bad_min"), "bad");
    $("#reach-min").focus();
    return;
  }
  const kind = $("#reach-kind").value;
  const q = new URLSearchParams({ min_minutes: String(min), kind });
  say(status, t("loading"));
  try {
    state.reachData = await call(`/v1/rooms/${room.id}/reach?${q}`);
    state.reachData.kind = kind;
    say(status, "");
    drawReach();
  } catch (e) {
    state.reachData = null;
    say(status, explain(e), "bad");
  }
}

/// The chart: one group per unit, a bar of its booths with the booths
/// reached over it, the numbers as text and a <title> for pointers.
function drawReach() {
  const data = state.reachData;
  if (!data) return;
  const kindName = t(`kind_${data.kind}`);
  const tot = data.totals;
  const pct = tot.booths ? Math.round((100 * tot.booths_reached) / tot.booths) : 0;
  let totals = t("reach_totals", {
    reached: tot.booths_reached,
    booths: tot.booths,
    pct,
    listeners: tot.listeners,
    minutes: Math.round(tot.listener_seconds / 60),
    min: data.min_minutes,
  });
  if (data.unplaced_sessions) totals += ` ${t("reach_unplaced", { n: data.unplaced_sessions })}`;
  $("#reach-totals").textContent = totals;

  const units = data.units;
  const width = 300;
  const label = 16;
  const bar = 18;
  const gap = 12;
  const row = label + bar + gap;
  const height = Math.max(row, units.length * row);
  const max = Math.max(1, ...units.map((u) => u.booths));
  const chart = svg("svg", {
    class: "chart",
    role: "img",
    width: "100%",
    viewBox: `0 0 ${width} ${height}`,
    "aria-label": t("reach_chart_label", { kind: kindName, reached: tot.booths_reached, booths: tot.booths }),
  });
  units.forEach((u, i) => {
    const y = i * row;
    const wBooths = (width * u.booths) / max;
    const wReached = (width * u.booths_reached) / max;
    const g = svg(
      "g",
      { class: "unit", "data-unit": u.id, "data-booths": u.booths, "data-reached": u.booths_reached },
      svg("title", {}, t("reach_bar", { name: u.name, reached: u.booths_reached, booths: u.booths })),
      svg("text", { class: "name", x: 0, y: y + 12 }, `${u.name}: ${u.booths_reached} / ${u.booths}`),
      svg("rect", { class: "booths", x: 0, y: y + label, width: wBooths.toFixed(2), height: bar, rx: 3 }),
      svg("rect", { class: "reached", x: 0, y: y + label, width: wReached.toFixed(2), height: bar, rx: 3 }),
    );
    chart.append(g);
  });
  const box = $("#reach-chart");
  box.replaceChildren(units.length ? chart : el("p", { class: "muted", text: t("no_units_of_kind") }));

  $("#reach-table tbody").replaceChildren(
    ...units.map((u) =>
      el(
        "tr",
        { "data-unit": u.id },
        el("th", { scope: "row", text: u.name }),
        el("td", { text: String(u.booths_reached) }),
        el("td", { text: String(u.booths) }),
        el("td", { text: String(u.listeners) }),
        el("td", { text: String(Math.round(u.listener_seconds / 60)) }),
      ),
    ),
  );
}

// ---------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------

function start() {
  initPage();
  fillScheduleDefaults();
  $("#signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("#key").value.trim();
    if (!key) {
      say($("#signin-error"), t("key_missing"), "bad");
      $("#key").focus();
      return;
    }
    signIn(key);
  });
  $("#signout").addEventListener("click", signOut);
  $("#schedule-form").addEventListener("submit", schedule);
  $("#reach-form").addEventListener("submit", loadReach);
  $("#reach-kind").addEventListener("change", () => loadReach());
  $("#reach-csv").addEventListener("click", () => {
    const min = minMinutes();
    if (!state.reachRoom) return;
    if (min === null) return say($("#reach-status"), t("bad_min"), "bad");
    const q = new URLSearchParams({ min_minutes: String(min), kind: $("#reach-kind").value });
    download(state.reachRoom, "reach.csv", `?${q}`);
  });
  $("#attendance-refresh").addEventListener("click", loadAttendance);
  $("#attendance-csv").addEventListener("click", () => state.attendanceRoom && download(state.attendanceRoom, "attendance.csv"));
  $("#link-copy").addEventListener("click", copyLink);
  onLangChange(() => {
    applyI18n();
    for (const row of state.rows.values()) fillRow(row, row.room);
    if (state.unit !== undefined) selectUnit(state.unit);
    drawReach();
    if (state.attendanceRoom) loadAttendance();
  });
  const key = storedKey();
  if (key) signIn(key);
  else $("#key").focus();
}

start();
