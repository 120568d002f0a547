package main

// Browser tests: the web client in web/ driven in headless Chromium with
// chromedp, against a real server. They need /usr/bin/chromium (Debian
// package "chromium"); without it they skip, except under CI=true, where a
// missing browser fails the run.

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/switchboard/switchboard/internal/mint"
)

var writeScreenshot = flag.Bool("screenshot", false, "write docs/screenshot.png (a chat in progress) from TestBrowserChat")

const chromiumPath = "/usr/bin/chromium"

// newBrowser starts one headless Chromium for the test and stops it, with
// every tab, when the test ends.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("browser tests need %s (apt-get install chromium): %v", chromiumPath, err)
		}
		t.Skipf("no %s (apt-get install chromium); skipping browser test", chromiumPath)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-dev-shm-usage", true),
		// No internet here: without these Chromium keeps dialling out.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.WindowSize(1000, 640),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	// Cleanups run last-in first-out: tabs, then the browser, then the
	// allocator, which waits for the process to exit.
	t.Cleanup(cancelAlloc)
	t.Cleanup(cancelBrowser)
	// The first Run starts the browser and ties its life to browserCtx, so
	// it must not carry a timeout.
	if err := chromedp.Do(browserCtx); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	return browserCtx
}

// tab is one browser tab showing the chat page.
type tab struct {
	t    *testing.T
	name string
	ctx  context.Context
}

func newTab(t *testing.T, browser context.Context, name string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // opens the tab
		t.Fatalf("open tab %s: %v", name, err)
	}
	return &tab{t: t, name: name, ctx: ctx}
}

// do runs actions in the tab within waitTimeout, failing the test with the
// page's log on error.
func (p *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("tab %s: %v\n%s", p.name, err, p.describe())
	}
}

func evalIn[T any](p *tab, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("tab %s: evaluate %s: %v\n%s", p.name, expr, err, p.describe())
	}
	return v
}

// waitJS waits until the JavaScript expression is truthy in the page.
func (p *tab) waitJS(what, expr string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitTimeout)
	defer cancel()
	// Interval polling: a background tab may not run animation frames.
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr,
		chromedp.WithPollingInterval(20*time.Millisecond),
		chromedp.WithPollingTimeout(waitTimeout)))
	if err != nil {
		p.t.Fatalf("tab %s: waiting for %s: %v\n%s", p.name, what, err, p.describe())
	}
}

// describe is the page's state and log, for failure messages.
func (p *tab) describe() string {
	ctx, cancel := context.WithTimeout(p.ctx, 2*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`"state: " + document.querySelector("#state").textContent + "\nonline: " +
		 Array.from(document.querySelectorAll("#online li")).map(li => li.dataset.uid).join(", ") + "\nlog:\n" +
		 Array.from(document.querySelectorAll("#log .entry")).map(e => "  [" + e.className + "] " + e.textContent).join("\n")`))
	if err != nil {
		return "(page state unavailable: " + err.Error() + ")"
	}
	return s
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// join loads the page, fills in uid and room, connects, and waits until the
// page is connected (or, with wantConnected false, only clicks connect).
func (p *tab) join(ts *testServer, uid, room string, wantConnected bool) {
	p.t.Helper()
	p.joinAt(ts.http.URL, uid, room, wantConnected)
}

// joinAt is join with the page loaded from base (the server, or a proxy in
// front of it).
func (p *tab) joinAt(base, uid, room string, wantConnected bool) {
	p.t.Helper()
	p.do(
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#connect")),
		chromedp.SetValue(chromedp.CSS("#uid"), uid),
		chromedp.SetValue(chromedp.CSS("#room"), room),
		chromedp.Click(chromedp.CSS("#connect")),
	)
	if wantConnected {
		p.waitJS("connected", `document.querySelector("#state").dataset.state === "connected"`)
		p.waitOnline(uid)
	}
}

// say types a line into the message box and presses Enter.
func (p *tab) say(line string) {
	p.t.Helper()
	p.do(
		chromedp.WaitEnabled(chromedp.CSS("#input")),
		chromedp.SendKeys(chromedp.CSS("#input"), line+"\n"),
	)
}

// waitEntry waits for a log entry matching the CSS selector whose text part
// is text.
func (p *tab) waitEntry(selector, text string) {
	p.t.Helper()
	p.waitJS(fmt.Sprintf("%s %q", selector, text), fmt.Sprintf(
		`Array.from(document.querySelectorAll("#log " + %s)).some(e => e.querySelector(".text").textContent === %s)`,
		jsString(selector), jsString(text)))
}

// waitOnline waits until the online list contains uids (and maybe others).
func (p *tab) waitOnline(uids ...string) {
	p.t.Helper()
	want, _ := json.Marshal(uids)
	p.waitJS("online includes "+string(want), fmt.Sprintf(
		`(w => w.every(u => document.querySelector('#online li[data-uid="' + u + '"]')))(%s)`, want))
}

// waitOnlineExactly waits until the online list is exactly uids, in order.
func (p *tab) waitOnlineExactly(uids ...string) {
	p.t.Helper()
	want, _ := json.Marshal(uids)
	p.waitJS("online list "+string(want), fmt.Sprintf(
		`JSON.stringify(Array.from(document.querySelectorAll("#online li")).map(li => li.dataset.uid)) === %s`,
		jsString(string(want))))
}

// roomMessages is the room messages in the log as "from: text", in order.
func (p *tab) roomMessages() []string {
	p.t.Helper()
	return evalIn[[]string](p, `Array.from(document.querySelectorAll("#log .entry.msg")).map(e => e.dataset.from + ": " + e.querySelector(".text").textContent)`)
}

func TestBrowserChat(t *testing.T) {
	ts := startServer(t, nil)
	browser := newBrowser(t)
	alice := newTab(t, browser, "alice")
	bob := newTab(t, browser, "bob")

	alice.join(ts, "alice", "general", true)
	bob.join(ts, "bob", "general", true)
	bob.waitOnlineExactly("alice", "bob") // from welcome.online
	alice.waitEntry(`.entry.joined[data-from="bob"]`, "bob joined general")
	alice.waitOnlineExactly("alice", "bob") // from joined

	// Room messages, alternating senders: both see all three in one order.
	alice.say("hello bob")
	bob.waitEntry(".entry.msg", "hello bob")
	bob.say("hi alice")
	alice.waitEntry(".entry.msg", "hi alice")
	alice.say("how are you?")
	want := []string{"alice: hello bob", "bob: hi alice", "alice: how are you?"}
	wantJSON, _ := json.Marshal(want)
	for _, p := range []*tab{alice, bob} {
		p.waitJS("three messages", `document.querySelectorAll("#log .entry.msg").length === 3`)
		if got := p.roomMessages(); !slices.Equal(got, want) {
			t.Fatalf("%s sees messages %q, want %s", p.name, got, wantJSON)
		}
		own := evalIn[[]string](p, `Array.from(document.querySelectorAll("#log .entry.msg.own")).map(e => e.dataset.from)`)
		for _, from := range own {
			if from != p.name {
				t.Errorf("%s marks a message from %s as its own", p.name, from)
			}
		}
		if len(own) == 0 {
			t.Errorf("%s has no message marked own", p.name)
		}
		seqs := evalIn[[]string](p, `Array.from(document.querySelectorAll("#log .entry.msg")).map(e => e.dataset.seq)`)
		if len(seqs) != 3 || !consecutive(seqs) {
			t.Errorf("%s: seq of the messages = %q, want three consecutive numbers", p.name, seqs)
		}
	}

	// A click on a name in the online list prefills a DM.
	alice.do(chromedp.Click(chromedp.CSS(`#online li[data-uid="bob"] button`)))
	if got := evalIn[string](alice, `document.querySelector("#input").value`); got != "/dm bob " {
		t.Fatalf("after clicking bob the input is %q, want %q", got, "/dm bob ")
	}
	alice.do(chromedp.SendKeys(chromedp.CSS("#input"), "psst\n"))
	bob.waitEntry(`.entry.direct[data-from="alice"]:not(.own)`, "psst")
	alice.waitEntry(`.entry.direct.own[data-to="bob"]`, "psst")
	bob.say("/dm alice psst yourself")
	alice.waitEntry(`.entry.direct[data-from="bob"]:not(.own)`, "psst yourself")

	// A DM to somebody absent is an error on the page, and nothing closes.
	bob.say("/dm carol anyone?")
	bob.waitEntry(".entry.error", "error: UID carol is not online")

	// A publish from the HTTP API reaches both, styled as a publish.
	if status, body := ts.request("POST", "/api/rooms/general/messages", `{"text":"deploy finished"}`, nil); status != http.StatusOK {
		t.Fatalf("publish = %d %s", status, body)
	}
	alice.waitEntry(".entry.publish", "deploy finished")
	bob.waitEntry(".entry.publish", "deploy finished")

	if *writeScreenshot {
		alice.say("see you later")
		bob.waitEntry(".entry.msg", "see you later")
		ctx, cancel := context.WithTimeout(alice.ctx, waitTimeout)
		defer cancel()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.MkdirAll("docs", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("docs", "screenshot.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote docs/screenshot.png (%d bytes)", len(png))
	}

	// Bob disconnects: the page says so and stays disconnected, and alice
	// sees him leave.
	bob.do(chromedp.Click(chromedp.CSS("#disconnect")))
	bob.waitJS("disconnected", `document.querySelector("#state").dataset.state === "disconnected"`)
	alice.waitEntry(`.entry.left[data-from="bob"]`, "bob left general")
	alice.waitOnlineExactly("alice")
	if state := evalIn[string](bob, `document.querySelector("#state").dataset.state`); state != "disconnected" {
		t.Errorf("after disconnect bob's state is %q", state)
	}
}

func TestBrowserInvalidUIDShowsCloseReason(t *testing.T) {
	ts := startServer(t, nil)
	p := newTab(t, newBrowser(t), "bad")
	p.join(ts, "bad uid!", "lobby", false)
	p.waitJS("closed", `document.querySelector("#state").dataset.state === "closed"`)
	state := evalIn[string](p, `document.querySelector("#state").textContent`)
	if !strings.Contains(state, "closed 1008: uid is invalid") {
		t.Fatalf("state shows %q, want it to contain %q", state, "closed 1008: uid is invalid")
	}
	p.waitEntry(".entry.error", "closed 1008: uid is invalid")
	// A policy close is final: the user may fix the uid and connect again.
	enabled := evalIn[bool](p, `!document.querySelector("#connect").disabled && !document.querySelector("#uid").disabled`)
	if !enabled {
		t.Errorf("connect button or uid field disabled after a policy close\n%s", p.describe())
	}
}

func TestBrowserReconnectsAfterAbnormalClose(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxMessageBytes = 64 })
	p := newTab(t, newBrowser(t), "ray")
	p.join(ts, "ray", "lobby", true)
	// A message over -max-message-bytes: the server closes with 1009, which
	// is not a policy close, so the page reconnects by itself.
	p.say(strings.Repeat("x", 100))
	p.waitEntry(".entry.error", "closed 1009: message too big")
	p.waitJS("a second welcome", `Array.from(document.querySelectorAll("#log .entry.system")).filter(e => e.textContent.includes("welcome ray, room lobby")).length === 2`)
	p.waitJS("connected again", `document.querySelector("#state").dataset.state === "connected"`)
	p.say("back again")
	p.waitEntry(".entry.msg.own", "back again")
}

// joinWithToken loads the page, leaves the uid field empty, types token into
// the token field and connects.
func (p *tab) joinWithToken(ts *testServer, token, room string) {
	p.t.Helper()
	p.do(
		chromedp.Navigate(ts.http.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#connect")),
		chromedp.Clear(chromedp.CSS("#uid")),
		chromedp.SetValue(chromedp.CSS("#room"), room),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#connect")),
	)
}

func TestBrowserTokenMode(t *testing.T) {
	const secret = "browser-test-secret"
	ts := startServer(t, func(c *Config) { c.JWTSecret = secret })
	// exp has whole seconds; a whole-second now makes it exactly now + TTL.
	now := time.Now().Truncate(time.Second)
	token, err := mint.HS256([]byte(secret), mint.Options{Subject: "alice", TTL: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	wantExpires := now.Add(time.Hour).UTC().Format(time.RFC3339)

	p := newTab(t, newBrowser(t), "alice")
	p.joinWithToken(ts, token, "general")
	p.waitJS("connected", `document.querySelector("#state").dataset.state === "connected"`)
	// The uid comes from the token's sub, by way of the welcome.
	p.waitEntry(".entry.system", "welcome alice, room general")
	p.waitOnline("alice")
	if me := evalIn[bool](p, `document.querySelector('#online li[data-uid="alice"]').classList.contains("me")`); !me {
		t.Errorf("alice is not marked as the page's own uid in the online list\n%s", p.describe())
	}
	p.waitJS("state names alice", `document.querySelector("#state").textContent.includes("as alice")`)

	// The expiry of the welcome is shown, and kept as RFC 3339 for tools.
	p.waitJS("expires shown", `document.querySelector("#expires").dataset.expires !== undefined`)
	if got := evalIn[string](p, `document.querySelector("#expires").dataset.expires`); got != wantExpires {
		t.Errorf("#expires data-expires = %q, want %q", got, wantExpires)
	}
	if visible := evalIn[bool](p, `!document.querySelector("#expires").hidden && document.querySelector("#expires").textContent.startsWith("token expires at ")`); !visible {
		t.Errorf("the expiry is not shown\n%s", p.describe())
	}
	p.waitJS("expiry in the log", `Array.from(document.querySelectorAll("#log .entry.system")).some(e => e.textContent.includes("token expires at "))`)

	// Chat works, and the page's own messages are styled as its own.
	p.say("hello with a token")
	p.waitEntry(`.entry.msg.own[data-from="alice"]`, "hello with a token")

	// The token is kept for the tab only: sessionStorage, never localStorage.
	if got := evalIn[string](p, `sessionStorage.getItem("switchboard.token") || ""`); got != token {
		t.Errorf("sessionStorage switchboard.token = %q, want the token", got)
	}
	inLocal := evalIn[[]string](p, fmt.Sprintf(
		`Object.keys(localStorage).filter(k => k.includes("token") || (localStorage.getItem(k) || "").includes(%s))`, jsString(token)))
	if len(inLocal) != 0 {
		t.Errorf("localStorage holds the token under %q", inLocal)
	}
}

func TestBrowserTokenRefusal(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.JWTSecret = "browser-test-secret" })
	p := newTab(t, newBrowser(t), "garbage")
	p.joinWithToken(ts, "not.a.token", "lobby")
	p.waitJS("closed", `document.querySelector("#state").dataset.state === "closed"`)
	state := evalIn[string](p, `document.querySelector("#state").textContent`)
	if !strings.Contains(state, "closed 1008: token is invalid") {
		t.Fatalf("state shows %q, want it to contain %q", state, "closed 1008: token is invalid")
	}
	p.waitEntry(".entry.error", "closed 1008: token is invalid")
	// A policy close is final: no retry after the first backoff would have
	// passed, and the user may fix the token and connect again.
	time.Sleep(1500 * time.Millisecond)
	closes := evalIn[int](p, `Array.from(document.querySelectorAll("#log .entry.error")).filter(e => e.textContent.includes("closed 1008")).length`)
	if closes != 1 {
		t.Errorf("%d closes in the log, want 1 (no retry)\n%s", closes, p.describe())
	}
	if got := evalIn[string](p, `document.querySelector("#state").dataset.state`); got != "closed" {
		t.Errorf("state after waiting = %q, want closed", got)
	}
	enabled := evalIn[bool](p, `!document.querySelector("#connect").disabled && !document.querySelector("#token").disabled`)
	if !enabled {
		t.Errorf("connect button or token field disabled after a policy close\n%s", p.describe())
	}
	if got := evalIn[string](p, `document.querySelector("#expires").dataset.expires || ""`); got != "" {
		t.Errorf("#expires data-expires = %q after a refusal, want none", got)
	}
}

// TestWebRoutes needs no browser: the page is at "/", its files under /web/,
// and nothing else is invented.
func TestWebRoutes(t *testing.T) {
	ts := startServer(t, nil)
	get := func(path string, header http.Header) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest("GET", ts.http.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := ts.httpClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(body)
	}
	for _, c := range []struct{ path, contentType, contains string }{
		{"/", "text/html", `id="log"`},
		{"/web/app.js", "javascript", "switchboard.v1.json"},
		{"/web/style.css", "text/css", ".entry.direct"},
	} {
		resp, body := get(c.path, nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), c.contentType) || !strings.Contains(body, c.contains) {
			t.Errorf("GET %s = %d %q, %d bytes; want 200 %s containing %q", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body), c.contentType, c.contains)
		}
		etag := resp.Header.Get("ETag")
		if etag == "" {
			t.Errorf("GET %s has no ETag", c.path)
			continue
		}
		if again, _ := get(c.path, http.Header{"If-None-Match": {etag}}); again.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match = %d, want 304", c.path, again.StatusCode)
		}
	}
	for _, path := range []string{"/index.html", "/web/", "/web/index.html", "/web/nope.js", "/nope", "/web/app.js/x"} {
		if resp, _ := get(path, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, resp.StatusCode)
		}
	}
}

// consecutive reports whether decimal seqs count up by one.
func consecutive(seqs []string) bool {
	for i := 1; i < len(seqs); i++ {
		a, errA := strconv.ParseUint(seqs[i-1], 10, 64)
		b, errB := strconv.ParseUint(seqs[i], 10, 64)
		if errA != nil || errB != nil || b != a+1 {
			return false
		}
	}
	return true
}

// browserProxy is a TCP proxy between the browser and the test server. cut
// drops every connection through it at once, abruptly (a TCP reset, no
// WebSocket close: the page sees 1006, as when a network goes away), and
// refuses new ones until resume. It notes the request line of each
// connection's first request, to see what the page asked for.
type browserProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	refusing bool
	closed   bool
	requests []string
}

func startBrowserProxy(t *testing.T, ts *testServer) *browserProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &browserProxy{ln: ln, target: ts.http.Listener.Addr().String(), conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// url is the proxy's base URL, for the page.
func (p *browserProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *browserProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			continue
		}
		p.wg.Add(1)
		go p.forward(c)
	}
}

// track adds c to the live connections, or resets it when the proxy is
// refusing.
func (p *browserProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refusing || p.closed {
		reset(c)
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *browserProxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		delete(p.conns, c)
		reset(c)
	}
}

func (p *browserProxy) forward(client net.Conn) {
	defer p.wg.Done()
	server, err := net.DialTimeout("tcp", p.target, waitTimeout)
	if err != nil {
		p.untrack(client)
		return
	}
	if !p.track(server) {
		p.untrack(client)
		return
	}
	// Either direction ending ends both.
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(client, server)
		p.untrack(client, server)
	}()
	br := bufio.NewReader(client)
	if line, err := br.ReadString('\n'); err == nil {
		p.mu.Lock()
		p.requests = append(p.requests, strings.TrimSpace(line))
		p.mu.Unlock()
		if _, err := server.Write([]byte(line)); err == nil {
			io.Copy(server, br)
		}
	}
	p.untrack(client, server)
	<-done
}

// reset closes c at once with a TCP reset.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// cut drops every connection and refuses new ones until resume.
func (p *browserProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refusing = true
	for c := range p.conns {
		reset(c)
	}
}

func (p *browserProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refusing = false
}

// requestLines is the request line of each connection's first request.
func (p *browserProxy) requestLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.requests)
}

func (p *browserProxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		reset(c)
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// browserSay sends a room message from a JSON-mode client and waits for its
// echo, so the hub has taken it; it returns the message's seq. Other events
// on the way are skipped.
func browserSay(t *testing.T, c *testClient, text string) string {
	t.Helper()
	c.sendJSON(map[string]string{"type": "message", "text": text})
	for {
		line := c.readLine()
		dec := json.NewDecoder(strings.NewReader(line))
		dec.UseNumber()
		var ev struct {
			Type string      `json:"type"`
			Text string      `json:"text"`
			Seq  json.Number `json:"seq"`
		}
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", line, err)
		}
		if ev.Type == "message" && ev.Text == text {
			if ev.Seq == "" {
				t.Fatalf("message %q has no seq: %s", text, line)
			}
			return ev.Seq.String()
		}
	}
}

// seqLog is the page's log entries that carry a seq, and the divider and
// missed lines, in order: "from: text" for a message, "server: text" for a
// publish, "-- divider" and "-- missed".
func (p *tab) seqLog() []string {
	p.t.Helper()
	return evalIn[[]string](p, `Array.from(document.querySelectorAll("#log .entry[data-seq], #log .entry.divider, #log .entry.missed")).map(e =>
		e.classList.contains("divider") ? "-- divider" : e.classList.contains("missed") ? "-- missed" :
		(e.dataset.from || "server") + ": " + e.querySelector(".text").textContent)`)
}

// checkSeqs fails the test unless the seqs of the page's log entries
// increase strictly, in log order (each shown once).
func (p *tab) checkSeqs() {
	p.t.Helper()
	seqs := evalIn[[]string](p, `Array.from(document.querySelectorAll("#log .entry[data-seq]")).map(e => e.dataset.seq)`)
	for i := 1; i < len(seqs); i++ {
		a, errA := strconv.ParseUint(seqs[i-1], 10, 64)
		b, errB := strconv.ParseUint(seqs[i], 10, 64)
		if errA != nil || errB != nil || b <= a {
			p.t.Fatalf("%s: seqs in the log = %q, want strictly increasing numbers\n%s", p.name, seqs, p.describe())
		}
	}
}

// lastSeq is the seq of the page's last log entry that has one.
func (p *tab) lastSeq() string {
	p.t.Helper()
	return evalIn[string](p, `Array.from(document.querySelectorAll("#log .entry[data-seq]")).map(e => e.dataset.seq).pop() || ""`)
}

func (p *tab) waitState(state string) {
	p.t.Helper()
	p.waitJS("state "+state, fmt.Sprintf(`document.querySelector("#state").dataset.state === %s`, jsString(state)))
}

// welcomes waits until the page has been welcomed n times.
func (p *tab) waitWelcomes(n int) {
	p.t.Helper()
	p.waitJS(fmt.Sprintf("%d welcomes", n), fmt.Sprintf(
		`Array.from(document.querySelectorAll("#log .entry.system")).filter(e => e.textContent.includes("welcome ")).length === %d`, n))
}

func wantLog(t *testing.T, p *tab, want []string) {
	t.Helper()
	if got := p.seqLog(); !slices.Equal(got, want) {
		gotJSON, _ := json.MarshalIndent(got, "", "  ")
		wantJSON, _ := json.MarshalIndent(want, "", "  ")
		t.Fatalf("%s's log:\n%s\nwant:\n%s\n%s", p.name, gotJSON, wantJSON, p.describe())
	}
}

// TestBrowserShowsHistoryOnJoin: what was said in a room before the page
// joined is shown above a divider, the page's own earlier messages as its
// own, and what comes after below it.
func TestBrowserShowsHistoryOnJoin(t *testing.T) {
	ts := startServer(t, nil)
	dana, _ := ts.connectJSON("dana", "archive") // the page's uid, on another device
	browserSay(t, dana, "note to self")
	dana.close()
	carl, _ := ts.connectJSON("carl", "archive")
	browserSay(t, carl, "first")
	browserSay(t, carl, "second")
	if status, body := ts.request("POST", "/api/rooms/archive/messages", `{"text":"announcement"}`, nil); status != http.StatusOK {
		t.Fatalf("publish = %d %s", status, body)
	}

	p := newTab(t, newBrowser(t), "dana")
	p.join(ts, "dana", "archive", true)
	p.waitEntry(".entry.divider", "new messages")
	p.waitEntry(".entry.publish.history", "announcement")
	browserSay(t, carl, "live one")
	p.waitEntry(".entry.msg:not(.history)", "live one")
	wantLog(t, p, []string{"dana: note to self", "carl: first", "carl: second", "server: announcement", "-- divider", "carl: live one"})
	p.checkSeqs()
	own := evalIn[[]string](p, `Array.from(document.querySelectorAll("#log .entry.msg.own")).map(e => e.querySelector(".text").textContent)`)
	if !slices.Equal(own, []string{"note to self"}) {
		t.Errorf("messages styled as own: %q, want [\"note to self\"]", own)
	}

	// A room with no history shows no divider.
	q := newTab(t, newBrowser(t), "erin")
	q.join(ts, "erin", "empty", true)
	q.say("hello, anyone?")
	q.waitEntry(".entry.msg.own", "hello, anyone?")
	wantLog(t, q, []string{"erin: hello, anyone?"})
}

// TestBrowserRecoversAfterCut: the page's connection is cut (no close
// frame); it reconnects by itself with ?since= and shows what it missed,
// each message once and in order.
func TestBrowserRecoversAfterCut(t *testing.T) {
	ts := startServer(t, nil)
	proxy := startBrowserProxy(t, ts)
	p := newTab(t, newBrowser(t), "ann")
	p.joinAt(proxy.url(), "ann", "recovery", true)
	bob, _ := ts.connectJSON("bob", "recovery")
	p.waitEntry(`.entry.joined[data-from="bob"]`, "bob joined recovery")
	browserSay(t, bob, "before the cut")
	p.waitEntry(".entry.msg", "before the cut")
	p.say("me too")
	p.waitEntry(".entry.msg.own", "me too")
	seen := p.lastSeq()

	proxy.cut()
	p.waitState("reconnecting")
	p.waitEntry(".entry.error", "closed 1006: connection lost")
	browserSay(t, bob, "while cut 1")
	browserSay(t, bob, "while cut 2")
	if status, body := ts.request("POST", "/api/rooms/recovery/messages", `{"text":"published while cut"}`, nil); status != http.StatusOK {
		t.Fatalf("publish = %d %s", status, body)
	}
	browserSay(t, bob, "while cut 3")
	proxy.resume()

	p.waitWelcomes(2)
	p.waitState("connected")
	p.waitEntry(".entry.msg", "while cut 3")
	browserSay(t, bob, "after the cut")
	p.waitEntry(".entry.msg", "after the cut")
	wantLog(t, p, []string{
		"bob: before the cut", "ann: me too",
		"bob: while cut 1", "bob: while cut 2", "server: published while cut", "bob: while cut 3",
		"bob: after the cut",
	})
	p.checkSeqs()

	// It asked with since, and was recovered: no missed line.
	since := "&since=" + seen + " "
	if !slices.ContainsFunc(proxy.requestLines(), func(l string) bool {
		return strings.HasPrefix(l, "GET /ws/recovery?uid=ann") && strings.Contains(l, since)
	}) {
		t.Errorf("no upgrade with %q among the requests %q", since, proxy.requestLines())
	}
}

// TestBrowserMissedLine: when the history no longer holds everything the
// page missed while cut off, it says so and shows what the room still keeps.
func TestBrowserMissedLine(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.HistorySize = 2 })
	proxy := startBrowserProxy(t, ts)
	p := newTab(t, newBrowser(t), "eve")
	p.joinAt(proxy.url(), "eve", "small", true)
	bob, _ := ts.connectJSON("bob", "small")
	browserSay(t, bob, "seen before")
	p.waitEntry(".entry.msg", "seen before")
	seen := p.lastSeq()

	proxy.cut()
	p.waitState("reconnecting")
	for i := 1; i <= 4; i++ {
		browserSay(t, bob, fmt.Sprintf("while cut %d", i))
	}
	proxy.resume()

	p.waitEntry(".entry.missed", "some messages were missed")
	p.waitEntry(".entry.msg.history", "while cut 4")
	browserSay(t, bob, "after the cut")
	p.waitEntry(".entry.msg", "after the cut")
	// History keeps the last two: the first two are gone.
	wantLog(t, p, []string{"bob: seen before", "-- missed", "bob: while cut 3", "bob: while cut 4", "bob: after the cut"})
	p.checkSeqs()
	since := "&since=" + seen + " "
	if !slices.ContainsFunc(proxy.requestLines(), func(l string) bool { return strings.Contains(l, since) }) {
		t.Errorf("no upgrade with %q among the requests %q", since, proxy.requestLines())
	}
}

// TestBrowserLiveBeforeHistory: live messages that reach the page before
// the answer to its history request on joining (here held back in the page
// until they have come) are shown once, below the divider, and the history
// fills in above it without them.
func TestBrowserLiveBeforeHistory(t *testing.T) {
	ts := startServer(t, nil)
	sam, _ := ts.connectJSON("sam", "busy")
	for i := 1; i <= 3; i++ {
		browserSay(t, sam, fmt.Sprintf("before %d", i))
	}
	p := newTab(t, newBrowser(t), "tom")
	p.do(
		chromedp.Navigate(ts.http.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#connect")),
	)
	// The page's history requests wait until the test lets them go.
	evalIn[bool](p, `(() => {
		const send = WebSocket.prototype.send, held = [];
		WebSocket.prototype.send = function (data) {
			if (typeof data === "string" && JSON.parse(data).type === "history") held.push(() => send.call(this, data));
			else send.call(this, data);
		};
		window.heldHistory = () => held.length;
		window.releaseHistory = () => { held.splice(0).forEach(f => f()); return true; };
		return true;
	})()`)
	p.do(
		chromedp.SetValue(chromedp.CSS("#uid"), "tom"),
		chromedp.SetValue(chromedp.CSS("#room"), "busy"),
		chromedp.Click(chromedp.CSS("#connect")),
	)
	p.waitJS("history asked", `window.heldHistory() === 1`)
	browserSay(t, sam, "live 1")
	browserSay(t, sam, "live 2")
	p.waitEntry(".entry.msg", "live 2")
	evalIn[bool](p, `window.releaseHistory()`)
	p.waitEntry(".entry.msg.history", "before 3")
	browserSay(t, sam, "live 3")
	p.waitEntry(".entry.msg", "live 3")
	wantLog(t, p, []string{"sam: before 1", "sam: before 2", "sam: before 3", "-- divider", "sam: live 1", "sam: live 2", "sam: live 3"})
	p.checkSeqs()
}
