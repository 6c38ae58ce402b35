// The classroom page behind iframeUrl. Teacher and student views on the SDK (/sdk/classcast.js), the hosted
// service's iframe protocol toward the embedding page, and the AI tutor panel. No third-party code.
import { Room, getLocalMedia } from "/sdk/classcast.js";

const config = JSON.parse(document.getElementById("classcast-config").textContent);
const token = new URLSearchParams(location.search).get("token");
const C = config.customization;
const perms = new Set(config.permissions);
const me = config.participant;
const isModerator = perms.has("moderate");
const canPublish = perms.has("publish");
const state = { hands: [], roster: new Map(), polls: new Map(), recording: false, screenOn: false, handRaised: false,
                local: null, screenTrack: null, ended: false };

// ---- small DOM helpers ------------------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else if (v !== false && v != null) node.setAttribute(k, v);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}
const $ = (id) => document.getElementById(id);
function button(id, label, onclick, extra = {}) {
  return el("button", { id, type: "button", "aria-label": label, title: label, text: label, onclick, ...extra });
}

// ---- the iframe protocol (reference 4.1 and 4.2) ----------------------------------------------------------
const parentOrigin = (() => {
  try { return document.referrer ? new URL(document.referrer).origin : "*"; } catch (_) { return "*"; }
})();
function post(action, extra = {}) {
  if (window.parent === window) return;
  window.parent.postMessage({ type: "verriflo_classroom", action, roomId: config.room.roomId, ...extra }, parentOrigin);
}
function postFullscreen(action) {
  if (window.parent !== window) window.parent.postMessage({ type: "verriflo_fullscreen", action }, parentOrigin);
}

// ---- layout -------------------------------------------------------------------------------------------------
const app = $("app");
const brand = config.branding;
if (brand.primaryColor) document.documentElement.style.setProperty("--primary", brand.primaryColor);
if (brand.accentColor) document.documentElement.style.setProperty("--accent", brand.accentColor);

function header() {
  if (!C.showHeader) return null;
  return el("header", { class: "header" },
    C.showLogo && brand.logoUrl ? el("img", { class: "logo", src: brand.logoUrl, alt: `${brand.name || ""} logo` }) : null,
    C.showClassTitle ? el("h1", { class: "title", text: config.room.title }) : null,
    el("span", { id: "rec-badge", class: "rec", hidden: true, text: isModerator ? "● Recording" : "●" }),
    el("span", { id: "quality", class: "conn", "aria-live": "polite", text: "" }),
    el("span", { id: "net-path", class: "conn", title: "Network path to the server", text: "" }),
    el("span", { class: "me", text: `${me.name} · ${me.role.toLowerCase()}` }));
}

function stage() {
  return el("main", { id: "stage", class: "stage", "aria-label": "Class video" },
    el("div", { id: "screen-tile", class: "tile screen", hidden: true },
      el("video", { id: "screen-video", autoplay: true, playsinline: true, muted: true, "aria-label": "Shared screen" })),
    el("div", { id: "camera-tile", class: "tile camera" },
      el("video", { id: "camera-video", autoplay: true, playsinline: true, muted: true, "aria-label": "Teacher camera" }),
      el("span", { id: "camera-name", class: "name", hidden: !C.showParticipantName }),
      el("span", { id: "camera-mic", class: "mic", hidden: !C.showMicIndicator, "aria-label": "Microphone state" }),
      el("p", { id: "camera-empty", class: "empty", text: "Waiting for the teacher…" }),
      // Captions sit over the teacher's camera, never over the shared screen (which is a tile of its own).
      el("div", { id: "captions", class: "captions", hidden: true, "aria-hidden": "true" },
        el("p", { id: "caption-text", class: "caption-text" }))),
    el("audio", { id: "audio-out", autoplay: true }));
}

function panel(id, title, ...children) {
  return el("section", { id, class: "panel", "aria-label": title }, el("h2", { text: title }), ...children);
}

function sidebar() {
  const parts = [];
  parts.push(panel("participants", "Participants", el("ul", { id: "roster", class: "roster" })));
  if (isModerator) parts.push(panel("hands", "Raised hands", el("ol", { id: "hand-queue", class: "queue" })));
  const pollPanel = panel("polls", "Polls", el("div", { id: "poll-list" }));
  if (perms.has("create_poll")) {
    pollPanel.append(el("form", { id: "poll-form", class: "poll-form", onsubmit: createPoll },
      el("label", { for: "poll-question", text: "Question" }), el("input", { id: "poll-question", required: true }),
      el("label", { for: "poll-options", text: "Options (one per line)" }),
      el("textarea", { id: "poll-options", rows: "3", required: true }),
      el("button", { type: "submit", id: "poll-create", text: "Start poll" })));
  }
  parts.push(pollPanel);
  if (C.needChat) {
    parts.push(panel("chat", "Chat", el("ol", { id: "chat-log", class: "chat-log", "aria-live": "polite" }),
      el("form", { id: "chat-form", class: "row", onsubmit: sendChat },
        el("label", { for: "chat-input", class: "sr", text: "Message" }),
        el("input", { id: "chat-input", maxlength: "2000", autocomplete: "off", placeholder: "Message" }),
        el("button", { type: "submit", id: "chat-send", text: "Send" }))));
  }
  parts.push(panel("transcript", "Transcript",
    el("label", { for: "transcript-search", class: "sr", text: "Search the transcript" }),
    el("input", { id: "transcript-search", type: "search", autocomplete: "off", placeholder: "Search the transcript",
                  oninput: renderTranscript }),
    el("ol", { id: "transcript-log", class: "transcript-log", "aria-live": "polite" }),
    el("p", { id: "transcript-empty", class: "hint", text: "Captions of what the teacher says appear here." })));
  if (me.role === "STUDENT") {
    parts.push(panel("tutor", "AI tutor", el("div", { id: "tutor-log", class: "tutor-log", "aria-live": "polite" }),
      el("form", { id: "tutor-form", class: "row", onsubmit: askTutor },
        el("label", { for: "tutor-input", class: "sr", text: "Question for the tutor" }),
        el("input", { id: "tutor-input", autocomplete: "off", placeholder: "Ask the tutor" }),
        el("button", { type: "submit", id: "tutor-ask", text: "Ask" }))));
  }
  return el("aside", { id: "sidebar", class: "sidebar" }, ...parts);
}

function controls() {
  if (!C.needControlbar) return null;
  const bar = el("footer", { id: "controls", class: "controls", role: "toolbar", "aria-label": "Class controls" });
  if (canPublish) {
    bar.append(button("mic-toggle", "Mute microphone", toggleMic), button("cam-toggle", "Turn camera off", toggleCam));
    if (perms.has("screen_share")) bar.append(button("screen-toggle", "Share screen", toggleScreen));
    if (perms.has("start_recording") || perms.has("stop_recording")) {
      bar.append(button("record-toggle", "Start recording", toggleRecording));
    }
  } else {
    const select = el("select", { id: "quality-select", "aria-label": "Video quality", onchange: (e) => setQuality(e.target.value) },
      ...["auto", "low", "medium", "high", "off"].map((q) => el("option", { value: q, text: q === "off" ? "off (audio only)" : q })));
    bar.append(el("label", { for: "quality-select", text: "Quality" }), select);
    if (perms.has("raise_hand")) bar.append(button("hand-toggle", "Raise hand", toggleHand));
  }
  bar.append(button("cc-toggle", "Captions", toggleCaptions, { "aria-pressed": String(captionsOn()) }));
  bar.append(button("fullscreen", "Full screen", () => postFullscreen(document.fullscreenElement ? "exit" : "enter")));
  if (perms.has("end_class")) bar.append(button("end-class", "End class", () => room.endClass(), { class: "danger" }));
  bar.append(button("leave", "Leave", leave));
  return bar;
}

function terminal(kind, message) {
  const titles = { ended: "The class has ended", kicked: "You were removed from this class", error: "Something went wrong",
                   left: "You left the class" };
  app.replaceChildren(el("section", { id: "terminal", class: `terminal ${kind}`, role: "alert", "data-state": kind },
    el("h1", { text: titles[kind] || kind }), message ? el("p", { text: message }) : null,
    el("button", { id: "close", type: "button", text: "Close", onclick: () => post("close") })));
}

// ---- the room -----------------------------------------------------------------------------------------------
const room = new Room();
window.classcastRoom = room; // for integrators' debugging and the end-to-end tests

room.addEventListener("statechange", (e) => {
  document.body.dataset.state = e.detail.state;
  if (e.detail.state === "ended") { terminal("ended"); post("class_ended"); }
  if (e.detail.state === "kicked") { terminal("kicked"); post("participant_removed"); post("kicked"); }
  if (e.detail.state === "error") terminal("error", "The connection to the classroom was lost.");
  if (e.detail.state === "reconnecting") post("reconnecting");
});
room.addEventListener("connected", () => post("connected"));
room.addEventListener("reconnected", () => post("reconnected"));
room.addEventListener("disconnected", () => { if (!state.ended) post("disconnected"); });
room.addEventListener("participant_joined", (e) => { state.roster.set(e.detail.participant.uid, e.detail.participant);
  renderRoster(); post("participant_joined", { message: e.detail.participant.name }); });
room.addEventListener("participant_left", (e) => { state.roster.delete(e.detail.participant.uid); renderRoster();
  post("participant_left", { message: e.detail.participant.name }); });
room.addEventListener("participant_removed", (e) => {
  if (!e.detail.self) { state.roster.delete(e.detail.participant.uid); renderRoster(); }
});
room.addEventListener("class_ended", () => { state.ended = true; });
room.addEventListener("recording_started", () => { state.recording = true; renderRecording(); post("recording_started"); });
room.addEventListener("recording_stopped", () => { state.recording = false; renderRecording(); post("recording_stopped"); });
room.addEventListener("quality_changed", (e) => {
  if (e.detail.layer) $("quality").textContent = `${e.detail.quality} · ${e.detail.width || "?"}×${e.detail.height || "?"}`;
  post("quality_changed", { message: e.detail.quality });
});
room.addEventListener("connectionQuality", (e) => { $("quality").dataset.state = e.detail.state; });
// The path the SDK reports (issue 16): direct or through the TURN relay, over UDP, TCP or TLS.
const PATH_LABELS = { "direct-udp": "direct · UDP", "direct-tcp": "direct · TCP", "relay-udp": "relay · UDP",
  "relay-tcp": "relay · TCP", "relay-tls": "relay · TLS" };
room.addEventListener("diagnostics", (e) => {
  const path = $("net-path");
  if (path && e.detail.connectionType) {
    path.dataset.path = e.detail.connectionType;
    path.textContent = PATH_LABELS[e.detail.connectionType] || e.detail.connectionType;
  }
});
room.addEventListener("trackSubscribed", (e) => attachTrack(e.detail));
room.addEventListener("trackUnsubscribed", (e) => detachTrack(e.detail));
room.addEventListener("track_unpublished", (e) => detachTrack(e.detail.track));
room.addEventListener("track_muted", (e) => {
  if (e.detail.track.source === "microphone") $("camera-mic").dataset.muted = e.detail.track.muted;
});
room.addEventListener("hands", (e) => { state.hands = e.detail.queue; renderHands(); });
room.addEventListener("hand_lowered", (e) => { if (e.detail.uid === me.uid) setHand(false); });
room.addEventListener("poll_created", (e) => { state.polls.set(e.detail.poll.pollId, e.detail.poll); renderPolls(); });
room.addEventListener("poll_results", (e) => { const p = state.polls.get(e.detail.pollId);
  if (p) { p.results = e.detail.results; renderPolls(); } });
room.addEventListener("poll_answered", (e) => { const p = state.polls.get(e.detail.pollId);
  if (p) { p.myAnswer = e.detail.option; renderPolls(); } });
room.addEventListener("poll_closed", (e) => { state.polls.set(e.detail.poll.pollId, e.detail.poll); renderPolls(); });
room.addEventListener("chat", (e) => addChat(e.detail.message));
room.addEventListener("caption", (e) => { addCaption(e.detail, true); post("caption", { message: e.detail.text, caption: e.detail }); });
room.addEventListener("participant_muted", (e) => {
  if (e.detail.participant.uid === me.uid && state.local) setMic(false);
});

function attachTrack(info) {
  if (info.kind === "audio") {
    const audio = $("audio-out");
    audio.srcObject = new MediaStream([info.track]);
    audio.play().catch(() => {});
    return;
  }
  const target = info.source === "screen" ? "screen" : "camera";
  const video = $(`${target}-video`);
  video.srcObject = new MediaStream([info.track]);
  video.play().catch(() => {});
  if (target === "screen") { $("screen-tile").hidden = false; $("stage").classList.add("sharing"); }
  else { $("camera-empty").hidden = true; const who = state.roster.get(info.uid); $("camera-name").textContent = who ? who.name : info.uid; }
}

// Before any teacher is in the room there is no camera to be off: say what the class is waiting for.
function renderCameraEmpty() {
  const empty = $("camera-empty");
  if (!empty) return;
  const teacherHere = [...state.roster.values()].some((p) => p.role === "TEACHER" && p.uid !== me.uid);
  empty.textContent = teacherHere || canPublish ? "The teacher's camera is off" : "Waiting for the teacher…";
}

function detachTrack(info) {
  if (info.source === "screen") { $("screen-tile").hidden = true; $("stage").classList.remove("sharing"); $("screen-video").srcObject = null; }
  if (info.source === "camera") $("camera-empty").hidden = false;
}

// ---- rendering --------------------------------------------------------------------------------------------
function renderRoster() {
  const list = $("roster");
  if (!list) return;
  list.replaceChildren(...[...state.roster.values()].map((p) => el("li", { "data-uid": p.uid },
    el("span", { text: `${p.name}${p.uid === me.uid ? " (you)" : ""}` }),
    el("small", { text: p.role.toLowerCase() }),
    isModerator && p.uid !== me.uid ? button(`mute-${p.uid}`, `Mute ${p.name}`, () => room.muteParticipant(p.uid), { class: "small", text: "Mute" }) : null,
    isModerator && p.uid !== me.uid ? button(`kick-${p.uid}`, `Remove ${p.name}`, () => room.kick(p.uid), { class: "small danger", text: "Remove" }) : null)));
  renderCameraEmpty();
}

function renderHands() {
  const queue = $("hand-queue");
  if (!queue) return;
  queue.replaceChildren(...state.hands.map((h) => el("li", { "data-uid": h.uid }, el("span", { text: h.name }),
    button(`lower-${h.uid}`, `Lower ${h.name}'s hand`, () => room.lowerHand(h.uid), { class: "small", text: "Lower" }))));
}

function renderPolls() {
  const list = $("poll-list");
  list.replaceChildren(...[...state.polls.values()].map((p) => {
    const results = p.results;
    const box = el("div", { class: "poll", "data-poll": p.pollId }, el("p", { class: "question", text: p.question }));
    p.options.forEach((option, i) => {
      const count = results ? results.counts[i] : null;
      if (p.open && perms.has("answer_poll") && p.myAnswer == null) {
        box.append(button(`poll-${p.pollId}-${i}`, option, () => room.answerPoll(p.pollId, i), { class: "option" }));
      } else {
        box.append(el("div", { class: `result${p.myAnswer === i ? " mine" : ""}`, "data-option": i },
          el("span", { text: option }), count != null ? el("b", { text: String(count) }) : null));
      }
    });
    if (p.myAnswer != null && perms.has("answer_poll")) {
      box.append(el("p", { class: "confirm", role: "status", text: `✓ Your answer “${p.options[p.myAnswer]}” was recorded.` }));
    }
    if (p.open && perms.has("create_poll")) box.append(button(`close-${p.pollId}`, "Close poll", () => room.closePoll(p.pollId), { class: "small" }));
    if (!p.open) box.append(el("small", { text: "Closed" }));
    return box;
  }));
}

function renderRecording() {
  $("rec-badge").hidden = !state.recording;
  const b = $("record-toggle");
  if (!b) return;
  const label = state.recording ? "Stop recording" : "Start recording";
  b.textContent = label; b.setAttribute("aria-label", label); b.title = label;
  // A moderator may stop a recording but not start one: the button is there only while one runs.
  b.hidden = state.recording ? !perms.has("stop_recording") : !perms.has("start_recording");
}

function addChat(message) {
  const log = $("chat-log");
  if (!log) return;
  log.append(el("li", {}, el("b", { text: `${message.name}: ` }), el("span", { text: message.text })));
  log.scrollTop = log.scrollHeight;
}

// ---- captions: an overlay with the latest utterance (CC, remembered per browser) and a searchable transcript ----
const CAPTIONS_KEY = "classcast.captions";
const captionLog = [];
let captionTimer = null;
function captionsOn() {
  try { return localStorage.getItem(CAPTIONS_KEY) !== "off"; } catch (_) { return true; }
}
function toggleCaptions() {
  const on = !captionsOn();
  try { localStorage.setItem(CAPTIONS_KEY, on ? "on" : "off"); } catch (_) { /* storage disabled: this page only */ }
  $("cc-toggle").setAttribute("aria-pressed", String(on));
  if (!on) $("captions").hidden = true;
}
function clock(seconds) {
  const s = Math.floor(seconds);
  const mm = String(Math.floor(s / 60) % 60).padStart(2, "0"), ss = String(s % 60).padStart(2, "0");
  return s >= 3600 ? `${Math.floor(s / 3600)}:${mm}:${ss}` : `${mm}:${ss}`;
}
function addCaption(caption, live) {
  captionLog.push(caption);
  if (captionLog.length > 2000) captionLog.shift();
  renderTranscript();
  if (!live || !captionsOn()) return;
  const box = $("captions");
  $("caption-text").textContent = caption.text;
  box.hidden = false;
  clearTimeout(captionTimer);
  // Shown for as long as it was spoken plus reading time, then cleared (no stale line over the video).
  captionTimer = setTimeout(() => { box.hidden = true; }, Math.max(4000, (caption.end - caption.start) * 1000 + 3000));
}
function renderTranscript() {
  const log = $("transcript-log");
  if (!log) return;
  const query = ($("transcript-search").value || "").trim().toLowerCase();
  const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
  const shown = captionLog.filter((c) => !query || c.text.toLowerCase().includes(query) || c.name.toLowerCase().includes(query));
  log.replaceChildren(...shown.map((c) => {
    const text = el("span", { class: "text" });
    const lower = c.text.toLowerCase();
    let at = 0;
    if (query) {
      for (let i = lower.indexOf(query); i >= 0; i = lower.indexOf(query, at)) {
        text.append(c.text.slice(at, i), el("mark", { text: c.text.slice(i, i + query.length) }));
        at = i + query.length;
      }
    }
    text.append(c.text.slice(at));
    return el("li", { "data-start": String(c.start) }, el("time", { text: clock(c.start) }), el("b", { text: `${c.name}: ` }), text);
  }));
  $("transcript-empty").hidden = captionLog.length > 0;
  if (stick && !query) log.scrollTop = log.scrollHeight;
}

// ---- actions -----------------------------------------------------------------------------------------------
function sendChat(event) {
  event.preventDefault();
  const input = $("chat-input");
  if (input.value.trim()) room.chat(input.value.trim());
  input.value = "";
}

function createPoll(event) {
  event.preventDefault();
  const options = $("poll-options").value.split("\n").map((s) => s.trim()).filter(Boolean);
  room.createPoll($("poll-question").value.trim(), options).catch((e) => alert(e.message));
  event.target.reset();
}

function setHand(raised) {
  state.handRaised = raised;
  const b = $("hand-toggle");
  if (b) { b.textContent = raised ? "Lower hand" : "Raise hand"; b.setAttribute("aria-pressed", String(raised)); }
}
function toggleHand() { if (state.handRaised) room.lowerHand(); else room.raiseHand(); setHand(!state.handRaised); }

function setQuality(quality) { room.setQuality(quality); }

function setMic(enabled) {
  room.setMuted("microphone", !enabled);
  const b = $("mic-toggle");
  if (b) b.textContent = enabled ? "Mute microphone" : "Unmute microphone";
}
function toggleMic() { const t = room.localTracks.microphone; if (t) setMic(!t.enabled); }
function setCamera(enabled) {
  room.setMuted("camera", !enabled);
  const b = $("cam-toggle");
  if (b) b.textContent = enabled ? "Turn camera off" : "Turn camera on";
}
function toggleCam() { const t = room.localTracks.camera; if (t) setCamera(!t.enabled); }

async function toggleScreen() {
  if (state.screenOn) {
    await room.unpublish("screen");
    state.screenOn = false;
  } else {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true });
    const track = stream.getVideoTracks()[0];
    track.addEventListener("ended", () => { if (state.screenOn) toggleScreen(); });
    await room.publish({ screen: track });
    state.screenOn = true;
  }
  $("screen-toggle").textContent = state.screenOn ? "Stop sharing" : "Share screen";
}

function toggleRecording() { room.send({ type: state.recording ? "recording_stop" : "recording_start" }); }

async function leave() {
  state.ended = true;
  await room.leave();
  terminal("left");
  post("participant_left");
}

async function askTutor(event) {
  event.preventDefault();
  const input = $("tutor-input");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  const log = $("tutor-log");
  log.append(el("p", { class: "q", text }));
  const answer = el("p", { class: "a", text: "" });
  log.append(answer);
  // The page's own participant token, never the organization id (which must not reach a browser).
  const response = await fetch("/v1/ai-tutor/chat/stream", { method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify({ roomId: config.room.roomId, text, responseModality: "text" }) });
  if (!response.ok || !response.body) { answer.textContent = "The tutor is not available right now."; return; }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const line of lines) {
      if (!line.startsWith("data: ")) continue;
      const data = line.slice(6).trim();
      if (data === "[DONE]") { answer.dataset.done = "true"; continue; }
      try { const chunk = JSON.parse(data); if (chunk.text) answer.textContent += chunk.text; } catch (_) { /* partial */ }
    }
  }
}

// ---- commands from the embedding page ----------------------------------------------------------------------
window.addEventListener("message", async (event) => {
  if (event.source !== window.parent || window.parent === window) return;
  const msg = event.data || {};
  const data = msg.data || msg;
  switch (msg.type) {
    case "verriflo_force_leave": await room.leave(); terminal("left", data.reason); post("force_leave_completed", { reason: data.reason }); break;
    case "verriflo_disconnect": await room.leave(); terminal("left"); post("participant_left"); break;
    case "setQuality": setQuality(data.quality); if ($("quality-select")) $("quality-select").value = data.quality; break;
    case "enableAudio": $("audio-out").play().catch(() => {}); $("camera-video").muted = false; break;
    case "verriflo_set_audio_muted": if (canPublish) setMic(!data.muted); else $("audio-out").muted = !!data.muted; break;
    case "verriflo_set_video_enabled": if (canPublish) setCamera(!!data.enabled); else setQuality(data.enabled ? "auto" : "off"); break;
    case "verriflo_set_fullscreen": if (data.fullscreen) document.documentElement.requestFullscreen().catch(() => postFullscreen("enter"));
      else if (document.fullscreenElement) document.exitFullscreen(); break;
    case "verriflo_set_chat_visible": if ($("chat")) $("chat").hidden = !data.visible; break;
    case "verriflo_set_participants_visible": $("participants").hidden = !data.visible; break;
    case "verriflo_set_hand_raised": if (perms.has("raise_hand") && !!data.raised !== state.handRaised) toggleHand(); break;
    case "verriflo_send_chat_message": if (data.message) room.chat(String(data.message)); break;
    case "verriflo_mute_participant": if (isModerator) room.muteParticipant(data.participantId); break;
    case "verriflo_kick_participant": if (isModerator) room.kick(data.participantId, data.reason); break;
    case "verriflo_end_class": if (perms.has("end_class")) room.endClass(); break;
  }
});

// ---- start: lobby (camera and microphone check), then the class -------------------------------------------
async function lobby() {
  const status = el("p", { id: "lobby-status", text: "Checking your camera and microphone…" });
  const join = button("join", "Join class", () => start(stream), { class: "primary" });
  const title = el("h1", { text: config.room.title });
  let stream = null;
  if (!canPublish) {
    // A student publishes nothing, so the lobby asks for no camera or microphone (no black preview, no prompt).
    status.textContent = "You will see and hear the class; your camera and microphone stay off.";
    app.replaceChildren(el("section", { id: "lobby", class: "lobby" }, title, status, join));
    return;
  }
  const preview = el("video", { id: "lobby-video", autoplay: true, playsinline: true, muted: true, "aria-label": "Camera preview" });
  const meter = el("meter", { id: "mic-level", min: "0", max: "1", value: "0", "aria-label": "Microphone level" });
  app.replaceChildren(el("section", { id: "lobby", class: "lobby" }, title, preview, meter, status, join));
  try {
    stream = await getLocalMedia();
    preview.srcObject = stream;
    const ctx = new AudioContext();
    const analyser = ctx.createAnalyser();
    ctx.createMediaStreamSource(stream).connect(analyser);
    const buf = new Uint8Array(analyser.fftSize);
    const tick = () => { analyser.getByteTimeDomainData(buf); meter.value = Math.max(...buf.map((v) => Math.abs(v - 128))) / 128;
      if (document.getElementById("lobby")) requestAnimationFrame(tick); };
    tick();
    status.textContent = "Camera and microphone are working.";
  } catch (err) {
    status.textContent = `No camera or microphone: ${err.message}. You can still join.`;
  }
}

async function start(stream) {
  app.replaceChildren(...[header(), stage(), sidebar(), controls()].filter(Boolean));
  app.classList.toggle("no-sidebar", false);
  try {
    const joined = await room.connect(token);
    for (const p of joined.roster) state.roster.set(p.uid, p);
    for (const p of joined.polls) state.polls.set(p.pollId, p);
    for (const m of joined.chat) addChat(m);
    for (const c of joined.captions || []) addCaption(c, false);
    state.hands = joined.hands || [];
    state.recording = joined.recording.active;
    renderRoster(); renderHands(); renderPolls(); renderRecording();
    if (canPublish) {
      if (!stream) stream = await getLocalMedia();
      state.local = stream;
      await room.publish({ camera: stream.getVideoTracks()[0], microphone: stream.getAudioTracks()[0] });
      const self = $("camera-video");
      self.srcObject = new MediaStream(stream.getVideoTracks());
      $("camera-empty").hidden = true;
      $("camera-name").textContent = `${me.name} (you)`;
    }
  } catch (err) {
    if (room.state !== "kicked") terminal(err.code === "PARTICIPANT_REMOVED" ? "kicked" : "error", err.message);
    post("error", { message: err.message });
  }
}

if (C.showLobby) lobby(); else start(null);
