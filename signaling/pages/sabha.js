// What every page shares: the room and token from the URL, the HTTP API
// (problem+json errors), one WebRTC call over WHIP/WHEP/join that
// reconnects by itself, the room's event socket, and a level meter.
//
// No framework and no markup from strings: the pages run under a strict
// CSP with Trusted Types, so DOM is built with el() and textContent only.

import { applyI18n, langButton, onLangChange, t } from "./i18n.js";

export const $ = (selector, root = document) => root.querySelector(selector);

/// createElement with attributes ({class, text, on: {click: fn}, ...}) and
/// children (nodes or strings, which become text).
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

/// The page's room id: the second path segment (/l/{room}, /h/{room}, …).
export function roomFromPath() {
  return decodeURIComponent(location.pathname.split("/")[2] || "");
}

/// The room token: `#token=` (never sent to the server, so never logged),
/// else `?token=`, else the one this tab saw last for this room.
export function tokenFor(room) {
  const key = `sabha.token.${room}`;
  const fromUrl =
    new URLSearchParams(location.hash.slice(1)).get("token") ||
    new URLSearchParams(location.search).get("token");
  try {
    if (fromUrl) sessionStorage.setItem(key, fromUrl);
    return fromUrl || sessionStorage.getItem(key);
  } catch (_) {
    return fromUrl;
  }
}

/// An error answer of the API: status, and the problem's title and detail.
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }
}

async function failure(response) {
  let problem = { title: response.statusText };
  try {
    problem = await response.json();
  } catch (_) {
    /* not JSON */
  }
  const retry = Number(response.headers.get("Retry-After"));
  return new ApiError(response.status, problem, Number.isFinite(retry) && retry > 0 ? retry : null);
}

/// Calls the API. `json` is sent as JSON, `body` as is (with `type`).
/// Returns parsed JSON, text (for other types) or null (204). Throws
/// ApiError for any non-2xx answer.
export async function api(path, { method = "GET", token, json, body, type, accept, keepalive } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (type) headers["Content-Type"] = type;
  if (accept) headers.Accept = accept;
  const response = await fetch(path, { method, headers, body, keepalive, cache: "no-store" });
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  const ct = response.headers.get("Content-Type") || "";
  return ct.includes("json") ? response.json() : response.text();
}

const GATHER_LIMIT_MS = 2000;

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, GATHER_LIMIT_MS); // the server is ICE-lite: host candidates suffice
  });
}

/// How long a connection may stay "disconnected" before it is replaced.
const DISCONNECTED_GRACE_MS = 3000;

/// One WebRTC audio session over WHIP, WHEP or /join, kept alive: when the
/// network changes or ICE fails, it opens a new session (a new POST; the
/// server has no ICE restart) and hangs up the old one.
///
/// opts: url (the POST target), token, direction ("recvonly" | "sendonly" |
/// "sendrecv"), track (a MediaStreamTrack to send), and callbacks
/// onStream(MediaStream), onState(state, detail), onSession(id).
/// States: connecting, live, reconnecting, waiting (detail: ApiError),
/// ended, failed (detail: ApiError or Error).
export class Call {
  constructor(opts) {
    this.opts = opts;
    this.pc = null;
    this.location = null;
    this.session = null;
    this.stopped = false;
    this.timer = null;
    this.online = () => this.restart();
    window.addEventListener("online", this.online);
    window.addEventListener("pagehide", () => this.hangupNow());
  }

  url() {
    return typeof this.opts.url === "function" ? this.opts.url() : this.opts.url;
  }

  state(s, detail) {
    this.opts.onState?.(s, detail);
  }

  async start() {
    this.state("connecting");
    await this.open();
  }

  async open() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
    const { direction, track } = this.opts;
    if (track) pc.addTransceiver(track, { direction });
    else pc.addTransceiver("audio", { direction });
    pc.addEventListener("track", (e) => this.opts.onStream?.(e.streams[0] || new MediaStream([e.track])));
    pc.addEventListener("connectionstatechange", () => this.watch(pc));
    const old = { pc: this.pc, location: this.location };
    this.pc = pc;
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const response = await fetch(this.url(), {
        method: "POST",
        headers: {
          "Content-Type": "application/sdp",
          ...(this.opts.token ? { Authorization: `Bearer ${this.opts.token}` } : {}),
        },
        body: pc.localDescription.sdp,
      });
      if (!response.ok) throw await failure(response);
      const location = new URL(response.headers.get("Location"), response.url).pathname;
      await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
      this.location = location;
      this.session = location.split("/").pop();
      this.opts.onSession?.(this.session);
    } catch (error) {
      pc.close();
      if (this.pc === pc) this.pc = null;
      this.refused(error);
    } finally {
      Call.close(old);
    }
  }

  /// What to do when the server said no: wait and retry, or give up.
  refused(error) {
    const status = error instanceof ApiError ? error.status : 0;
    if (status === 410) return this.end();
    if (status === 401 || status === 403 || status === 404 || status === 400 || status === 406) {
      return this.state("failed", error);
    }
    // 423 locked, 425 too early, 503 full, network errors: try again.
    let wait = (error.retryAfter || 5) * 1000;
    if (status === 425 && error.problem?.starts_at) {
      wait = Math.max(2000, Math.min(60000, Date.parse(error.problem.starts_at) - Date.now()));
    }
    this.state("waiting", error);
    this.timer = setTimeout(() => this.open(), wait);
  }

  watch(pc) {
    if (pc !== this.pc || this.stopped) return;
    clearTimeout(this.timer);
    switch (pc.connectionState) {
      case "connected":
        this.state("live");
        break;
      case "disconnected":
        this.state("reconnecting");
        this.timer = setTimeout(() => this.restart(), DISCONNECTED_GRACE_MS);
        break;
      case "failed":
        this.state("reconnecting");
        this.restart();
        break;
      default:
    }
  }

  /// A fresh session now (network change, data saver toggled, …).
  async restart() {
    if (this.stopped || !this.pc) return;
    this.state("reconnecting");
    await this.open();
  }

  /// Hangs up: DELETE first, and close the connection once it is answered,
  /// because a closing connection tells the server (DTLS close_notify),
  /// which ends the session at once and turns the DELETE into a 404.
  static close({ pc, location }) {
    if (!location) return pc?.close();
    fetch(location, { method: "DELETE", keepalive: true })
      .catch(() => {})
      .finally(() => pc?.close());
  }

  hangupNow() {
    Call.close({ pc: this.pc, location: this.location });
    this.pc = null;
    this.location = null;
  }

  /// The room ended (410 or room_ended): stop for good.
  end() {
    this.location = null; // the server closed every session of the room: nothing to DELETE
    this.stop();
    this.state("ended");
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    window.removeEventListener("online", this.online);
    this.hangupNow();
  }
}

/// The room's event socket (GET /v1/rooms/{id}/events): keeps the roster
/// and calls handlers by message type, "change" after every message.
/// Reconnects with backoff; a new roster replaces the old on reconnect.
export class RoomSocket {
  constructor(room, token) {
    this.room = room;
    this.token = token;
    this.session = null;
    this.participants = new Map();
    /// Listen sessions in the room. A listener's socket lists only the
    /// stage and itself: the server counts the rest.
    this.listeners = 0;
    this.speaking = [];
    this.locked = false;
    this.ended = false;
    this.handlers = {};
    this.backoff = 500;
    this.ws = null;
    this.closed = false;
    this.connect();
  }

  on(type, fn) {
    (this.handlers[type] ||= []).push(fn);
    return this;
  }

  emit(type, message) {
    for (const fn of this.handlers[type] || []) fn(message);
  }

  /// Binds the socket to one of our sessions (reconnects with ?session=).
  bind(session) {
    if (session === this.session) return;
    this.session = session;
    this.ws?.close();
  }

  connect() {
    if (this.closed) return;
    const q = new URLSearchParams({ token: this.token });
    const session = this.session;
    if (session) q.set("session", session);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/v1/rooms/${this.room}/events?${q}`);
    this.ws = ws;
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
      this.backoff = 500;
    });
    ws.addEventListener("message", (e) => this.receive(e.data));
    ws.addEventListener("close", () => {
      if (this.ws !== ws || this.closed) return;
      // Refused before opening while bound: the session is gone (404), so
      // listen unbound until the page binds its next one.
      if (!opened && this.session === session) this.session = null;
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10000);
    });
  }

  receive(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch (_) {
      return;
    }
    const p = this.participants;
    const set = (id, change) => {
      const x = p.get(id);
      if (x) p.set(id, { ...x, ...change });
    };
    switch (m.type) {
      case "roster":
        p.clear();
        for (const x of m.participants) p.set(x.id, x);
        // a steady talker sends no new `speaking` event after a reconnect:
        // the roster's flags are the truth (levels unknown: keep the old)
        this.speaking = m.participants
          .filter((x) => x.speaking)
          .map((x) => this.speaking.find((s) => s.id === x.id) || { id: x.id, level: 127 });
        this.listeners = m.listeners;
        this.locked = m.locked;
        this.ended = m.ended;
        break;
      case "audience":
        this.listeners = m.listeners;
        break;
      case "joined":
        p.set(m.participant.id, m.participant);
        break;
      case "left":
        p.delete(m.participant);
        this.speaking = this.speaking.filter((x) => x.id !== m.participant);
        break;
      case "muted":
      case "unmuted":
        set(m.participant, { muted: m.type === "muted" });
        break;
      case "hand_raised":
      case "hand_lowered":
        set(m.participant, { hand_raised: m.type === "hand_raised" });
        break;
      case "promoted":
      case "demoted":
        set(m.participant, { on_stage: m.type === "promoted", hand_raised: false });
        break;
      case "speaking":
        this.speaking = m.speakers;
        for (const [id, x] of p) p.set(id, { ...x, speaking: m.speakers.some((s) => s.id === id) });
        break;
      case "locked":
      case "unlocked":
        this.locked = m.type === "locked";
        break;
      case "room_ended":
        this.ended = true;
        this.closed = true; // nothing more will happen in this room
        break;
      default:
    }
    this.emit(m.type, m);
    this.emit("change", m);
  }

  /// Sends a command ({type: "mute", participant?}); errors come back as
  /// an "error" message.
  send(command) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(command));
  }

  /// The names of who speaks now, loudest first.
  speakerNames() {
    return this.speaking.map((s) => this.participants.get(s.id)?.name || t("someone"));
  }

  close() {
    this.closed = true;
    this.ws?.close();
  }
}

/// Calls onLevel(0..1) about 20 times a second with the stream's level;
/// returns a function that stops it.
export function meter(stream, onLevel) {
  const ctx = new AudioContext();
  const source = ctx.createMediaStreamSource(stream);
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  source.connect(analyser);
  const data = new Float32Array(analyser.fftSize);
  const id = setInterval(() => {
    analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (const x of data) sum += x * x;
    const rms = Math.sqrt(sum / data.length);
    // -60 dBFS .. 0 dBFS onto 0..1
    const db = 20 * Math.log10(rms + 1e-9);
    onLevel(Math.max(0, Math.min(1, (db + 60) / 60)));
  }, 50);
  return () => {
    clearInterval(id);
    ctx.close();
  };
}

/// A time for people: "18:30" today, else "3 Dec, 18:30", in the browser's zone.
export function formatTime(iso) {
  const d = new Date(iso);
  const today = new Date().toDateString() === d.toDateString();
  const opts = today ? { hour: "2-digit", minute: "2-digit" } : { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" };
  return d.toLocaleString(document.documentElement.lang === "hi" ? "hi-IN" : "en-IN", opts);
}

/// The message for a failed or waiting call, in the page's language.
export function describe(error) {
  const status = error instanceof ApiError ? error.status : 0;
  switch (status) {
    case 401:
      return t("bad_token");
    case 410:
      return t("ended");
    case 423:
      return t("locked");
    case 425:
      return t("not_started", { time: error.problem?.starts_at ? formatTime(error.problem.starts_at) : "" });
    case 503:
      return t("full", { s: error.retryAfter || 5 });
    default:
      return t("error", { detail: error.message || String(error) });
  }
}

/// A page's status line (role="status"): a string key (or a text) and a
/// class (live, warn, bad), redrawn in the new language when it changes.
export class StatusLine {
  constructor(elem, key, cls = "") {
    this.elem = elem;
    this.set(key, cls);
    onLangChange(() => this.set(this.key, this.cls, this.text));
  }

  set(key, cls = "", text = null) {
    Object.assign(this, { key, cls, text });
    this.elem.className = `status ${cls}`.trim();
    this.elem.textContent = text ?? t(key);
  }
}

/// A Call's onState for a status line: live shows liveKey (a key, or a
/// function returning one); failed and ended call back first.
export function callStatus(status, { liveKey = "live", onFailed, onEnded } = {}) {
  return (state, detail) => {
    switch (state) {
      case "connecting":
        return status.set("connecting", "warn");
      case "live":
        return status.set(typeof liveKey === "function" ? liveKey() : liveKey, "live");
      case "reconnecting":
        return status.set(navigator.onLine === false ? "offline" : "reconnecting", "warn");
      case "waiting":
        return status.set("", "warn", describe(detail));
      case "ended":
        return onEnded?.();
      case "failed":
        onFailed?.();
        return status.set("", "bad", describe(detail));
      default:
    }
  };
}

/// Redraws list `ul` as `items` (objects with an id), replacing only rows
/// whose signature sig(item) changed: `speaking` events come up to 5
/// times a second, and rebuilding every row would swap buttons out from
/// under a finger mid-tap.
export function syncList(ul, items, sig, render) {
  const old = new Map([...ul.children].map((li) => [li.dataset.id, li]));
  const rows = items.map((p) => {
    const s = sig(p);
    const li = old.get(p.id);
    if (li && li.dataset.sig === s) return li;
    const fresh = render(p);
    fresh.dataset.id = p.id;
    fresh.dataset.sig = s;
    return fresh;
  });
  const same = rows.length === ul.children.length && rows.every((li, i) => ul.children[i] === li);
  if (!same) ul.replaceChildren(...rows);
}

/// The microphone as a talking page wants it.
export const VOICE = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

/// Every page: strings in place, the language button wired.
export function initPage() {
  applyI18n();
  const button = $("#lang");
  if (button) langButton(button);
}
