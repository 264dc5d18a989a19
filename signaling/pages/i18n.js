// Strings of the pages in English and Hindi. Each page adds its own table
// with addStrings(); this file holds the shared ones. The language is the
// user's choice (saved), else the browser's, else English.

const tables = { en: {}, hi: {} };
const LANGS = ["en", "hi"];
const KEY = "sabha.lang";

export function addStrings(more) {
  for (const lang of LANGS) Object.assign(tables[lang], more[lang] || {});
}

addStrings({
  en: {
    lang_switch: "हिन्दी",
    lang_switch_label: "हिन्दी में देखें",
    connecting: "Connecting…",
    live: "Live",
    ended: "This room has ended.",
    not_started: "Not started yet. Starts at {time}.",
    locked: "The room is locked. Trying again…",
    full: "The server is full. Trying again in {s} s…",
    reconnecting: "Connection lost. Reconnecting…",
    offline: "You are offline. Waiting for the network…",
    no_token: "This link has no access token. Ask the organiser for your link, or join with a PIN.",
    bad_token: "This link is not valid or has expired.",
    error: "Something went wrong: {detail}",
    speaking_now: "Speaking: {names}",
    nobody_speaking: "Nobody is speaking",
    raise_hand: "Raise hand",
    lower_hand: "Lower hand",
    hand_is_up: "Your hand is raised.",
    listeners: "{n} listening",
    someone: "Someone",
    mute: "Mute",
    unmute: "Unmute",
    muted_by_host: "A host muted you.",
    mic_denied: "Microphone blocked. Allow it in the browser and try again.",
    leave: "Leave",
  },
  hi: {
    lang_switch: "English",
    lang_switch_label: "View in English",
    connecting: "जुड़ रहे हैं…",
    live: "लाइव",
    ended: "यह सभा समाप्त हो गई है।",
    not_started: "अभी शुरू नहीं हुई। {time} बजे शुरू होगी।",
    locked: "सभा बंद है। फिर से कोशिश कर रहे हैं…",
    full: "सर्वर भरा है। {s} सेकंड में फिर कोशिश…",
    reconnecting: "कनेक्शन टूटा। फिर से जुड़ रहे हैं…",
    offline: "आप ऑफ़लाइन हैं। नेटवर्क का इंतज़ार…",
    no_token: "इस लिंक में प्रवेश टोकन नहीं है। आयोजक से अपना लिंक लें, या PIN से जुड़ें।",
    bad_token: "यह लिंक मान्य नहीं है या इसकी अवधि समाप्त हो गई है।",
    error: "कुछ गड़बड़ हुई: {detail}",
    speaking_now: "बोल रहे हैं: {names}",
    nobody_speaking: "कोई नहीं बोल रहा",
    raise_hand: "हाथ उठाएँ",
    lower_hand: "हाथ नीचे करें",
    hand_is_up: "आपका हाथ उठा हुआ है।",
    listeners: "{n} सुन रहे हैं",
    someone: "कोई",
    mute: "म्यूट करें",
    unmute: "अनम्यूट करें",
    muted_by_host: "होस्ट ने आपको म्यूट किया।",
    mic_denied: "माइक्रोफ़ोन की अनुमति नहीं है। ब्राउज़र में अनुमति दें और फिर कोशिश करें।",
    leave: "छोड़ें",
  },
});

function initialLang() {
  let saved = null;
  try {
    saved = localStorage.getItem(KEY);
  } catch (_) {
    /* storage may be disabled */
  }
  if (LANGS.includes(saved)) return saved;
  const nav = (navigator.language || "en").slice(0, 2);
  return LANGS.includes(nav) ? nav : "en";
}

let current = initialLang();

export function lang() {
  return current;
}

/// The string `key` in the current language, `{name}` replaced from vars.
export function t(key, vars = {}) {
  const s = tables[current][key] ?? tables.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ""));
}

/// Fills every element under root: data-i18n (text), data-i18n-label
/// (aria-label), data-i18n-placeholder.
export function applyI18n(root = document) {
  document.documentElement.lang = current;
  for (const e of root.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  for (const e of root.querySelectorAll("[data-i18n-label]")) e.setAttribute("aria-label", t(e.dataset.i18nLabel));
  for (const e of root.querySelectorAll("[data-i18n-placeholder]")) e.placeholder = t(e.dataset.i18nPlaceholder);
}

const listeners = [];

/// Calls fn after every language change (to redraw dynamic text).
export function onLangChange(fn) {
  listeners.push(fn);
}

export function setLang(l) {
  if (!LANGS.includes(l)) return;
  current = l;
  try {
    localStorage.setItem(KEY, l);
  } catch (_) {
    /* ignore */
  }
  applyI18n();
  for (const fn of listeners) fn();
}

/// Wires a button (usually #lang) that switches between the two languages.
export function langButton(button) {
  button.addEventListener("click", () => setLang(current === "en" ? "hi" : "en"));
}
