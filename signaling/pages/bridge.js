// Bridge page (/b/{room}#token=…): everyone talks. Join opens one sendrecv
// session on /join and plays the mix of everyone else; Mute is server-side
// (the others stop hearing you) and also silences the local track.

import { $, el, roomFromPath, tokenFor, api, Call, RoomSocket, describe, initPage } from "./sabha.js";
import { addStrings, t, lang, onLangChange } from "./i18n.js";

addStrings({
  en: {
    bridge_title: "Bridge",
    bridge_ready: "Press Join to talk with the others.",
    join: "Join",
    join_again: "Join again",
    controls: "Call controls",
    in_room: "In the room",
    you: "(you)",
    is_muted: "muted",
    hand_up: "hand raised",
    left_call: "You left the call.",
    you_muted: "You are muted.",
    nobody_here: "Nobody is here yet.",
    socket_error: "Not done: {detail}",
  },
  hi: {
    bridge_title: "ब्रिज",
    bridge_ready: "दूसरों से बात करने के लिए जुड़ें दबाएँ।",
    join: "जुड़ें",
    join_again: "फिर से जुड़ें",
    controls: "कॉल के बटन",
    in_room: "सभा में",
    you: "(आप)",
    is_muted: "म्यूट",
    hand_up: "हाथ उठाया",
    left_call: "आपने कॉल छोड़ दी।",
    you_muted: "आप म्यूट हैं।",
    nobody_here: "अभी यहाँ कोई नहीं है।",
    socket_error: "नहीं हुआ: {detail}",
  },
});

const room = roomFromPath();
const token = tokenFor(room);
const audioConstraints = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

let socket = null;
let call = null;
let mic = null;
/// What the user asked for with the Mute button (kept across reconnects).
let wantMuted = false;
let status = { key: "bridge_ready", cls: "", text: null };

function setStatus(key, cls = "", text = null) {
  status = { key, cls, text };
  const s = $("#status");
  s.className = `status ${cls}`.trim();
  s.textContent = text ?? t(key);
}

function showError(text) {
  const e = $("#error");
  e.textContent = text;
  e.classList.toggle("hidden", !text);
}

const me = () => (socket?.session ? socket.participants.get(socket.session) : undefined);

function onCallState(state, detail) {
  switch (state) {
    case "connecting":
      return setStatus("connecting", "warn");
    case "live":
      return setStatus("live", "live");
    case "reconnecting":
      return setStatus("reconnecting", "warn");
    case "waiting":
      return setStatus("", "warn", describe(detail));
    case "ended":
      return ended();
    case "failed":
      inCall(false);
      return setStatus("", "bad", describe(detail));
    default:
  }
}

function inCall(on) {
  $("#join").classList.toggle("hidden", on);
  $("#controls").classList.toggle("hidden", !on);
}

async function join() {
  showError("");
  const program = $("#program");
  // play() inside the click keeps the user's gesture for autoplay
  program.play().catch(() => {});
  try {
    mic = await navigator.mediaDevices.getUserMedia({ audio: audioConstraints });
  } catch (_) {
    return setStatus("mic_denied", "bad");
  }
  const track = mic.getAudioTracks()[0];
  track.enabled = !wantMuted;
  call = new Call({
    url: `/v1/rooms/${encodeURIComponent(room)}/join`,
    token,
    direction: "sendrecv",
    track,
    onState: onCallState,
    onSession: (id) => socket.bind(id),
    onStream: (s) => {
      program.srcObject = s;
      program.play().catch(() => {});
    },
  });
  inCall(true);
  call.start();
}

function leave() {
  call?.stop();
  call = null;
  for (const track of mic?.getTracks() || []) track.stop();
  mic = null;
  socket.bind(null);
  inCall(false);
  $("#join").textContent = t("join_again");
  setStatus("left_call");
}

function ended() {
  const c = call;
  call = null;
  c?.end();
  for (const track of mic?.getTracks() || []) track.stop();
  for (const b of document.querySelectorAll("main button")) b.disabled = true;
  setStatus("ended", "bad");
}

function toggleMute() {
  const mine = me();
  const muted = mine ? mine.muted : wantMuted;
  wantMuted = !muted;
  for (const track of mic?.getAudioTracks() || []) track.enabled = !wantMuted;
  socket.send({ type: wantMuted ? "mute" : "unmute" });
  draw();
}

function toggleHand() {
  socket.send({ type: me()?.hand_raised ? "lower_hand" : "raise_hand" });
}

/// After a reconnect the server knows a fresh session: say again that we
/// are muted.
function reassert() {
  const mine = me();
  if (mine && wantMuted && !mine.muted) socket.send({ type: "mute" });
}

function personRow(p) {
  const mine = p.id === socket.session;
  const li = el(
    "li",
    { class: p.speaking ? "speaking" : null, "data-id": p.id },
    el("span", { class: "who" }, p.name || t("someone"), mine ? ` ${t("you")}` : null),
  );
  if (p.muted) li.append(el("span", { class: "pill muted-pill" }, t("is_muted")));
  if (p.hand_raised) li.append(el("span", { class: "pill hand-pill" }, t("hand_up")));
  return li;
}

/// Redraws a list only where it changed: a row is rebuilt when its
/// signature changes, and the list is reordered only when its rows did.
/// (`speaking` events come up to 5 times a second; rebuilding every row
/// would swap buttons out from under a finger mid-tap.)
function syncList(ul, items, sig, render) {
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

function draw() {
  if (!socket) return;
  const everyone = [...socket.participants.values()].filter((p) => p.kind !== "listen");
  const sig = (p) => JSON.stringify([p.name, p.muted, p.hand_raised, p.speaking, socket.session, lang()]);
  syncList($("#roster"), everyone, sig, personRow);
  $("#nobody").classList.toggle("hidden", everyone.length > 0);
  const names = socket.speakerNames();
  $("#speakers").textContent = names.length ? t("speaking_now", { names: names.join(", ") }) : t("nobody_speaking");

  const mine = me();
  const muted = mine ? mine.muted : wantMuted;
  const mute = $("#mute");
  mute.setAttribute("aria-pressed", String(muted));
  mute.textContent = t(muted ? "unmute" : "mute");
  $("#host-muted").classList.toggle("hidden", !(mine && mine.muted && !wantMuted));
  const hand = $("#hand");
  hand.setAttribute("aria-pressed", String(Boolean(mine?.hand_raised)));
  hand.textContent = t(mine?.hand_raised ? "lower_hand" : "raise_hand");
}

async function init() {
  initPage();
  onLangChange(() => {
    setStatus(status.key, status.cls, status.text);
    draw();
  });
  $("#join").addEventListener("click", join);
  $("#leave").addEventListener("click", leave);
  $("#mute").addEventListener("click", toggleMute);
  $("#hand").addEventListener("click", toggleHand);
  if (!token) {
    $("#join").disabled = true;
    return setStatus("no_token", "bad");
  }
  try {
    const summary = await api(`/v1/rooms/${encodeURIComponent(room)}/summary`, { token });
    $("#room").removeAttribute("data-i18n");
    $("#room").textContent = summary.name;
    document.title = `${summary.name} · Sabha`;
    if (summary.status === "ended") return ended();
  } catch (error) {
    $("#join").disabled = true;
    return setStatus("", "bad", describe(error));
  }
  socket = new RoomSocket(room, token);
  socket.on("change", draw);
  socket.on("roster", reassert);
  socket.on("room_ended", ended);
  socket.on("error", (m) => showError(t("socket_error", { detail: m.detail || m.title })));
  draw();
}

init();
