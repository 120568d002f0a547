// switchboard web client: plain JavaScript, no build step. It speaks the
// JSON subprotocol of PROTOCOL.md over ws(s)://<this host>/ws/<room>?uid=<uid>,
// or ?token=<JWT> when the user gives a token (token mode: the uid is the
// token's sub, learnt from the welcome).
"use strict";

(function () {
  const SUBPROTOCOL = "switchboard.v1.json";
  const POLICY_VIOLATION = 1008; // invalid uid/room/token, token expired, rate limit, slow consumer: do not retry
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const MAX_LOG_ENTRIES = 2000;

  const $ = (id) => document.getElementById(id);
  const el = {
    login: $("login"), uid: $("uid"), room: $("room"), token: $("token"),
    connect: $("connect"), disconnect: $("disconnect"), state: $("state"), expires: $("expires"),
    log: $("log"), composer: $("composer"), input: $("input"), send: $("send"),
    online: $("online"), onlineCount: $("online-count"),
  };

  let ws = null;            // the current socket, or null
  let me = "";              // uid of the current connection
  let room = "";            // room of the current connection
  let token = "";           // token of the current connection, "" without one
  let wantConnected = false; // false once the user pressed disconnect
  let attempt = 0;          // reconnect attempts since the last welcome
  let retryTimer = null;
  const online = new Set();

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
    el.disconnect.disabled = !(busy || state === "reconnecting");
    el.input.disabled = !live;
    el.send.disabled = !live;
  }

  function wsURL(uid, roomName, tok) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.host + "/ws/" + encodeURIComponent(roomName) +
      (tok ? "?token=" + encodeURIComponent(tok) : "?uid=" + encodeURIComponent(uid));
  }

  // connectedText is the state line of a live connection. In token mode the
  // uid is known only once the welcome has come.
  function connectedText() {
    return "connected to " + room + (me ? " as " + me : "") + (token && !me ? " with a token" : "");
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

  function open() {
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

    let sock;
    try {
      sock = new WebSocket(wsURL(me, room, token), SUBPROTOCOL);
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
    retryTimer = setTimeout(open, delay);
  }

  function disconnect() {
    wantConnected = false;
    clearTimeout(retryTimer);
    retryTimer = null;
    if (ws) {
      ws.close(1000, "bye"); // onclose reports "disconnected"
    } else {
      setState("disconnected");
    }
  }

  function send(obj) {
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
      case "welcome":
        attempt = 0;
        if (token) {
          me = ev.uid;
          if (el.state.dataset.state === "connected") setState("connected", connectedText());
        }
        setOnline((ev.online || []).concat([ev.uid]));
        addEntry("system", { text: "welcome " + ev.uid + ", room " + ev.room });
        if (ev.expires) addEntry("system", { text: "token expires at " + setExpires(ev.expires) });
        else setExpires("");
        break;
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
        addEntry(ev.from === me ? "msg own" : "msg", {
          from: ev.from, who: ev.from, text: ev.text, seq: ev.seq, ts: ev.ts,
        });
        break;
      case "direct": {
        const outgoing = ev.from === me;
        addEntry(outgoing ? "direct own" : "direct", {
          from: ev.from, to: ev.to, ts: ev.ts, text: ev.text,
          who: outgoing ? "DM to " + ev.to : "DM from " + ev.from,
        });
        break;
      }
      case "publish":
        addEntry("publish", {
          who: "server", seq: ev.seq, ts: ev.ts,
          text: ev.text !== undefined ? ev.text : JSON.stringify(ev.data),
        });
        break;
      case "error":
        addEntry("error", { text: "error: " + ev.message, code: ev.code });
        break;
      default:
        addEntry("system", { text: "unknown event " + JSON.stringify(ev) });
    }
  }

  // ---- rendering -----------------------------------------------------------

  function clock(ts) {
    const d = ts ? new Date(ts) : new Date();
    return isNaN(d) ? "" : d.toLocaleTimeString([], { hour12: false });
  }

  // addEntry appends one log line. kind is one or more classes: msg, own,
  // joined, left, direct, publish, error, system, binary.
  function addEntry(kind, e) {
    const stick = el.log.scrollTop + el.log.clientHeight >= el.log.scrollHeight - 30;
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
    el.log.appendChild(div);
    while (el.log.childElementCount > MAX_LOG_ENTRIES) el.log.firstElementChild.remove();
    if (stick) el.log.scrollTop = el.log.scrollHeight;
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
    open();
  });
  el.disconnect.addEventListener("click", disconnect);
  el.composer.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (submit(el.input.value)) el.input.value = "";
    el.input.focus();
  });

  setState("disconnected");
})();
