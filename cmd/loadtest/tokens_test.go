package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
)

const testSecret = "loadtest-test-secret"

// parseBearer checks that h carries "Authorization: Bearer <token>" with a
// valid HS256 token signed with secret and returns its claims.
func parseBearer(h http.Header, secret string) (*jwt.RegisteredClaims, error) {
	tok, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
	if !ok {
		return nil, fmt.Errorf("no bearer token in %q", h.Get("Authorization"))
	}
	claims := &jwt.RegisteredClaims{}
	_, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return []byte(secret), nil },
		jwt.WithValidMethods([]string{"HS256"}))
	if err != nil {
		return nil, err
	}
	return claims, nil
}

func TestTokenModeSendsBearerTokenNotUIDHeader(t *testing.T) {
	for _, name := range []string{"switchboard-text", "switchboard-json"} {
		t.Run(name, func(t *testing.T) {
			o, err := parseFlags([]string{"-target", name, "-token-secret", testSecret, "-token-ttl", "2m"}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			before := time.Now()
			h := o.target.DialOptions("u7").HTTPHeader
			if v := h.Values("Uid"); len(v) != 0 {
				t.Fatalf("uid header %q sent in token mode", v)
			}
			claims, err := parseBearer(h, testSecret)
			if err != nil {
				t.Fatal(err)
			}
			if claims.Subject != "u7" {
				t.Fatalf("sub = %q, want u7", claims.Subject)
			}
			if exp := claims.ExpiresAt; exp == nil || exp.Before(before.Add(2*time.Minute-2*time.Second)) || exp.After(time.Now().Add(2*time.Minute+time.Second)) {
				t.Fatalf("exp = %v, want about 2m from now", exp)
			}
			if _, err := parseBearer(h, "another secret"); err == nil {
				t.Fatal("token verifies with the wrong secret")
			}
			// Without -token-secret: the uid header, as before.
			o, err = parseFlags([]string{"-target", name}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if h := o.target.DialOptions("u7").HTTPHeader; h.Get("Uid") != "u7" || h.Get("Authorization") != "" {
				t.Fatalf("header mode sent %v", h)
			}
		})
	}
}

// dialMany mints every uid's token before its clock starts; the dials
// then send exactly those tokens.
func TestTokensMintedBeforeDialPhase(t *testing.T) {
	srv := newTokenServer(t, testSecret)
	o, err := parseFlags([]string{"-target", "switchboard-json", "-token-secret", testSecret}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tokens := o.target.(switchboardJSON).tokens
	if len(tokens.byUID) != 0 {
		t.Fatalf("tokens minted at parse time: %d", len(tokens.byUID))
	}
	env := &runEnv{target: o.target, urls: []string{srv.url}, sources: sourceClients(1), dialConc: 4}
	specs := idleSpecs(6, 0, "unique", env.urls)
	dr := env.dialMany(context.Background(), 0, specs, func(int) messageHandler { return discard }, nil)
	defer closeAll(dr.clients)
	if dr.opened != 6 {
		t.Fatalf("opened %d of 6: %v", dr.opened, dr.firstErr)
	}
	if len(tokens.byUID) != 6 {
		t.Fatalf("%d tokens cached, want one per uid (6)", len(tokens.byUID))
	}
	if tokens.misses != 0 {
		t.Fatalf("%d dials minted their token during the dial phase", tokens.misses)
	}
	// The server records a token just after its side of the handshake,
	// which may be a moment after the dial returned.
	sent := srv.tokensSent()
	for deadline := time.Now().Add(10 * time.Second); len(sent) < len(specs) && time.Now().Before(deadline); sent = srv.tokensSent() {
		time.Sleep(10 * time.Millisecond)
	}
	for _, s := range specs {
		if sent[s.uid] != tokens.byUID[s.uid] {
			t.Fatalf("%s: dial sent another token than the one minted up front", s.uid)
		}
	}
}

// Children of -procs get the token flags and so sign the same way.
func TestTokenFlagsReachWorkers(t *testing.T) {
	o, err := parseFlags([]string{"-scenario", "idle", "-conns", "4", "-procs", "2",
		"-token-secret", testSecret, "-token-ttl", "90s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	child, err := parseFlags(append([]string{"-" + idleWorkerFlag, "-conns", "2"}, o.idle.WorkerArgs...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if child.tokenSecret != testSecret || child.tokenTTL != 90*time.Second {
		t.Fatalf("child token flags: secret set %v, ttl %v", child.tokenSecret == testSecret, child.tokenTTL)
	}
	if claims, err := parseBearer(child.target.DialOptions("i3").HTTPHeader, testSecret); err != nil || claims.Subject != "i3" {
		t.Fatalf("child token: %+v, %v", claims, err)
	}
}

func TestTokenFlagErrorsDoNotEchoTheSecret(t *testing.T) {
	var stderr bytes.Buffer
	code := run([]string{"-target", "gorilla", "-token-secret", testSecret}, nil, &bytes.Buffer{}, &stderr)
	if code != 2 || strings.Contains(stderr.String(), testSecret) || !strings.Contains(stderr.String(), "-token-secret") {
		t.Fatalf("exit %d, stderr %q; want exit 2 naming -token-secret without the secret", code, stderr.String())
	}
}

// tokenServer stands in for switchboard in token mode: a session must
// prove its uid with a bearer token signed with the secret (the uid header
// is ignored); without a valid one it is closed with 1008.
type tokenServer struct {
	url        string
	mu         sync.Mutex
	subs       map[string]string // sub -> the token it came with
	uidHeaders int               // handshakes that carried a uid header
}

func newTokenServer(t *testing.T, secret string) *tokenServer {
	t.Helper()
	s := &tokenServer{subs: map[string]string{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{jsonSubprotocol}})
		if err != nil {
			return
		}
		defer conn.CloseNow()
		claims, err := parseBearer(r.Header, secret)
		s.mu.Lock()
		if r.Header.Get("Uid") != "" {
			s.uidHeaders++
		}
		if err == nil {
			s.subs[claims.Subject] = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		}
		s.mu.Unlock()
		if err != nil || claims.Subject == "" {
			conn.Close(websocket.StatusPolicyViolation, "invalid token")
			return
		}
		<-conn.CloseRead(r.Context()).Done()
	}))
	t.Cleanup(srv.Close)
	s.url = "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws/bench"
	return s
}

// tokensSent returns each verified sub with its token.
func (s *tokenServer) tokensSent() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.subs)
}

// uidHeadersSent counts the handshakes that carried a uid header.
func (s *tokenServer) uidHeadersSent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.uidHeaders
}

// runIdleCLI runs an idle scenario through the command line and returns
// its record.
func runIdleCLI(t *testing.T, extra ...string) *Record {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args := append([]string{"-target", "switchboard-text", "-scenario", "idle", "-conns", "20", "-procs", "2",
		"-idle-uids", "unique", "-hold", "300ms", "-quiet"}, extra...)
	if code := run(args, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var rec Record
	if err := json.Unmarshal(stdout.Bytes(), &rec); err != nil || rec.Idle == nil {
		t.Fatalf("record %q: %v", stdout.String(), err)
	}
	return &rec
}

// An idle run against a token-mode server, over two worker processes:
// with the secret every connection is held; without it (or with a wrong
// one) the server closes them all and the run reports them dropped.
func TestIdleTokenModeEndToEnd(t *testing.T) {
	srv := newTokenServer(t, testSecret)
	base := strings.TrimSuffix(srv.url, "/bench")

	rec := runIdleCLI(t, "-url", base, "-token-secret", testSecret)
	if r := rec.Idle; r.Opened != 20 || r.FailedDials != 0 || r.Dropped != 0 || r.HandshakesPerSec <= 0 || rec.Auth != "token" {
		t.Fatalf("with the token: auth %q, idle %+v", rec.Auth, r)
	}
	subs := srv.tokensSent()
	want := idleUIDs(20, 0, "unique")
	got := make([]string, 0, len(subs))
	for sub := range subs {
		got = append(got, sub)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("server saw subs %v, want %v", got, want)
	}
	if n := srv.uidHeadersSent(); n != 0 {
		t.Fatalf("%d handshakes sent a uid header in token mode", n)
	}

	for name, extra := range map[string][]string{
		"no token":     {"-url", base},
		"wrong secret": {"-url", base, "-token-secret", "not the secret"},
	} {
		rec := runIdleCLI(t, extra...)
		r := rec.Idle
		if r.Dropped != r.Opened || r.Opened+r.FailedDials != 20 || !strings.Contains(r.DropReason+r.FirstDialError, "StatusPolicyViolation") {
			t.Fatalf("%s: want every connection refused with 1008, got %+v", name, r)
		}
	}
	if srv.uidHeadersSent() != 20 {
		t.Fatalf("the run without a token sent %d uid headers, want 20", srv.uidHeadersSent())
	}
}
