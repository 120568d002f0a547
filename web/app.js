// switchboard web client: plain JavaScript, no build step. It speaks the
// JSON subprotocol of PROTOCOL.md over ws(s)://<this host>/ws/<room>?uid=<uid>,
// or ?token=<JWT> when the user gives a token (token mode: the uid is the
// token's sub, learnt from the welcome). With "listen only" ticked it
// listens over Server-Sent Events instead (/sse/<room>, an EventSource),
// the same events, without sending.
"use strict";

(function () {
  const SUBPROTOCOL = "switchboard.v1.json";
  const POLICY_VIOLATION = 1008; // invalid uid/room/token, token expired, rate limit, slow consumer: do not retry
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const MAX_LOG_ENTRIES = 2000;
  const JOIN_HISTORY = 50; // messages of the room shown on joining it

  const $ = (id) => document.getElementById(id);
  const el = {
    login: $("login"), uid: $("uid"), room: $("room"), token: $("token"), sse: $("sse"),
    connect: $("connect"), disconnect: $("disconnect"), state: $("state"), expires: $("expires"),
    log: $("log"), composer: $("composer"), input: $("input"), send: $("send"),
    online: $("online"), onlineCount: $("online-count"),
  };

  let ws = null;            // the current socket (or EventSource), or null
  let listenOnly = false;   // the current connection is an SSE stream
  let me = "";              // uid of the current connection
  let room = "";            // room of the current connection
  let token = "";           // token of the current connection, "" without one
  let wantConnected = false; // false once the user pressed disconnect
  let attempt = 0;          // reconnect attempts since the last welcome
  let retryTimer = null;
  const online = new Set();

  // History and recovery (PROTOCOL.md, History). lastSeq is the last seq
  // shown of the room; an automatic reconnect asks for what came after it
  // with ?since=. It belongs to one room and identity (seqOwner) and is kept
  // across automatic reconnects.
  let lastSeq = 0;          // 0: nothing of the room shown yet
  let seqOwner = "";
  let connJoin = false;     // the current socket is a user-initiated connect
  let connSince = 0;        // the ?since= the current socket gave, 0 for none
  // gaps are the stretches of the room's events the page waits to fill from
  // a history answer: the events whose seq is above floor and below ceil
  // (ceil null: not bounded yet; the first live event bounds it), shown
  // before anchor (before) or after it, in order.
  let gaps = [];

  // ---- remembered fields -------------------------------------------------

  function stored(key) {
    try { return localStorage.getItem("switchboard." + key) || ""; } catch (e) { return ""; }
  }
  function store(key, value) {
    try { localStorage.setItem("switchboard." + key, value); } catch (e) { /* private mode */ }
  }
  // The token is a credential: it lives only as long as the tab, in
  // sessionStorage, and never in the page's URL.
  function storedToken() {
    try { return sessionStorage.getItem("switchboard.token") || ""; } catch (e) { return ""; }
  }
  function storeToken(value) {
    try {
      if (value) sessionStorage.setItem("switchboard.token", value);
      else sessionStorage.removeItem("switchboard.token");
    } catch (e) { /* storage disabled */ }
  }
  const params = new URLSearchParams(location.search);
  el.uid.value = params.get("uid") || stored("uid");
  el.room.value = params.get("room") || stored("room") || "lobby";
  el.token.value = storedToken();

  // With a token the uid comes from the token, so the uid field may stay empty.
  function tokenChanged() {
    el.uid.required = el.token.value.trim() === "";
  }
  el.token.addEventListener("input", tokenChanged);
  tokenChanged();

  // ---- connection state ----------------------------------------------------

  function setState(state, text, close) {
    el.state.dataset.state = state;
    el.state.textContent = text || state;
    if (close) {
      el.state.dataset.closeCode = String(close.code);
      el.state.dataset.closeReason = close.reason;
    } else if (state === "connecting" || state === "connected") {
      delete el.state.dataset.closeCode;
      delete el.state.dataset.closeReason;
    }
    const live = state === "connected";
    const busy = live || state === "connecting";
    el.connect.disabled = busy;
    el.uid.disabled = busy;
    el.room.disabled = busy;
    el.token.disabled = busy;
    el.sse.disabled = busy;
    el.disconnect.disabled = !(busy || state === "reconnecting");
    el.input.disabled = !live || listenOnly;
    el.send.disabled = !live || listenOnly;
  }

  function wsURL(uid, roomName, tok, since) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.host + "/ws/" + encodeURIComponent(roomName) +
      (tok ? "?token=" + encodeURIComponent(tok) : "?uid=" + encodeURIComponent(uid)) +
      (since ? "&since=" + since : "");
  }

  function sseURL(uid, roomName, tok, since) {
    return "/sse/" + encodeURIComponent(roomName) +
      (tok ? "?token=" + encodeURIComponent(tok) : "?uid=" + encodeURIComponent(uid)) +
      (since ? "&since=" + since : "");
  }

  // connectedText is the state line of a live connection. In token mode the
  // uid is known only once the welcome has come.
  function connectedText() {
    return "connected to " + room + (me ? " as " + me : "") + (token && !me ? " with a token" : "") +
      (listenOnly ? ", listening over SSE" : "");
  }

  // setExpires shows when the connection's token expires (an RFC 3339 time
  // from the server), or hides the line when value is empty.
  function setExpires(value) {
    if (!value) {
      delete el.expires.dataset.expires;
      el.expires.textContent = "";
      el.expires.hidden = true;
      return "";
    }
    const d = new Date(value);
    const local = isNaN(d) ? value : d.toLocaleString([], { hour12: false });
    el.expires.dataset.expires = value;
    el.expires.textContent = "token expires at " + local;
    el.expires.title = value;
    el.expires.hidden = false;
    return local;
  }

  // open connects with the fields' uid, room and token: a user-initiated
  // connect (join), or with reconnect true the backoff's automatic one,
  // which asks to recover what it missed.
  function open(reconnect) {
    clearTimeout(retryTimer);
    retryTimer = null;
    token = el.token.value.trim();
    el.token.value = token;
    storeToken(token);
    room = el.room.value.trim() || "lobby";
    el.room.value = room;
    store("room", room);
    if (token) {
      me = ""; // the welcome says who the token is for
    } else {
      me = el.uid.value.trim();
      el.uid.value = me;
      store("uid", me);
    }
    setOnline([]);
    setExpires("");
    setState("connecting", "connecting to " + room + (token ? " with a token" : " as " + me) + "…");

    const owner = JSON.stringify([room, token ? "" : me, token]);
    if (owner !== seqOwner) { // another room or identity: its seqs mean nothing here
      seqOwner = owner;
      lastSeq = 0;
      gaps = [];
    }
    connJoin = !reconnect;
    connSince = reconnect ? lastSeq : 0;

    listenOnly = el.sse.checked;
    if (listenOnly) {
      openStream();
      return;
    }
    let sock;
    try {
      sock = new WebSocket(wsURL(me, room, token, connSince), SUBPROTOCOL);
    } catch (err) {
      wantConnected = false;
      addEntry("error", { text: "cannot connect: " + err.message });
      setState("closed", "cannot connect");
      return;
    }
    sock.binaryType = "arraybuffer";
    ws = sock;
    // Events of a socket that has been replaced are ignored.
    sock.onopen = () => {
      if (sock !== ws) return;
      if (sock.protocol !== SUBPROTOCOL) {
        addEntry("error", { text: "server did not accept " + SUBPROTOCOL });
      }
      setState("connected", connectedText());
      send({ type: "who" });
    };
    sock.onmessage = (ev) => {
      if (sock !== ws) return;
      if (typeof ev.data !== "string") {
        addEntry("binary", { text: "binary message (" + ev.data.byteLength + " bytes)" });
        return;
      }
      // The server may batch several events into one message, one per line.
      for (const line of ev.data.split("\n")) {
        if (line === "") continue;
        let event;
        try {
          event = JSON.parse(line);
        } catch (err) {
          addEntry("error", { text: "unreadable event: " + line });
          continue;
        }
        handle(event);
      }
    };
    sock.onclose = (ev) => {
      if (sock !== ws) return;
      ws = null;
      closed(ev.code, ev.reason);
    };
  }

  // The events a stream carries, each named by its type (PROTOCOL.md's
  // JSON events; "close" ends the stream).
  // ("error" is not among them: a stream cannot make a request that
  // fails, and the name is EventSource's own for a lost connection.)
  const STREAM_EVENTS = ["welcome", "joined", "left", "message", "publish", "direct", "presence", "refreshed"];

  // openStream listens to the room over SSE. A stream the server ended
  // ("event: close") is reconnected by the page's own backoff, like a
  // socket; a lost connection is reconnected by the browser itself, which
  // sends Last-Event-ID so the server replays what was missed.
  function openStream() {
    const source = new EventSource(sseURL(me, room, token, connSince));
    ws = source;
    source.onopen = () => {
      if (source !== ws) return;
      setState("connected", connectedText());
    };
    for (const name of STREAM_EVENTS) {
      source.addEventListener(name, (e) => {
        if (source !== ws || !(e instanceof MessageEvent)) return;
        try {
          handle(JSON.parse(e.data));
        } catch (err) {
          addEntry("error", { text: "unreadable event: " + e.data });
        }
      });
    }
    source.addEventListener("close", (e) => {
      if (source !== ws) return;
      source.close();
      ws = null;
      let c = { code: 1006, reason: "" };
      try { c = JSON.parse(e.data); } catch (err) { /* keep 1006 */ }
      closed(c.code, c.reason);
    });
    source.onerror = () => {
      if (source !== ws) return;
      if (source.readyState === EventSource.CLOSED) {
        // Refused before the stream started (an HTTP error): the
        // browser gives up, and so does the page.
        ws = null;
        wantConnected = false;
        addEntry("error", { text: "the stream was refused (check the uid, room or token)" });
        setState("closed", "stream refused", { code: 0, reason: "refused" });
        return;
      }
      setState("reconnecting", "connection lost — the browser reconnects by itself");
    };
  }

  function closed(code, reason) {
    setOnline([]);
    const what = "closed " + code + (reason ? ": " + reason : code === 1006 ? ": connection lost" : "");
    const close = { code: code, reason: reason || "" };
    if (!wantConnected) {
      addEntry("system", { text: "disconnected" });
      setState("disconnected", "disconnected", close);
      return;
    }
    addEntry(code === 1000 || code === 1001 ? "system" : "error", { text: what });
    if (code === POLICY_VIOLATION) {
      wantConnected = false;
      setState("closed", what, close);
      return;
    }
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt) * (0.8 + 0.4 * Math.random());
    attempt++;
    setState("reconnecting", what + " — reconnecting in " + (delay / 1000).toFixed(1) + " s", close);
    retryTimer = setTimeout(() => open(true), delay);
  }

  function disconnect() {
    wantConnected = false;
    clearTimeout(retryTimer);
    retryTimer = null;
    if (ws && listenOnly) {
      ws.close(); // an EventSource says nothing when closed by the page
      ws = null;
      addEntry("system", { text: "disconnected" });
      setState("disconnected", "disconnected");
    } else if (ws) {
      ws.close(1000, "bye"); // onclose reports "disconnected"
    } else {
      setState("disconnected");
    }
  }

  function send(obj) {
    if (listenOnly) {
      return false; // a stream cannot send; the composer is disabled
    }
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      addEntry("error", { text: "not connected" });
      return false;
    }
    ws.send(JSON.stringify(obj));
    return true;
  }

  // ---- server events -------------------------------------------------------

  function handle(ev) {
    switch (ev.type) {
      case "welcome": {
        attempt = 0;
        if (token) {
          me = ev.uid;
          if (el.state.dataset.state === "connected") setState("connected", connectedText());
        }
        setOnline((ev.online || []).concat([ev.uid]));
        const welcomeLine = addEntry("system", { text: "welcome " + ev.uid + ", room " + ev.room });
        if (ev.expires) addEntry("system", { text: "token expires at " + setExpires(ev.expires) });
        else setExpires("");
        welcomed(ev, welcomeLine);
        break;
      }
      case "refreshed": {
        const local = setExpires(ev.expires || "");
        addEntry("system", { text: local ? "token refreshed, expires at " + local : "token refreshed, no expiry" });
        break;
      }
      case "joined":
        online.add(ev.uid);
        renderOnline();
        addEntry("joined", { from: ev.uid, text: ev.uid + " joined " + ev.room });
        break;
      case "left":
        online.delete(ev.uid);
        renderOnline();
        addEntry("left", { from: ev.uid, text: ev.uid + " left " + ev.room });
        break;
      case "presence":
        if (!ev.room || ev.room === room) setOnline(ev.online || []);
        break;
      case "message":
      case "publish":
        live(ev);
        break;
      case "history":
        if (!ev.room || ev.room === room) fillGaps(ev.messages || []);
        break;
      case "direct": {
        const outgoing = ev.from === me;
        addEntry(outgoing ? "direct own" : "direct", {
          from: ev.from, to: ev.to, ts: ev.ts, text: ev.text,
          who: outgoing ? "DM to " + ev.to : "DM from " + ev.from,
        });
        break;
      }
      case "error":
        addEntry("error", { text: "error: " + ev.message, code: ev.code });
        break;
      default:
        addEntry("system", { text: "unknown event " + JSON.stringify(ev) });
    }
  }

  // ---- history and recovery ------------------------------------------------

  // welcomed decides, once the welcome has come, what the page must reload
  // from the room's history:
  //  - on joining (a user-initiated connect), the room's last messages,
  //    shown above a divider, the live ones below it;
  //  - after a reconnect with ?since= that the server could not recover
  //    (recovered:false), what it still keeps, after a "missed" line;
  //  - after a reconnect without since (nothing of the room seen yet), what
  //    it keeps, quietly after the welcome.
  // With recovered:true the missed events simply follow as live ones.
  function welcomed(ev, welcomeLine) {
    if (listenOnly) {
      // A stream cannot ask for history; it recovers with since and
      // Last-Event-ID, and what it cannot recover it says.
      gaps = [];
      // recovered is there whenever recovery was asked for: by the page's
      // since, or by the browser's own Last-Event-ID.
      if (ev.recovered === false) addEntry("missed", { text: "some messages were missed" });
      return;
    }
    let limit = JOIN_HISTORY;
    if (connJoin) {
      openGap(addEntry("divider", { text: "new messages" }), true);
    } else if (connSince && ev.recovered === true) {
      // The server replays what was missed: nothing to reload.
    } else if (connSince && ev.recovered === false) {
      openGap(addEntry("missed", { text: "some messages were missed" }), false);
      limit = 0;
    } else {
      openGap(welcomeLine, false);
      limit = 0;
    }
    // Gaps an earlier socket asked about but never had answered are asked
    // again, in full unless all are of joining.
    if (gaps.some((g) => !g.join)) limit = 0;
    if (gaps.length) send(limit ? { type: "history", limit: limit } : { type: "history" });
  }

  // openGap starts waiting for the room's events after lastSeq, to be shown
  // at anchor. Gaps still waiting that are not bounded yet end at lastSeq,
  // so no event belongs to two gaps.
  function openGap(anchor, before) {
    for (const g of gaps) if (g.ceil === null) g.ceil = lastSeq + 1;
    gaps.push({ anchor: anchor, before: before, cursor: anchor, floor: lastSeq, ceil: null, join: before, shown: 0 });
  }

  // live shows a message or publish as it comes, once: one whose seq is not
  // above lastSeq has been shown already (a recovery overlapping what the
  // page saw). The first one bounds the gaps that wait for history.
  function live(ev) {
    if (typeof ev.seq === "number") {
      if (ev.seq <= lastSeq) return;
      lastSeq = ev.seq;
      for (const g of gaps) if (g.ceil === null) g.ceil = ev.seq;
    }
    const r = roomEntry(ev);
    if (r) addEntry(r.kind, r.e);
  }

  // fillGaps shows the events of a history answer that fall in a gap, each
  // at its gap's place, and skips the rest (shown already, or older than the
  // page needs). A history nobody asked for fills in after the log's end.
  function fillGaps(messages) {
    const pending = gaps.length ? gaps : [{ anchor: el.log.lastElementChild, before: false, cursor: el.log.lastElementChild, floor: lastSeq, ceil: null, shown: 0 }];
    gaps = [];
    const stick = atBottom();
    for (const m of messages) {
      if (typeof m.seq !== "number") continue;
      const g = pending.find((g) => m.seq > g.floor && (g.ceil === null || m.seq < g.ceil));
      if (!g) continue;
      const r = roomEntry(m);
      if (!r) continue;
      const div = makeEntry(r.kind + " history", r.e);
      if (g.before && g.anchor && g.anchor.isConnected) {
        g.anchor.before(div);
      } else if (g.cursor && g.cursor.isConnected) {
        g.cursor.after(div);
        g.cursor = div;
      } else {
        el.log.appendChild(div);
      }
      g.shown++;
      lastSeq = Math.max(lastSeq, m.seq);
    }
    // A divider with nothing above it divides nothing.
    for (const g of pending) if (g.join && g.shown === 0 && g.anchor) g.anchor.remove();
    trimLog(stick);
  }

  // roomEntry is the log entry of a room message or publish.
  function roomEntry(ev) {
    if (ev.type === "message") {
      return {
        kind: ev.from === me ? "msg own" : "msg",
        e: { from: ev.from, who: ev.from, text: ev.text, seq: ev.seq, ts: ev.ts },
      };
    }
    if (ev.type === "publish") {
      return {
        kind: "publish",
        e: { who: "server", seq: ev.seq, ts: ev.ts, text: ev.text !== undefined ? ev.text : JSON.stringify(ev.data) },
      };
    }
    return null;
  }

  // ---- rendering -----------------------------------------------------------

  function clock(ts) {
    const d = ts ? new Date(ts) : new Date();
    return isNaN(d) ? "" : d.toLocaleTimeString([], { hour12: false });
  }

  // addEntry appends one log line and returns it. kind is one or more
  // classes: msg, own, joined, left, direct, publish, error, system, binary,
  // divider (history above, live below), missed (recovery failed), history
  // (a message reloaded from the room's history).
  function addEntry(kind, e) {
    const stick = atBottom();
    const div = makeEntry(kind, e);
    el.log.appendChild(div);
    trimLog(stick);
    return div;
  }

  function atBottom() {
    return el.log.scrollTop + el.log.clientHeight >= el.log.scrollHeight - 30;
  }

  // trimLog keeps the log to MAX_LOG_ENTRIES and, when it was scrolled to
  // the bottom (stick), keeps it there.
  function trimLog(stick) {
    while (el.log.childElementCount > MAX_LOG_ENTRIES) el.log.firstElementChild.remove();
    if (stick) el.log.scrollTop = el.log.scrollHeight;
  }

  function makeEntry(kind, e) {
    const div = document.createElement("div");
    div.className = "entry " + kind;
    div.dataset.kind = kind.split(" ")[0];
    for (const key of ["from", "to", "seq", "code"]) {
      if (e[key] !== undefined && e[key] !== null) div.dataset[key] = String(e[key]);
    }
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = clock(e.ts);
    div.appendChild(time);
    if (e.who) {
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = e.who + ":";
      div.appendChild(who);
    }
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = e.text;
    div.appendChild(text);
    return div;
  }

  function setOnline(uids) {
    online.clear();
    for (const u of uids) online.add(u);
    renderOnline();
  }

  function renderOnline() {
    el.online.replaceChildren();
    // Sorted as strings, like the server's lists.
    for (const u of Array.from(online).sort()) {
      const li = document.createElement("li");
      li.dataset.uid = u;
      if (u === me) li.className = "me";
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = u;
      b.title = "direct message " + u;
      b.addEventListener("click", () => {
        el.input.value = "/dm " + u + " ";
        el.input.focus();
      });
      li.appendChild(b);
      el.online.appendChild(li);
    }
    el.onlineCount.textContent = String(online.size);
  }

  // ---- user input ----------------------------------------------------------

  function submit(line) {
    if (line.trim() === "") return true;
    if (/^\/dm(\s|$)/.test(line)) {
      const m = /^\/dm\s+(\S+)\s+(\S[\s\S]*)$/.exec(line);
      if (!m) {
        addEntry("error", { text: "usage: /dm <uid> <text>" });
        return false;
      }
      return send({ type: "direct", to: m[1], text: m[2] });
    }
    if (/^\/who(\s|$)/.test(line)) return send({ type: "who" });
    return send({ type: "message", text: line });
  }

  el.login.addEventListener("submit", (ev) => {
    ev.preventDefault();
    wantConnected = true;
    attempt = 0;
    if (ws) {
      const old = ws;
      ws = null;
      old.close(1000, "reconnecting");
    }
    open(false);
  });
  el.disconnect.addEventListener("click", disconnect);
  el.composer.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (submit(el.input.value)) el.input.value = "";
    el.input.focus();
  });

  setState("disconnected");
})();
