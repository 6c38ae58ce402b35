// classcast browser SDK: an ES module with no build step and no third-party code. Its TypeScript declarations
// (classcast.d.ts) are generated from this file and its JSDoc by tsc (package.json). Protocol: docs/signaling.md.
// Usage: docs/sdk.md and README.md beside this file.

/** The SDK's version: the server's (pyproject.toml, package.json); /sdk/classcast-<VERSION>.js is this file. */
export const VERSION = "0.1.0";

/** Every value of `room.state` (and of `statechange` events' `detail.state`). */
export const STATE = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
  ENDED: "ended",
  KICKED: "kicked",
  ERROR: "error",
});

/** Events the Room dispatches of its own (CustomEvent; the payload is `event.detail`). */
export const EVENT = Object.freeze({
  STATECHANGE: "statechange",
  CONNECTED: "connected",
  DISCONNECTED: "disconnected",
  RECONNECTING: "reconnecting",
  RECONNECTED: "reconnected",
  ERROR: "error",
  TRACK_SUBSCRIBED: "trackSubscribed",
  TRACK_UNSUBSCRIBED: "trackUnsubscribed",
  CONNECTION_QUALITY: "connectionQuality",
  /** Once connected: `{ connectionType }`, the path ICE chose (see connectionTypeOf). */
  DIAGNOSTICS: "diagnostics",
  /** Every server message, whatever its type. */
  MESSAGE: "message",
});

/** Server messages (docs/signaling.md): each is also dispatched as an event of its own type, detail = message. */
export const SERVER_EVENT = Object.freeze({
  JOINED: "joined",
  PONG: "pong",
  ERROR: "error",
  PARTICIPANT_JOINED: "participant_joined",
  PARTICIPANT_LEFT: "participant_left",
  PARTICIPANT_REMOVED: "participant_removed",
  PARTICIPANT_MUTED: "participant_muted",
  PARTICIPANT_UNMUTED: "participant_unmuted",
  CLASS_ENDED: "class_ended",
  HAND_RAISED: "hand_raised",
  HAND_LOWERED: "hand_lowered",
  HANDS: "hands",
  POLL_CREATED: "poll_created",
  POLL_ANSWERED: "poll_answered",
  POLL_RESULTS: "poll_results",
  POLL_CLOSED: "poll_closed",
  CHAT: "chat",
  CAPTION: "caption",
  TOPIC_SET: "topic_set",
  RECORDING_STARTED: "recording_started",
  RECORDING_STOPPED: "recording_stopped",
  PUBLISH_READY: "publish_ready",
  OFFER: "offer",
  ANSWER: "answer",
  CANDIDATE: "candidate",
  PUBLISHED: "published",
  TRACK_PUBLISHED: "track_published",
  TRACK_UNPUBLISHED: "track_unpublished",
  TRACK_MUTED: "track_muted",
  QUALITY_CHANGED: "quality_changed",
  LAYERS: "layers",
  RESTARTED: "restarted",
  RECONNECTING: "reconnecting",  // the server lost this connection's media worker; the Room reconnects by itself
  CONNECTION_STATE: "connection_state",
});

/** Sources a teacher publishes; `setQuality` values. */
export const SOURCE = Object.freeze({ CAMERA: "camera", MICROPHONE: "microphone", SCREEN: "screen" });
export const QUALITY = Object.freeze({ AUTO: "auto", LOW: "low", MEDIUM: "medium", HIGH: "high", OFF: "off" });

const STATES = Object.values(STATE);
const TERMINAL = new Set(["ended", "kicked", "error"]);
// A node that does not host the class answers join with REDIRECT and the host's signaling URL (several nodes
// behind one URL, docs/operations.md); the SDK follows at most this many before it gives up.
const MAX_REDIRECTS = 3;
const FATAL_CODES = new Set(["PARTICIPANT_REMOVED", "ROOM_ENDED", "TOKEN_EXPIRED", "INVALID_TOKEN", "ROOM_NOT_FOUND"]);

// Camera simulcast ladder: quarter, half and full resolution (rids as most SFUs name them).
export const SIMULCAST_LAYERS = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

// What a camera is asked for: 1280x720 at 30 fps, as `ideal` so that any camera still opens. Chromium sends as many
// simulcast layers as the picture allows (a 640x480 picture gets two), so the full ladder needs 720p.
export const CAMERA = Object.freeze({ width: 1280, height: 720, frameRate: 30 });

// getUserMedia constraints for the camera; pass a smaller size or rate to ask for less (a weak uplink or CPU).
/**
 * @param {{width?: number, height?: number, frameRate?: number}} [size]
 * @returns {MediaTrackConstraints}
 */
export function cameraConstraints({ width = CAMERA.width, height = CAMERA.height, frameRate = CAMERA.frameRate } = {}) {
  return { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: frameRate } };
}

// The camera and microphone as one MediaStream: getLocalMedia() for the defaults, getLocalMedia({width: 640,
// height: 360, frameRate: 15}) for less, {camera: false} or {microphone: false} to leave one out.
/**
 * @param {{camera?: boolean, microphone?: boolean, width?: number, height?: number, frameRate?: number}} [options]
 * @returns {Promise<MediaStream>}
 */
export function getLocalMedia({ camera = true, microphone = true, ...size } = {}) {
  return navigator.mediaDevices.getUserMedia({ video: camera ? cameraConstraints(size) : false, audio: microphone });
}

// ICE servers cheapest path first (issue 16): UDP, then TCP, then TLS, whatever order the server sent them in, so
// the relay's TLS port (the one path through HTTPS-only firewalls, and the dearest) is used only when it must be.
/**
 * @param {RTCIceServer[] | undefined} servers
 * @returns {RTCIceServer[]} one entry per URL, UDP first, then TCP, then TLS
 */
export function orderIceServers(servers) {
  const cost = (url) => (/^turns:/i.test(url) ? 2 : /[?&]transport=tcp/i.test(url) ? 1 : 0);
  const flat = [];
  for (const server of servers || []) {
    for (const url of [].concat(server.urls)) flat.push({ ...server, urls: url });
  }
  return flat.map((s, i) => [cost(s.urls), i, s]).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map((e) => e[2]);
}

// Which path a connection ended on, from an RTCStatsReport: direct-udp, direct-tcp, relay-udp, relay-tcp,
// relay-tls, or null before ICE has chosen.
/**
 * @param {RTCStatsReport} report
 * @returns {string | null}
 */
export function connectionTypeOf(report) {
  let pair = null;
  report.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId); });
  if (!pair) report.forEach((s) => { if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s; });
  const local = pair && report.get(pair.localCandidateId);
  if (!local) return null;
  if (local.candidateType === "relay") return `relay-${local.relayProtocol || "udp"}`;
  return `direct-${local.protocol || "udp"}`;
}

/**
 * One participant's connection to a class: join with a token, publish and receive tracks, and the classroom's
 * messages as events (names in EVENT and SERVER_EVENT).
 */
export class Room extends EventTarget {
  /** @param {RoomOptions} [options] */
  constructor({ baseUrl = location.origin, reconnect = true, maxBackoffMs = 5000 } = {}) {
    super();
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.reconnectEnabled = reconnect;
    this.maxBackoffMs = maxBackoffMs;
    this.state = "idle";
    this.joined = null;
    this.remoteTracks = new Map(); // mid -> {info, track, stream}
    this.localTracks = {}; // source -> MediaStreamTrack
    this.published = {}; // source -> info from the server
    this.ws = null;
    this.pc = null;
    this._queue = Promise.resolve(); // negotiation steps run one at a time
    this._waiters = [];
    this._closing = false;
    this._senders = {}; // source -> RTCRtpSender
  }

  // ---- state and events --------------------------------------------------------------------------------
  _setState(state) {
    if (state === this.state) return;
    this.state = state;
    this._emit("statechange", { state });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _waitFor(type, predicate = () => true, timeoutMs = 15000) {
    return new Promise((resolve, reject) => {
      const waiter = { type, predicate, resolve, reject };
      waiter.timer = setTimeout(() => {
        this._waiters = this._waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out waiting for ${type}`));
      }, timeoutMs);
      this._waiters.push(waiter);
    });
  }

  _deliver(message) {
    for (const waiter of [...this._waiters]) {
      if (message.type === "error" && waiter.errors && (!message.ref || message.ref === waiter.ref)) {
        clearTimeout(waiter.timer);
        this._waiters = this._waiters.filter((w) => w !== waiter);
        const err = new Error(message.message);
        err.code = message.code;
        if (message.url) err.url = message.url;
        waiter.reject(err);
      } else if (message.type === waiter.type && waiter.predicate(message)) {
        clearTimeout(waiter.timer);
        this._waiters = this._waiters.filter((w) => w !== waiter);
        waiter.resolve(message);
      }
    }
  }

  async _request(message, replyType, ref = message.type) {
    const reply = this._waitFor(replyType);
    const waiter = this._waiters[this._waiters.length - 1];
    waiter.errors = true;
    waiter.ref = ref;
    this.send(message);
    return reply;
  }

  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) throw new Error("not connected");
    this.ws.send(JSON.stringify(message));
  }

  // ---- connection ----------------------------------------------------------------------------------------
  /**
   * Joins with a join token from your backend's POST /v1/room/:roomId/join.
   * @param {string} token
   * @returns {Promise<Joined>}
   */
  async connect(token) {
    this.token = token;
    this._setState("connecting");
    try {
      await this._open();
      this._setState("connected");
      this._emit("connected", this.joined);
      return this.joined;
    } catch (err) {
      this._setState(err.code === "PARTICIPANT_REMOVED" ? "kicked" : "error");
      this._emit("error", { code: err.code, message: err.message });
      throw err;
    }
  }

  async _open(nodeUrl = null, hops = 0) {
    // Every connection starts at baseUrl (the node that hosted the class may be gone); a REDIRECT names the host.
    const socketUrl = nodeUrl || this.baseUrl.replace(/^http/, "ws") + "/v1/rtc";
    const ws = new WebSocket(socketUrl + "?token=" + encodeURIComponent(this.token));
    this.ws = ws;
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error("cannot reach the classroom server"));
    });
    ws.onmessage = (event) => this._onMessage(JSON.parse(event.data));
    ws.onclose = () => this._onClose(ws);
    // The peer connection needs joined's iceServers (the TURN credential), and the server may send its first offer
    // before joined: offers and candidates wait in the negotiation queue until the peer connection exists.
    let ready;
    this._queue = new Promise((resolve) => { ready = resolve; });
    let redirect = null;
    try {
      const joined = await this._request({ type: "join" }, "joined");
      this.joined = joined;
      if (this.pc) this.pc.close();
      this.pc = this._newPeerConnection(joined.iceServers || []);
      return joined;
    } catch (err) {
      if (err.code !== "REDIRECT" || !/^wss?:\/\//.test(err.url || "") || hops >= MAX_REDIRECTS) throw err;
      redirect = err.url;
      this.ws = null; // this socket's close is the redirect's, not a lost connection
      ws.onclose = null;
      ws.close();
    } finally {
      ready();
    }
    return this._open(redirect, hops + 1);
  }

  _newPeerConnection(iceServers) {
    const pc = new RTCPeerConnection({ iceServers: orderIceServers(iceServers), bundlePolicy: "max-bundle" });
    pc.onicecandidate = (event) => {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) {
        this.send({ type: "candidate", candidate: event.candidate ? event.candidate.toJSON() : null });
      }
    };
    pc.ontrack = (event) => {
      const mid = event.transceiver.mid;
      const entry = this.remoteTracks.get(mid) || {};
      entry.track = event.track;
      entry.stream = event.streams[0] || new MediaStream([event.track]);
      this.remoteTracks.set(mid, entry);
      if (entry.info) this._emit("trackSubscribed", { ...entry.info, track: event.track, stream: entry.stream, mid });
    };
    pc.onconnectionstatechange = () => {
      this._emit("connectionQuality", { state: pc.connectionState });
      if (pc.connectionState === "connected") {
        this.stats().then(({ connectionType }) => this._emit("diagnostics", { connectionType })).catch(() => {});
      }
      if (pc.connectionState === "failed" && this.state === "connected") this.send({ type: "restart" });
    };
    return pc;
  }

  /**
   * The connection's path and the browser's full report.
   * @returns {Promise<{ connectionType: string | null, report: RTCStatsReport | null }>}
   */
  async stats() {
    const report = this.pc ? await this.pc.getStats() : new Map();
    return { connectionType: connectionTypeOf(report), report };
  }

  _onClose(ws) {
    if (ws !== this.ws) return;
    this._emit("disconnected", {});
    if (this._closing || TERMINAL.has(this.state)) return;
    if (!this.reconnectEnabled) {
      this._setState("error");
      return;
    }
    this._reconnect();
  }

  async _reconnect() {
    this._setState("reconnecting");
    this._emit("reconnecting", {});
    let delay = 200;
    while (!this._closing) {
      await new Promise((r) => setTimeout(r, delay));
      try {
        if (this.pc) this.pc.close();
        this.remoteTracks.clear();
        await this._open();
        this._setState("connected");
        this._emit("reconnected", this.joined);
        const tracks = { ...this.localTracks };
        this.published = {};
        if (Object.keys(tracks).length) await this.publish(tracks, this._publishOptions);
        return;
      } catch (err) {
        if (FATAL_CODES.has(err.code)) {
          this._setState(err.code === "PARTICIPANT_REMOVED" ? "kicked" : err.code === "ROOM_ENDED" ? "ended" : "error");
          return;
        }
      }
      delay = Math.min(this.maxBackoffMs, delay * 2);
    }
  }

  async leave() {
    this._closing = true;
    try { this.send({ type: "leave" }); } catch (_) { /* already gone */ }
    if (this.ws) this.ws.close();
    if (this.pc) this.pc.close();
    this._setState("idle");
  }

  // ---- server messages -----------------------------------------------------------------------------------
  _onMessage(message) {
    this._deliver(message);
    switch (message.type) {
      case "offer":
        this._enqueue(() => this._answer(message));
        break;
      case "candidate":
        this._enqueue(() => this._addCandidate(message.candidate));
        break;
      case "layers":
        this._enqueue(() => this._applyLayers(message));
        break;
      case "restarted":
        this._enqueue(async () => {
          if (this.pc) this.pc.close();
          this.pc = this._newPeerConnection((this.joined && this.joined.iceServers) || []);
          this.remoteTracks.clear();
        }).then(() => {
          const tracks = { ...this.localTracks };
          this.published = {};
          if (Object.keys(tracks).length) return this.publish(tracks, this._publishOptions);
        });
        break;
      case "reconnecting":
        // The server lost this connection's media (an SFU worker died) and closes the socket next; the reconnect
        // that follows joins again on a live worker and publishes the same tracks again.
        if (this.state === "connected") this._setState("reconnecting");
        break;
      case "class_ended":
        this._setState("ended");
        break;
      case "participant_removed":
        if (message.self) this._setState("kicked");
        break;
      case "track_unpublished":
        for (const [mid, entry] of this.remoteTracks) {
          if (entry.info && entry.info.trackId === message.track.trackId) {
            this._emit("trackUnsubscribed", { ...entry.info, mid });
          }
        }
        break;
    }
    this._emit(message.type, message);
    this._emit("message", message);
  }

  // Negotiation steps run one at a time; the returned promise settles with this step's own result.
  _enqueue(step) {
    const run = this._queue.then(step);
    this._queue = run.catch((err) => this._emit("error", { code: err.code || "NEGOTIATION", message: String(err.message || err) }));
    return run;
  }

  async _answer(message) {
    const pc = this.pc;
    await pc.setRemoteDescription({ type: "offer", sdp: message.sdp });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    for (const transceiver of pc.getTransceivers()) {
      const info = message.tracks && message.tracks[transceiver.mid];
      if (!info) continue;
      const entry = this.remoteTracks.get(transceiver.mid) || {};
      entry.info = info;
      entry.track = transceiver.receiver.track;
      entry.stream = entry.stream || new MediaStream([entry.track]);
      this.remoteTracks.set(transceiver.mid, entry);
      this._emit("trackSubscribed", { ...info, track: entry.track, stream: entry.stream, mid: transceiver.mid });
    }
    this.send({ type: "answer", sdp: pc.localDescription.sdp });
  }

  async _addCandidate(candidate) {
    if (!this.pc || !this.pc.remoteDescription) return;
    try {
      await this.pc.addIceCandidate(candidate || null);
    } catch (_) {
      // a candidate already in the description, or one this browser cannot use: nothing to do
    }
  }

  // Dynacast: the server says which simulcast layers anyone needs; paused layers cost no upload.
  async _applyLayers(message) {
    const source = Object.keys(this.published).find((s) => this.published[s].trackId === message.trackId);
    const sender = source && this._senders[source];
    if (!sender) return;
    const params = sender.getParameters();
    for (const encoding of params.encodings || []) {
      if (encoding.rid in message.layers) encoding.active = message.layers[encoding.rid];
    }
    await sender.setParameters(params);
  }

  // ---- publishing ----------------------------------------------------------------------------------------
  // tracks: {camera?: MediaStreamTrack, microphone?: MediaStreamTrack, screen?: MediaStreamTrack}
  /**
   * @param {{camera?: MediaStreamTrack, microphone?: MediaStreamTrack, screen?: MediaStreamTrack}} tracks
   * @param {{simulcast?: boolean, videoCodec?: string | null}} [options]
   * @returns {Promise<TrackInfo[]>}
   */
  async publish(tracks, { simulcast = true, videoCodec = null } = {}) {
    this._publishOptions = { simulcast, videoCodec };
    Object.assign(this.localTracks, tracks);
    // Asked outside the negotiation queue: the server may first offer this room's existing tracks and says
    // publish_ready only once that offer is answered, which is a queued step.
    await this._request({ type: "publish", tracks: Object.keys(tracks).map((source) => ({ source })) },
      "publish_ready");
    return this._enqueue(async () => {
      const pc = this.pc;
      const transceivers = {};
      for (const [source, track] of Object.entries(tracks)) {
        const init = { direction: "sendonly", streams: [] };
        if (source === "camera" && simulcast) init.sendEncodings = SIMULCAST_LAYERS.map((l) => ({ ...l }));
        if (source === "screen") track.contentHint = "detail";
        const transceiver = pc.addTransceiver(track, init);
        if (videoCodec && track.kind === "video" && RTCRtpSender.getCapabilities) {
          const codecs = RTCRtpSender.getCapabilities("video").codecs
            .filter((c) => c.mimeType === videoCodec || c.mimeType === "video/rtx");
          transceiver.setCodecPreferences(codecs);
        }
        transceivers[source] = transceiver;
        this._senders[source] = transceiver.sender;
      }
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      const answerWait = this._waitFor("answer");
      const publishedWait = this._waitFor("published");
      this.send({
        type: "offer",
        sdp: pc.localDescription.sdp,
        tracks: Object.entries(transceivers).map(([source, t]) => ({ source, mid: t.mid })),
      });
      const answer = await answerWait;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      const published = await publishedWait;
      for (const info of published.tracks) this.published[info.source] = info;
      return published.tracks;
    });
  }

  async unpublish(source) {
    const sender = this._senders[source];
    if (sender) await sender.replaceTrack(null);
    delete this.localTracks[source];
    this.send({ type: "unpublish", source });
  }

  setMuted(source, muted) {
    const track = this.localTracks[source];
    if (track) track.enabled = !muted;
    this.send({ type: "mute", source, muted });
  }

  // quality: "auto" | "low" | "medium" | "high" | "off"; or {maxWidth, maxHeight}; optional trackId
  /**
   * @param {"auto" | "low" | "medium" | "high" | "off"} quality
   * @param {{trackId?: string, maxWidth?: number, maxHeight?: number}} [options]
   */
  setQuality(quality, { trackId, maxWidth, maxHeight } = {}) {
    const message = { type: "set_quality", quality };
    if (trackId) message.trackId = trackId;
    if (maxWidth) message.maxWidth = maxWidth;
    if (maxHeight) message.maxHeight = maxHeight;
    this.send(message);
  }

  // ---- classroom interaction -----------------------------------------------------------------------------
  raiseHand() { this.send({ type: "raise_hand" }); }
  lowerHand(uid) { this.send(uid ? { type: "lower_hand", uid } : { type: "lower_hand" }); }
  createPoll(question, options) { return this._request({ type: "poll_create", question, options }, "poll_created"); }
  answerPoll(pollId, option) { return this._request({ type: "poll_answer", pollId, option }, "poll_answered"); }
  closePoll(pollId) { return this._request({ type: "poll_close", pollId }, "poll_closed"); }
  chat(text) { this.send({ type: "chat", text }); }
  kick(uid, reason) { this.send({ type: "kick", uid, reason }); }
  muteParticipant(uid, muted = true) { this.send({ type: muted ? "mute_participant" : "unmute_participant", uid }); }
  endClass() { this.send({ type: "end_class" }); }
}

export { STATES };

/**
 * @typedef {object} RoomOptions
 * @property {string} [baseUrl] The classcast server, e.g. "https://classroom.example.org" (default: this page's).
 * @property {boolean} [reconnect] Reconnect after a network loss (default true).
 * @property {number} [maxBackoffMs] The longest wait between reconnection attempts (default 5000).
 */

/**
 * @typedef {object} TrackInfo
 * @property {string} trackId
 * @property {string} uid
 * @property {"camera" | "microphone" | "screen"} source
 * @property {"audio" | "video"} kind
 * @property {boolean} [muted]
 */

/**
 * @typedef {object} ParticipantInfo
 * @property {string} uid
 * @property {string} name
 * @property {"TEACHER" | "STUDENT" | "MODERATOR" | "ADMIN"} role
 * @property {string[]} [permissions]
 */

/**
 * The server's `joined` message (docs/signaling.md).
 * @typedef {object} Joined
 * @property {"joined"} type
 * @property {{roomId: string, title: string, description: string | null, status: string, topic: string | null}} room
 * @property {ParticipantInfo & {permissions: string[], customization: Record<string, boolean | string>}} participant
 * @property {ParticipantInfo[]} roster
 * @property {TrackInfo[]} tracks
 * @property {{active: boolean}} recording
 * @property {RTCIceServer[]} iceServers
 */
