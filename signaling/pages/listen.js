// The Listen page, /l/{room}#token=…: one big button, then the program over
// WHEP. Made for a cheap phone on 3G: a few KB of script, reconnects by
// itself (a new session when the network changes), and a data-saver switch
// for the low-rate profile (16 kb/s Opus in 60 ms packets).

import { addStrings, onLangChange, t } from "./i18n.js";
import { $, ApiError, Call, RoomSocket, StatusLine, api, callStatus, describe, formatTime, initPage, roomFromPath, tokenFor } from "./sabha.js";

addStrings({
  en: {
    listen_title: "Listen",
    tap_to_listen: "Tap the button to listen.",
    listen_button: "▶ Listen",
    now_heading: "Now",
    stop: "Stop",
    stopped: "Stopped. Tap Listen to hear again.",
    data_saver: "Data saver (about 22 kb/s)",
    data_saver_hint: "Uses less data on a weak network. The sound is a little less clear.",
    on_stage: "You are on stage: speak now.",
    promoted: "A host invited you to speak. Allow the microphone.",
    pin_link: "Join with a PIN",
  },
  hi: {
    listen_title: "सुनें",
    tap_to_listen: "सुनने के लिए बटन दबाएँ।",
    listen_button: "▶ सुनें",
    now_heading: "अभी",
    stop: "रोकें",
    stopped: "रुका हुआ। फिर सुनने के लिए ‘सुनें’ दबाएँ।",
    data_saver: "डेटा बचत (लगभग 22 kb/s)",
    data_saver_hint: "कमज़ोर नेटवर्क पर कम डेटा। आवाज़ थोड़ी कम साफ़।",
    on_stage: "आप मंच पर हैं: अब बोलिए।",
    promoted: "होस्ट ने आपको बोलने बुलाया है। माइक्रोफ़ोन की अनुमति दें।",
    pin_link: "PIN से जुड़ें",
  },
});

const SAVER_KEY = "sabha.dataSaver";
const room = roomFromPath();
const token = tokenFor(room);
const audio = $("#program");
const button = $("#listen");
const saver = $("#saver");
const hand = $("#hand");
let socket = null;
let call = null;
let stage = null; // the /join call once a host promoted us
let summary = null;
const status = new StatusLine($("#state"), "tap_to_listen");

function slowNetwork() {
  const c = navigator.connection;
  return Boolean(c && (c.saveData || ["slow-2g", "2g", "3g"].includes(c.effectiveType)));
}

function initialSaver() {
  try {
    const saved = localStorage.getItem(SAVER_KEY);
    if (saved !== null) return saved === "1";
  } catch (_) {
    /* storage disabled */
  }
  return summary?.profile === "low" || slowNetwork();
}

function whepUrl() {
  return `/v1/rooms/${room}/whep?profile=${saver.checked ? "low" : "standard"}`;
}

const onState = callStatus(status, {
  liveKey: () => (stage ? "on_stage" : "live"),
  onFailed: () => button.classList.remove("hidden"),
  onEnded: () => ended(),
});

function ended() {
  // The server has closed every session of the room: end() hangs up
  // without a DELETE (a rally's end would otherwise bring one per listener).
  const calls = new Set([call, stage]);
  call = stage = null;
  for (const c of calls) c?.end();
  status.set("ended", "bad");
  button.classList.add("hidden");
  $("#now").classList.add("hidden");
}

function listen() {
  button.classList.add("hidden");
  $("#now").classList.remove("hidden");
  // play() inside the click: browsers allow sound after a gesture only.
  audio.play().catch(() => {});
  call = new Call({
    url: whepUrl,
    token,
    direction: "recvonly",
    onStream: (stream) => {
      audio.srcObject = stream;
      audio.play().catch(() => {});
    },
    onState,
    onSession: (id) => socket.bind(id),
  });
  call.start();
}

function stop() {
  call?.stop();
  stage?.stop();
  call = stage = null;
  audio.srcObject = null;
  button.classList.remove("hidden");
  $("#now").classList.add("hidden");
  status.set("stopped");
}

/// A host promoted this listener: it got a speaker token and a /join path.
async function promoted(message) {
  status.set("promoted", "warn");
  let mic;
  try {
    mic = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (_) {
    return status.set("mic_denied", "bad");
  }
  const old = call;
  stage = new Call({
    url: message.join,
    token: message.token,
    direction: "sendrecv",
    track: mic.getAudioTracks()[0],
    onStream: (stream) => {
      audio.srcObject = stream;
      audio.play().catch(() => {});
    },
    onState,
    onSession: (id) => socket.bind(id),
  });
  await stage.start();
  call = stage;
  old?.stop();
}

function mine() {
  const session = (stage || call)?.session;
  return session ? socket.participants.get(session) : null;
}

function redraw() {
  if (!socket) return;
  const names = socket.speakerNames();
  $("#speakers").textContent = names.length ? t("speaking_now", { names: names.join(", ") }) : t("nobody_speaking");
  $("#count").textContent = t("listeners", { n: socket.listeners });
  const me = mine();
  const up = Boolean(me?.hand_raised);
  hand.setAttribute("aria-pressed", String(up));
  hand.textContent = t(up ? "lower_hand" : "raise_hand");
  hand.disabled = !me;
  $("#hand-state").textContent = up ? t("hand_is_up") : "";
  if (socket.ended) ended();
}

async function main() {
  initPage();
  onLangChange(redraw);
  if (!token) {
    status.set("no_token", "bad");
    button.classList.add("hidden");
    const link = document.createElement("a");
    link.href = "/j";
    link.className = "button";
    link.textContent = t("pin_link");
    $("main").append(link);
    return;
  }
  try {
    summary = await api(`/v1/rooms/${room}/summary`, { token });
  } catch (error) {
    button.classList.add("hidden");
    return status.set("", "bad", error instanceof ApiError && error.status === 401 ? t("bad_token") : describe(error));
  }
  const title = $("#title");
  delete title.dataset.i18n; // the room's name, in no language of ours
  title.textContent = summary.name;
  document.title = `${summary.name} · Sabha`;
  saver.checked = initialSaver();
  if (summary.status === "ended") return ended();
  if (summary.status === "scheduled" && summary.next_starts_at) {
    status.set("", "", t("not_started", { time: formatTime(summary.next_starts_at) }));
  }
  socket = new RoomSocket(room, token);
  socket.on("change", redraw);
  socket.on("promoted", (m) => {
    if (m.token && m.join && m.participant === call?.session) promoted(m);
  });
  socket.on("room_ended", ended);
  button.addEventListener("click", listen);
  $("#stop").addEventListener("click", stop);
  hand.addEventListener("click", () => {
    socket.send({ type: mine()?.hand_raised ? "lower_hand" : "raise_hand" });
  });
  saver.addEventListener("change", () => {
    try {
      localStorage.setItem(SAVER_KEY, saver.checked ? "1" : "0");
    } catch (_) {
      /* ignore */
    }
    if (call && !stage) call.restart();
  });
}

main();
