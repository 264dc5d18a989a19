// Speak / host page (/h/{room}#token=…): check the microphone, go live over
// WHIP, and — with a host token — moderate the room over its event socket.

import { $, el, roomFromPath, tokenFor, api, Call, RoomSocket, StatusLine, VOICE, callStatus, describe, initPage, meter, syncList } from "./sabha.js";
import { addStrings, t, lang, onLangChange } from "./i18n.js";

addStrings({
  en: {
    host_title: "Speak",
    host_ready: "Check your microphone, then go live.",
    role_host: "You are a host of this room.",
    role_speaker: "You are a speaker in this room.",
    mic_title: "Microphone",
    mic_check: "Check microphone",
    mic_level: "Microphone level",
    mic_hint: "Speak: the bar should move.",
    mic_ok: "Microphone works.",
    go_live: "Go live",
    stop: "Stop",
    stopped: "You are not live.",
    you_live: "You are live.",
    audience: "Audience",
    hands: "Raised hands",
    no_hands: "No hands raised.",
    people: "Participants",
    nobody_here: "Nobody has joined yet.",
    more_people: "and {n} more",
    room_controls: "Room",
    mute_all: "Mute all",
    lock: "Lock",
    unlock: "Unlock",
    end_room: "End room",
    end_confirm: "End the room for everyone? This cannot be undone.",
    end_yes: "Yes, end it",
    cancel: "Cancel",
    promote: "Promote",
    demote: "Demote",
    remove: "Remove",
    you: "(you)",
    is_muted: "muted",
    on_stage: "on stage",
    hand_up: "hand raised",
    kind_listen: "listening",
    kind_publish: "speaking from a page",
    kind_join: "on a call",
    socket_error: "Not done: {detail}",
    not_a_host: "Only a host can moderate; you can still speak.",
  },
  hi: {
    host_title: "बोलें",
    host_ready: "पहले माइक्रोफ़ोन जाँचें, फिर लाइव जाएँ।",
    role_host: "आप इस सभा के होस्ट हैं।",
    role_speaker: "आप इस सभा में वक्ता हैं।",
    mic_title: "माइक्रोफ़ोन",
    mic_check: "माइक्रोफ़ोन जाँचें",
    mic_level: "माइक्रोफ़ोन का स्तर",
    mic_hint: "बोलिए: पट्टी हिलनी चाहिए।",
    mic_ok: "माइक्रोफ़ोन ठीक है।",
    go_live: "लाइव जाएँ",
    stop: "रोकें",
    stopped: "आप लाइव नहीं हैं।",
    you_live: "आप लाइव हैं।",
    audience: "श्रोता",
    hands: "उठे हुए हाथ",
    no_hands: "किसी ने हाथ नहीं उठाया।",
    people: "प्रतिभागी",
    nobody_here: "अभी कोई नहीं जुड़ा।",
    more_people: "और {n}",
    room_controls: "सभा",
    mute_all: "सबको म्यूट करें",
    lock: "बंद करें",
    unlock: "खोलें",
    end_room: "सभा समाप्त करें",
    end_confirm: "सबके लिए सभा समाप्त करें? यह वापस नहीं होगा।",
    end_yes: "हाँ, समाप्त करें",
    cancel: "रद्द करें",
    promote: "मंच पर लाएँ",
    demote: "मंच से हटाएँ",
    remove: "निकालें",
    you: "(आप)",
    is_muted: "म्यूट",
    on_stage: "मंच पर",
    hand_up: "हाथ उठाया",
    kind_listen: "सुन रहे हैं",
    kind_publish: "पेज से बोल रहे हैं",
    kind_join: "कॉल पर",
    socket_error: "नहीं हुआ: {detail}",
    not_a_host: "केवल होस्ट संचालन कर सकते हैं; आप बोल सकते हैं।",
  },
});

/// Rows drawn in the participant list at most (a rally may have thousands
/// of listeners; the count above says how many).
const ROSTER_LIMIT = 100;

const room = roomFromPath();
const token = tokenFor(room);

let stream = null;
let call = null;
let socket = null;
let isHost = false;
let status = null; // StatusLine, once the page is up

function showError(text) {
  const e = $("#error");
  e.textContent = text;
  e.classList.toggle("hidden", !text);
}

async function microphone() {
  if (stream) return stream;
  stream = await navigator.mediaDevices.getUserMedia({ audio: VOICE });
  const bar = $("#meter");
  meter(stream, (level) => {
    const v = Math.round(level * 100);
    bar.firstElementChild.style.width = `${v}%`;
    bar.setAttribute("aria-valuenow", String(v));
  });
  return stream;
}

async function checkMic() {
  try {
    await microphone();
    $("#mic-hint").textContent = t("mic_ok");
  } catch (error) {
    status.set("mic_denied", "bad");
  }
}

function showLive(live) {
  $("#live").classList.toggle("hidden", live);
  $("#stop").classList.toggle("hidden", !live);
}

async function goLive() {
  let mic;
  try {
    mic = await microphone();
  } catch (_) {
    return status.set("mic_denied", "bad");
  }
  const program = $("#program");
  call = new Call({
    url: `/v1/rooms/${encodeURIComponent(room)}/whip`,
    token,
    direction: "sendonly",
    track: mic.getAudioTracks()[0],
    onState: callStatus(status, { liveKey: "you_live", onFailed: () => showLive(false), onEnded: ended }),
    onSession: (id) => socket?.bind(id),
    onStream: (s) => {
      program.srcObject = s;
      program.play().catch(() => {});
    },
  });
  showLive(true);
  call.start();
}

function stopLive() {
  call?.stop();
  call = null;
  showLive(false);
  status.set("stopped");
}

function ended() {
  const c = call;
  call = null;
  c?.end();
  for (const b of document.querySelectorAll("main button")) b.disabled = true;
  $("#confirm-end").classList.add("hidden");
  status.set("ended", "bad");
}

// --- the room ---------------------------------------------------------------

const command = (type, participant) => () => socket.send(participant ? { type, participant } : { type });

function label(p) {
  const mine = socket.session && p.id === socket.session;
  return el("span", { class: "who" }, p.name || t("someone"), mine ? ` ${t("you")}` : null);
}

function pills(p) {
  const out = [el("span", { class: "pill" }, t(`kind_${p.kind}`))];
  if (p.on_stage && p.kind !== "listen") out.push(el("span", { class: "pill live" }, t("on_stage")));
  if (p.muted) out.push(el("span", { class: "pill" }, t("is_muted")));
  if (p.hand_raised) out.push(el("span", { class: "pill" }, t("hand_up")));
  return out;
}

function button(key, action, cls) {
  return el("button", { type: "button", class: cls, on: { click: action } }, t(key));
}

function personRow(p) {
  const li = el("li", { class: p.speaking ? "speaking" : null, "data-id": p.id }, label(p), ...pills(p));
  if (!isHost) return li;
  const mine = p.id === socket.session;
  if (p.kind !== "listen") {
    li.append(button(p.muted ? "unmute" : "mute", command(p.muted ? "unmute" : "mute", p.id), p.muted ? "unmute" : "mute"));
    if (p.on_stage && !mine) li.append(button("demote", command("demote", p.id), "demote"));
    if (!p.on_stage) li.append(button("promote", command("promote", p.id), "promote"));
  }
  if (!mine) li.append(button("remove", command("remove", p.id), "danger remove"));
  return li;
}

function handRow(p) {
  return el(
    "li",
    { "data-id": p.id },
    label(p),
    button("promote", command("promote", p.id), "primary promote"),
    button("lower_hand", command("lower_hand", p.id), "lower"),
  );
}

function draw() {
  if (!socket) return;
  const everyone = [...socket.participants.values()];
  const listening = everyone.filter((p) => p.kind === "listen").length;
  $("#listeners").textContent = t("listeners", { n: listening });
  const names = socket.speakerNames();
  $("#speakers").textContent = names.length ? t("speaking_now", { names: names.join(", ") }) : t("nobody_speaking");

  const hands = everyone.filter((p) => p.hand_raised);
  const sig = (p) => JSON.stringify([p.name, p.kind, p.muted, p.on_stage, p.hand_raised, p.speaking, socket.session, isHost, lang()]);
  syncList($("#queue"), hands, sig, handRow);
  $("#no-hands").classList.toggle("hidden", hands.length > 0);

  // the stage first, then the audience
  const order = (p) => (p.kind === "listen" ? 1 : 0);
  const shown = everyone.sort((a, b) => order(a) - order(b)).slice(0, ROSTER_LIMIT);
  const roster = $("#roster");
  syncList(roster, shown, sig, personRow);
  $("#nobody").classList.toggle("hidden", everyone.length > 0);
  const more = $("#more");
  more.textContent = t("more_people", { n: everyone.length - shown.length });
  more.classList.toggle("hidden", everyone.length <= shown.length);

  const lock = $("#lock");
  lock.setAttribute("aria-pressed", String(socket.locked));
  lock.textContent = t(socket.locked ? "unlock" : "lock");
}

function connect() {
  socket = new RoomSocket(room, token);
  socket.on("change", draw);
  socket.on("error", (m) => showError(t("socket_error", { detail: m.detail || m.title })));
  socket.on("room_ended", ended);
  socket.on("roster", () => socket.ended && ended());
}

async function init() {
  initPage();
  status = new StatusLine($("#status"), "host_ready");
  onLangChange(draw);
  $("#check").addEventListener("click", checkMic);
  $("#live").addEventListener("click", goLive);
  $("#stop").addEventListener("click", stopLive);
  if (!token) {
    for (const b of document.querySelectorAll("main button")) b.disabled = true;
    return status.set("no_token", "bad");
  }
  $("#mute-all").addEventListener("click", () => {
    showError("");
    socket.send({ type: "mute_all" });
  });
  $("#lock").addEventListener("click", () => socket.send({ type: socket.locked ? "unlock" : "lock" }));
  $("#end").addEventListener("click", () => $("#confirm-end").classList.remove("hidden"));
  $("#end-no").addEventListener("click", () => $("#confirm-end").classList.add("hidden"));
  $("#end-yes").addEventListener("click", () => socket.send({ type: "end" }));
  try {
    const summary = await api(`/v1/rooms/${encodeURIComponent(room)}/summary`, { token });
    $("#room").removeAttribute("data-i18n");
    $("#room").textContent = summary.name;
    document.title = `${summary.name} · Sabha`;
    isHost = summary.role === "host";
    const role = $("#role");
    role.dataset.i18n = isHost ? "role_host" : summary.role === "speaker" ? "role_speaker" : "not_a_host";
    role.textContent = t(role.dataset.i18n);
    for (const s of document.querySelectorAll(".host-only")) s.classList.toggle("hidden", !isHost);
    if (summary.status === "ended") return ended();
  } catch (error) {
    for (const b of document.querySelectorAll("main button")) b.disabled = true;
    return status.set("", "bad", describe(error));
  }
  connect();
  draw();
}

init();
