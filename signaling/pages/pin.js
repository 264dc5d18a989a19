// PIN entry, /j and /j/{code}: trades the room code and a member's PIN for a
// room token (POST /v1/pin-join), then opens the page for the role it got
// (listen, bridge or host) with the token in the fragment.

import { addStrings, t } from "./i18n.js";
import { $, ApiError, api, initPage } from "./sabha.js";

addStrings({
  en: {
    pin_title: "Join with a PIN",
    room_code: "Room code",
    your_pin: "Your PIN",
    join: "Join",
    pin_wrong: "The room code or PIN is not right. Check them and try again.",
    pin_wait: "Too many tries. Wait {s} seconds, then try again.",
    pin_missing: "Enter the room code and your PIN (digits only).",
  },
  hi: {
    pin_title: "PIN से जुड़ें",
    room_code: "सभा कोड",
    your_pin: "आपका PIN",
    join: "जुड़ें",
    pin_wrong: "सभा कोड या PIN सही नहीं है। जाँचकर फिर कोशिश करें।",
    pin_wait: "बहुत सारी कोशिशें। {s} सेकंड रुककर फिर कोशिश करें।",
    pin_missing: "सभा कोड और अपना PIN डालें (केवल अंक)।",
  },
});

function say(text) {
  const e = $("#state");
  e.textContent = text;
  e.className = "status bad";
}

async function submit(event) {
  event.preventDefault();
  const room_code = $("#code").value.trim();
  const pin = $("#pin").value.trim();
  if (!/^[0-9]+$/.test(room_code) || !/^[0-9]+$/.test(pin)) return say(t("pin_missing"));
  $("#go").disabled = true;
  try {
    const joined = await api("/v1/pin-join", { method: "POST", json: { room_code, pin } });
    location.assign(`${joined.page}#token=${encodeURIComponent(joined.token)}`);
  } catch (error) {
    const status = error instanceof ApiError ? error.status : 0;
    if (status === 429) say(t("pin_wait", { s: error.retryAfter || 60 }));
    else if (status === 401) say(t("pin_wrong"));
    else say(t("error", { detail: error.message }));
  } finally {
    $("#go").disabled = false;
  }
}

initPage();
const code = decodeURIComponent(location.pathname.split("/")[2] || "");
if (/^[0-9]+$/.test(code)) {
  $("#code").value = code;
  $("#pin").focus();
} else {
  $("#code").focus();
}
$("#form").addEventListener("submit", submit);
