package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard/switchboard/internal/mint"
)

const testSecret = "test-secret-that-is-long-enough-for-hs256"

// claims builds the claims of a test token for sub, valid for an hour.
func claims(sub string) *tokenClaims {
	now := time.Now()
	return &tokenClaims{RegisteredClaims: jwt.RegisteredClaims{
		Subject:   sub,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
	}}
}

// sign signs c with method and key; kid goes in the header when not empty.
func sign(t testing.TB, method jwt.SigningMethod, key any, kid string, c jwt.Claims) string {
	t.Helper()
	token := jwt.NewWithClaims(method, c)
	if kid != "" {
		token.Header["kid"] = kid
	}
	signed, err := token.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// hs256 is a token for sub signed with testSecret, changed by change.
func hs256(t testing.TB, sub string, change func(*tokenClaims)) string {
	t.Helper()
	c := claims(sub)
	if change != nil {
		change(c)
	}
	return sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", c)
}

// startTokenServer runs a server in token mode with testSecret and
// configure's changes.
func startTokenServer(t testing.TB, configure func(*Config)) *testServer {
	t.Helper()
	return startServer(t, func(c *Config) {
		c.JWTSecret = testSecret
		if configure != nil {
			configure(c)
		}
	})
}

// bearer is the header that carries token.
func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

// writePEM writes a public key as a PEM file and returns its path.
func writePEM(t testing.TB, public crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(public)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Every refusal of PROTOCOL.md's Tokens section, each with its own token,
// is a 1008 close with the reason right after the upgrade.
func TestTokenRefusals(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemPath := writePEM(t, &rsaKey.PublicKey)
	pemBytes, err := os.ReadFile(pemPath)
	if err != nil {
		t.Fatal(err)
	}
	hmacOnly := startTokenServer(t, func(c *Config) {
		c.JWTAudience = "chat"
		c.JWTIssuer = "https://id.example.com"
	})
	good := func(c *tokenClaims) {
		c.Audience = jwt.ClaimStrings{"chat"}
		c.Issuer = "https://id.example.com"
	}
	withGood := func(change func(*tokenClaims)) func(*tokenClaims) {
		return func(c *tokenClaims) {
			good(c)
			change(c)
		}
	}
	publicKeyOnly := startServer(t, func(c *Config) { c.JWTPublicKey = pemPath })
	jwksServer, _ := serveJWKS(t)
	jwksOnly := startServer(t, func(c *Config) { c.JWTJWKSURL = jwksServer.URL })
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)

	cases := []struct {
		name   string
		server *testServer
		header http.Header
		path   string
		reason string
	}{
		{"missing", hmacOnly, nil, "/ws", reasonTokenMissing},
		{"empty bearer", hmacOnly, http.Header{"Authorization": {"Bearer "}}, "/ws", reasonTokenMissing},
		{"garbage", hmacOnly, bearer("not.a.token"), "/ws", reasonTokenInvalid},
		{"garbage in the query", hmacOnly, nil, "/ws?token=%00%01", reasonTokenInvalid},
		{"bad signature", hmacOnly, bearer(sign(t, jwt.SigningMethodHS256, []byte("another secret"), "", withClaims(claims("alice"), good))), "/ws", reasonTokenInvalid},
		{"alg none", hmacOnly, bearer(sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", withClaims(claims("alice"), good))), "/ws", reasonTokenInvalid},
		{"HS256 signed with the public key's bytes", publicKeyOnly, bearer(sign(t, jwt.SigningMethodHS256, pemBytes, "", claims("alice"))), "/ws", reasonTokenInvalid},
		{"RS256 with another key", publicKeyOnly, bearer(sign(t, jwt.SigningMethodRS256, otherKey, "", claims("alice"))), "/ws", reasonTokenInvalid},
		{"expired", hmacOnly, bearer(hs256(t, "alice", withGood(func(c *tokenClaims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute)) }))), "/ws", reasonTokenExpired},
		{"nbf ahead", hmacOnly, bearer(hs256(t, "alice", withGood(func(c *tokenClaims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour)) }))), "/ws", reasonTokenInvalid},
		{"wrong aud", hmacOnly, bearer(hs256(t, "alice", withGood(func(c *tokenClaims) { c.Audience = jwt.ClaimStrings{"billing"} }))), "/ws", reasonTokenInvalid},
		{"no aud", hmacOnly, bearer(hs256(t, "alice", withGood(func(c *tokenClaims) { c.Audience = nil }))), "/ws", reasonTokenInvalid},
		{"wrong iss", hmacOnly, bearer(hs256(t, "alice", withGood(func(c *tokenClaims) { c.Issuer = "https://evil.example.com" }))), "/ws", reasonTokenInvalid},
		{"exp past the year 9999", hmacOnly, bearer(sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", jwt.MapClaims{"sub": "alice", "aud": "chat", "iss": "https://id.example.com", "exp": 1e15})), "/ws", reasonTokenInvalid},
		{"sub missing", hmacOnly, bearer(hs256(t, "", good)), "/ws", reasonTokenInvalid},
		{"sub not a valid uid", hmacOnly, bearer(hs256(t, "alice smith!", good)), "/ws", reasonTokenInvalid},
		{"rooms not an array", hmacOnly, bearer(sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", jwt.MapClaims{"sub": "alice", "aud": "chat", "iss": "https://id.example.com", "rooms": "lobby"})), "/ws", reasonTokenInvalid},
		{"unknown kid", jwksOnly, bearer(sign(t, jwt.SigningMethodRS256, otherKey, "no-such-kid", claims("alice"))), "/ws", reasonTokenInvalid},
		{"HS256 against a JWK Set", jwksOnly, bearer(sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claims("alice"))), "/ws", reasonTokenInvalid},
		{"room outside rooms", hmacOnly, bearer(hs256(t, "alice", withGood(func(c *tokenClaims) { c.Rooms = []string{"a", "b"} }))), "/ws/c", reasonRoomForbidden},
		{"rooms empty", hmacOnly, bearer(hs256(t, "alice", withGood(func(c *tokenClaims) { c.Rooms = []string{} }))), "/ws/lobby", reasonRoomForbidden},
		{"room invalid comes before forbidden", hmacOnly, bearer(hs256(t, "alice", withGood(func(c *tokenClaims) { c.Rooms = []string{"a"} }))), "/ws?room=no%20spaces", reasonRoomInvalid},
		{"a uid header is no token", hmacOnly, http.Header{"Uid": {"alice"}}, "/ws", reasonTokenMissing},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.server.dial(dialOptions{path: tc.path, header: tc.header, json: true})
			c.expectClose(websocket.StatusPolicyViolation, tc.reason)
		})
	}
	// Nobody got in: no session was ever registered.
	for _, ts := range []*testServer{hmacOnly, publicKeyOnly, jwksOnly} {
		var rooms []RoomSummary
		ts.getJSON("/api/rooms", &rooms)
		if len(rooms) != 0 {
			t.Errorf("a refused client left a room behind: %v", rooms)
		}
	}
}

func withClaims(c *tokenClaims, change func(*tokenClaims)) *tokenClaims {
	change(c)
	return c
}

// jwksKeys is a JWK Set served by an httptest server; keys can be added
// while it runs (rotation).
type jwksKeys struct {
	mu      sync.Mutex
	keys    []jwkset.JWKMarshal
	fetches int
}

func (k *jwksKeys) add(t testing.TB, public any, kid string, alg jwkset.ALG) {
	t.Helper()
	jwk, err := jwkset.NewJWKFromKey(public, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: alg}})
	if err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys = append(k.keys, jwk.Marshal())
}

func (k *jwksKeys) fetched() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fetches
}

// serveJWKS serves a set that starts with one RSA key, kid "k1", whose
// private half it returns.
func serveJWKS(t testing.TB) (*httptest.Server, *rsa.PrivateKey) {
	srv, _, key := serveJWKSKeys(t)
	return srv, key
}

func serveJWKSKeys(t testing.TB) (*httptest.Server, *jwksKeys, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	set := &jwksKeys{}
	set.add(t, &key.PublicKey, "k1", jwkset.AlgRS256)
	srv := newStandaloneHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		set.mu.Lock()
		defer set.mu.Unlock()
		set.fetches++
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(jwkset.JWKSMarshal{Keys: set.keys})
	}))
	return srv, set, key
}

// A token signed by each kind of configured key is accepted; its sub is the
// uid, and a uid header beside it is ignored.
func TestTokenAccepted(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPublic, edPrivate, _ := ed25519.GenerateKey(rand.Reader)
	cases := []struct {
		name   string
		config func(*Config)
		token  string
	}{
		{"HS256", func(c *Config) { c.JWTSecret = testSecret }, sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claims("alice"))},
		{"HS512", func(c *Config) { c.JWTSecret = testSecret }, sign(t, jwt.SigningMethodHS512, []byte(testSecret), "", claims("alice"))},
		{"RS256", func(c *Config) { c.JWTPublicKey = writePEM(t, &rsaKey.PublicKey) }, sign(t, jwt.SigningMethodRS256, rsaKey, "", claims("alice"))},
		{"PS256", func(c *Config) { c.JWTPublicKey = writePEM(t, &rsaKey.PublicKey) }, sign(t, jwt.SigningMethodPS256, rsaKey, "", claims("alice"))},
		{"ES256", func(c *Config) { c.JWTPublicKey = writePEM(t, &ecKey.PublicKey) }, sign(t, jwt.SigningMethodES256, ecKey, "", claims("alice"))},
		{"EdDSA", func(c *Config) { c.JWTPublicKey = writePEM(t, edPublic) }, sign(t, jwt.SigningMethodEdDSA, edPrivate, "", claims("alice"))},
		{"secret and public key together, HS256", func(c *Config) {
			c.JWTSecret = testSecret
			c.JWTPublicKey = writePEM(t, edPublic)
		}, sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claims("alice"))},
		{"secret and public key together, EdDSA", func(c *Config) {
			c.JWTSecret = testSecret
			c.JWTPublicKey = writePEM(t, edPublic)
		}, sign(t, jwt.SigningMethodEdDSA, edPrivate, "", claims("alice"))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, tc.config)
			header := bearer(tc.token)
			header.Set("uid", "mallory") // ignored in token mode
			c := ts.dial(dialOptions{path: "/ws/lobby", header: header, json: true})
			welcome := c.readJSON()
			if welcome["type"] != "welcome" || welcome["uid"] != "alice" {
				t.Fatalf("welcome = %v, want alice's", welcome)
			}
			c.sendJSON(map[string]string{"type": "message", "text": "hi"})
			if got := c.readJSON(); got["from"] != "alice" || got["text"] != "hi" {
				t.Fatalf("got %v, want alice's message", got)
			}
			// The query carries a token for browsers, in text mode too.
			q := ts.dial(dialOptions{path: "/ws/lobby?uid=mallory&token=" + url.QueryEscape(tc.token)})
			q.expect("[server]: welcome UID alice, room lobby")
		})
	}
}

// With a JWK Set, keys are picked by kid, and a key added to the set
// (rotation) is used without a restart.
func TestTokenJWKSRotation(t *testing.T) {
	srv, set, key := serveJWKSKeys(t)
	ts := startServer(t, func(c *Config) {
		c.JWTJWKSURL = srv.URL
		c.JWKS.UnknownKIDEvery = time.Millisecond // tests rotate at once
	})
	c := ts.dial(dialOptions{header: bearer(sign(t, jwt.SigningMethodRS256, key, "k1", claims("alice"))), json: true})
	if w := c.readJSON(); w["uid"] != "alice" {
		t.Fatalf("welcome = %v", w)
	}
	// Rotation: the provider starts signing with a new key, kid k2.
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	set.add(t, &newKey.PublicKey, "k2", jwkset.AlgES256)
	before := set.fetched()
	c2 := ts.dial(dialOptions{header: bearer(sign(t, jwt.SigningMethodES256, newKey, "k2", claims("bob"))), json: true})
	if w := c2.readJSON(); w["uid"] != "bob" {
		t.Fatalf("welcome after rotation = %v", w)
	}
	if set.fetched() == before {
		t.Fatal("the new kid was accepted without fetching the set again")
	}
	// The old key still works while it is in the set.
	c3 := ts.dial(dialOptions{header: bearer(sign(t, jwt.SigningMethodRS256, key, "k1", claims("carol"))), json: true})
	if w := c3.readJSON(); w["uid"] != "carol" {
		t.Fatalf("welcome with the old key = %v", w)
	}
	// A token signed with k2's key but naming k1 is not taken.
	wrong := ts.dial(dialOptions{header: bearer(sign(t, jwt.SigningMethodES256, newKey, "k1", claims("dave")))})
	wrong.expectClose(websocket.StatusPolicyViolation, reasonTokenInvalid)
}

// A flood of made-up kids fetches the set at most once per
// UnknownKIDEvery, and each token that finds the limit spent is refused
// without waiting for it to come back.
func TestTokenJWKSUnknownKIDsAreRateLimited(t *testing.T) {
	srv, set, _ := serveJWKSKeys(t)
	ts := startServer(t, func(c *Config) {
		c.JWTJWKSURL = srv.URL
		// Shorter than a fetch may take (5 s): a token that waited for
		// the limit would fetch again within this test's 20 dials.
		c.JWKS.UnknownKIDEvery = 3 * time.Second
	})
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	before := set.fetched()
	for i := range 20 {
		c := ts.dial(dialOptions{header: bearer(sign(t, jwt.SigningMethodRS256, other, fmt.Sprintf("made-up-%d", i), claims("alice")))})
		c.expectClose(websocket.StatusPolicyViolation, reasonTokenInvalid)
	}
	if fetches := set.fetched() - before; fetches != 1 {
		t.Fatalf("20 unknown kids fetched the set %d times, want exactly 1", fetches)
	}
}

// The JSON welcome carries the token's expiry; without exp it carries none.
func TestTokenWelcomeExpires(t *testing.T) {
	ts := startTokenServer(t, nil)
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	c := ts.dial(dialOptions{header: bearer(hs256(t, "alice", func(c *tokenClaims) { c.ExpiresAt = jwt.NewNumericDate(exp) })), json: true})
	if w := c.readJSON(); w["expires"] != exp.UTC().Format(time.RFC3339) {
		t.Fatalf("welcome = %v, want expires %s", w, exp.UTC().Format(time.RFC3339))
	}
	forever := ts.dial(dialOptions{header: bearer(hs256(t, "bob", func(c *tokenClaims) { c.ExpiresAt = nil })), json: true})
	if w := forever.readJSON(); w["type"] != "welcome" || w["expires"] != nil {
		t.Fatalf("welcome without exp = %v, want no expires", w)
	}
}

// A session whose token expires is closed with 1008 "token expired"; one
// refreshed in time stays.
func TestTokenExpiryAndRefresh(t *testing.T) {
	ts := startTokenServer(t, nil)
	soon := func(c *tokenClaims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(2 * time.Second)) }
	expiring := ts.dial(dialOptions{header: bearer(hs256(t, "alice", soon)), json: true})
	refreshed := ts.dial(dialOptions{header: bearer(hs256(t, "bob", soon)), json: true})
	refreshedText := ts.dial(dialOptions{header: bearer(hs256(t, "carol", soon))})
	expiring.readJSON()
	refreshed.readJSON()
	refreshedText.readLine()

	later := time.Now().Add(time.Hour).Truncate(time.Second)
	refreshed.sendJSON(map[string]string{"type": "refresh", "token": hs256(t, "bob", func(c *tokenClaims) { c.ExpiresAt = jwt.NewNumericDate(later) })})
	if got := refreshed.readEvents(1, "refreshed")[0]; got["expires"] != later.UTC().Format(time.RFC3339) {
		t.Fatalf("refresh answer = %v", got)
	}
	refreshedText.send("/refresh " + hs256(t, "carol", func(c *tokenClaims) { c.ExpiresAt = nil }))
	for line := refreshedText.readLine(); line != "[server]: token refreshed, no expiry"; line = refreshedText.readLine() {
		if !strings.Contains(line, "joined") {
			t.Fatalf("got %q, want the refresh answer", line)
		}
	}

	expiring.expectClose(websocket.StatusPolicyViolation, reasonTokenExpired)
	// The first token's exp has passed: the refreshed sessions still answer.
	refreshed.sendJSON(map[string]string{"type": "who"})
	if got := refreshed.readEvents(1, "presence")[0]; !strings.Contains(toJSON(got), "bob") {
		t.Fatalf("presence = %v", got)
	}
	// A token without exp: the answer carries no expires.
	refreshed.sendJSON(map[string]string{"type": "refresh", "token": hs256(t, "bob", func(c *tokenClaims) { c.ExpiresAt = nil })})
	if got := refreshed.readEvents(1, "refreshed")[0]; len(got) != 1 {
		t.Fatalf("refresh without exp answered %v, want {\"type\":\"refreshed\"}", got)
	}
	refreshedText.send("/who")
	for line := refreshedText.readLine(); !strings.HasPrefix(line, "[server]: online in lobby: "); line = refreshedText.readLine() {
	}
	if n := metricValue(t, ts, `switchboard_session_closes_total{reason="token_expired"}`); n != 1 {
		t.Fatalf("token_expired closes = %v, want 1", n)
	}
}

// A refresh that is not usable is answered with the reason, and the
// session keeps going with its old expiry: it still ends at the first
// token's exp.
func TestTokenRefreshRefusals(t *testing.T) {
	ts := startTokenServer(t, nil)
	soon := func(c *tokenClaims) {
		c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(3 * time.Second))
		c.Rooms = []string{"a"}
	}
	c := ts.dial(dialOptions{path: "/ws/a", header: bearer(hs256(t, "alice", soon)), json: true})
	c.readJSON()
	text := ts.dial(dialOptions{path: "/ws/a", header: bearer(hs256(t, "alice", soon))})
	text.readLine()
	cases := []struct {
		token, reason string
	}{
		{hs256(t, "mallory", nil), reasonOtherUID},
		{"garbage", reasonTokenInvalid},
		{sign(t, jwt.SigningMethodHS256, []byte("wrong"), "", claims("alice")), reasonTokenInvalid},
		{hs256(t, "alice", func(c *tokenClaims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Second)) }), reasonTokenExpired},
		{hs256(t, "alice", func(c *tokenClaims) { c.Rooms = []string{"b"} }), reasonRoomForbidden},
		{"", reasonTokenMissing},
	}
	for _, tc := range cases {
		c.sendJSON(map[string]string{"type": "refresh", "token": tc.token})
		got := c.readEvents(1, "error")[0]
		if got["code"] != "bad_token" || got["message"] != tc.reason {
			t.Errorf("refresh answer = %v, want bad_token %q", got, tc.reason)
		}
		text.send("/refresh " + tc.token)
		if line := text.readLine(); line != "[server]: error: "+tc.reason {
			t.Errorf("text refresh answer = %q, want error %q", line, tc.reason)
		}
	}
	c.sendJSON(map[string]string{"type": "refresh"})
	if got := c.readJSON(); got["code"] != "bad_token" || got["message"] != reasonTokenMissing {
		t.Errorf("refresh without token = %v", got)
	}
	// Still connected after every refusal...
	c.sendJSON(map[string]string{"type": "who"})
	if got := c.readJSON(); got["type"] != "presence" {
		t.Fatalf("after refusals: %v", got)
	}
	// ...and the old expiry stands.
	c.expectClose(websocket.StatusPolicyViolation, reasonTokenExpired)
	text.expectClose(websocket.StatusPolicyViolation, reasonTokenExpired)
}

// Outside token mode a refresh is an error, and the session stays.
func TestRefreshWithoutTokenMode(t *testing.T) {
	ts := startServer(t, nil)
	c, _ := ts.connectJSON("1", "lobby")
	c.sendJSON(map[string]string{"type": "refresh", "token": hs256(t, "1", nil)})
	if got := c.readJSON(); got["code"] != "bad_token" || got["message"] != reasonNoTokens {
		t.Fatalf("got %v, want bad_token %q", got, reasonNoTokens)
	}
	c.sendJSON(map[string]string{"type": "refresh"})
	if got := c.readJSON(); got["code"] != "bad_token" || got["message"] != reasonNoTokens {
		t.Fatalf("got %v, want bad_token %q", got, reasonNoTokens)
	}
	text := ts.connect("2", "lobby")
	text.send("/refresh abc")
	text.expect("[server]: error: " + reasonNoTokens)
	text.send("/refresh")
	text.expect("[server]: error: " + reasonNoTokens)
	text.send("/who")
	text.expect("[server]: online in lobby: 1, 2")
}

// POST /api/users/{uid}/disconnect closes every session of the uid, in any
// room and mode, and nobody else's.
func TestDisconnectUser(t *testing.T) {
	ts := startServer(t, nil)
	a1 := ts.connect("7", "a")
	a2, _ := ts.connectJSON("7", "b")
	other := ts.connect("8", "a")
	a1.expect("[server]: UID 8 joined a")
	status, body := ts.request("POST", "/api/users/7/disconnect", "", nil)
	if status != 200 || body != `{"uid":"7","sessions":2}` {
		t.Fatalf("disconnect = %d %s", status, body)
	}
	a1.expectClose(websocket.StatusPolicyViolation, "disconnected by the server")
	a2.expectClose(websocket.StatusPolicyViolation, "disconnected by the server")
	other.expect("[server]: UID 7 left a")
	other.send("still here")
	other.expect("[UID: 8]: still here")
	if status, body := ts.request("POST", "/api/users/7/disconnect", "", nil); status != 200 || body != `{"uid":"7","sessions":0}` {
		t.Fatalf("second disconnect = %d %s", status, body)
	}
	if status, body := ts.request("POST", "/api/users/no%20spaces/disconnect", "", nil); status != 400 || body != `{"error":"uid is invalid"}` {
		t.Fatalf("invalid uid = %d %s", status, body)
	}
	if status, _ := ts.request("GET", "/api/users/7/disconnect", "", nil); status != 404 {
		t.Fatalf("GET disconnect = %d, want 404", status)
	}
	if n := metricValue(t, ts, `switchboard_session_closes_total{reason="disconnected"}`); n != 2 {
		t.Fatalf("disconnected closes = %v, want 2", n)
	}
}

// Without -api-key, a request that came through a proxy is refused even
// from loopback; with a key the key decides.
func TestAPIRefusesProxiedRequestsWithoutKey(t *testing.T) {
	ts := startServer(t, nil)
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Real-IP"} {
		status, body := ts.request("GET", "/api/rooms", "", http.Header{h: {"203.0.113.9"}})
		if status != http.StatusForbidden || !strings.HasPrefix(body, `{"error":`) {
			t.Errorf("%s: %d %s, want 403 with a JSON error", h, status, body)
		}
		if status, _ := ts.request("POST", "/api/users/7/disconnect", "", http.Header{h: {"for=203.0.113.9"}}); status != http.StatusForbidden {
			t.Errorf("%s on disconnect: %d, want 403", h, status)
		}
	}
	if status, _ := ts.request("GET", "/api/rooms", "", nil); status != 200 {
		t.Errorf("plain loopback request = %d, want 200", status)
	}
	keyed := startServer(t, func(c *Config) { c.APIKey = "k" })
	header := http.Header{"X-Forwarded-For": {"203.0.113.9"}, "Authorization": {"Bearer k"}}
	if status, body := keyed.request("GET", "/api/rooms", "", header); status != 200 {
		t.Errorf("proxied request with the key = %d %s, want 200", status, body)
	}
}

// Start-up problems with keys are one-line errors naming the flag.
func TestTokenKeyErrors(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	empty := newStandaloneHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"keys":[]}`)) }))
	notJSON := newStandaloneHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`<html>`)) }))
	cases := []struct {
		config func(*Config)
		want   string
	}{
		{func(c *Config) { c.JWTPublicKey = "/no/such/file.pem" }, "-jwt-public-key"},
		{func(c *Config) { c.JWTPublicKey = notPEM }, "-jwt-public-key"},
		{func(c *Config) { c.JWTJWKSURL = empty.URL }, "-jwt-jwks-url"},
		{func(c *Config) { c.JWTJWKSURL = notJSON.URL }, "-jwt-jwks-url"},
		{func(c *Config) { c.JWTJWKSURL = "http://127.0.0.1:1/keys" }, "-jwt-jwks-url"},
	}
	for _, tc := range cases {
		cfg := testConfig()
		tc.config(&cfg)
		_, err := newSwitchboard(context.Background(), cfg, testLogger())
		if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want one line naming %s", err, tc.want)
		}
	}
}

// The token subcommand mints what the server accepts.
func TestTokenCommand(t *testing.T) {
	var out, errOut strings.Builder
	if code := tokenCommand([]string{"-secret", testSecret, "-sub", "alice", "-ttl", "1h", "-rooms", "a,b"}, func(string) string { return "" }, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	ts := startTokenServer(t, nil)
	token := strings.TrimSpace(out.String())
	c := ts.dial(dialOptions{path: "/ws/b", header: bearer(token), json: true})
	if w := c.readJSON(); w["uid"] != "alice" || w["expires"] == nil {
		t.Fatalf("welcome = %v", w)
	}
	ts.dial(dialOptions{path: "/ws/c", header: bearer(token)}).expectClose(websocket.StatusPolicyViolation, reasonRoomForbidden)

	for _, args := range [][]string{{"-sub", "alice"}, {"-secret", "s"}, {"-secret", "s", "-sub", "bad uid"}, {"-secret", "s", "-sub", "a", "-rooms", "ok,not ok"}, {"-secret", "s", "-sub", "a", "-ttl", "-1h"}, {"-secret", "s", "-sub", "a", "extra"}} {
		var out, errOut strings.Builder
		if code := tokenCommand(args, func(string) string { return "" }, &out, &errOut); code != 2 || strings.Count(strings.TrimSpace(errOut.String()), "\n") != 0 || out.Len() != 0 {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want 2 and one line", args, code, errOut.String(), out.String())
		}
	}
	// The secret may come from the server's own environment variable.
	out.Reset()
	if code := tokenCommand([]string{"-sub", "bob", "-ttl", "0"}, func(k string) string {
		if k == "SWITCHBOARD_JWT_SECRET" {
			return testSecret
		}
		return ""
	}, &out, &errOut); code != 0 {
		t.Fatalf("from env: exit %d", code)
	}
	c2 := ts.dial(dialOptions{header: bearer(strings.TrimSpace(out.String())), json: true})
	if w := c2.readJSON(); w["uid"] != "bob" || w["expires"] != nil {
		t.Fatalf("welcome = %v", w)
	}
	// The same minting the tests and the load tool use.
	minted, err := mint.HS256([]byte(testSecret), mint.Options{Subject: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	ts.dial(dialOptions{header: bearer(minted)}).expect("[server]: welcome UID carol, room lobby")
}

// Malformed headers and queries never panic the token path.
func FuzzBearerToken(f *testing.F) {
	f.Add("Bearer abc.def.ghi", "token=x")
	f.Add("bearer    ", "token=%zz&token=a")
	f.Add("Basic dXNlcg==", "uid=1&token=eyJhbGciOiJub25lIn0.e30.")
	f.Add("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIiwicm9vbXMiOjF9.x", ";;&&==")
	auth, err := newAuthenticator(Config{JWTSecret: testSecret, JWKS: defaultJWKSTiming()}, testLogger())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, authorization, rawQuery string) {
		header := http.Header{"Authorization": {authorization}}
		query, _ := url.ParseQuery(rawQuery)
		token := bearerToken(header, query)
		id, problem := auth.identify(header, query)
		if problem == "" && !validUID(id.uid) {
			t.Fatalf("accepted %q with uid %q", token, id.uid)
		}
		if token == "" && problem != reasonTokenMissing {
			t.Fatalf("no token, problem %q", problem)
		}
		headerAuth{}.identify(header, query)
	})
}

func toJSON(v any) string {
	data, _ := json.Marshal(v)
	return string(data)
}

// metricValue reads one sample of the server's /metrics, by its name with
// labels.
func metricValue(t testing.TB, ts *testServer, sample string) float64 {
	t.Helper()
	_, body := ts.request("GET", "/metrics", "", nil)
	return metricSample(t, body, sample)
}

// metricSample finds one sample in a Prometheus text body.
func metricSample(t testing.TB, body, sample string) float64 {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if value, ok := strings.CutPrefix(line, sample+" "); ok {
			var v float64
			if _, err := fmt.Sscan(value, &v); err != nil {
				t.Fatalf("metric %s: %v", sample, err)
			}
			return v
		}
	}
	t.Fatalf("no metric %s", sample)
	return 0
}

// In a cluster a token accepted on one node is accepted on every node with
// the same keys, and a disconnect puts the uid out on every node.
func TestClusterTokenAndDisconnect(t *testing.T) {
	n := startNATS(t)
	secret := func(c *Config) { c.JWTSecret = testSecret }
	nodes := []*testServer{startNode(t, n, "n1", secret), startNode(t, n, "n2", secret)}
	token := hs256(t, "7", nil)
	on1 := nodes[0].dial(dialOptions{path: "/ws/a", header: bearer(token)})
	on1.expect("[server]: welcome UID 7, room a")
	waitPresence(t, nodes, "a", "7")
	on2 := nodes[1].dial(dialOptions{path: "/ws/b", header: bearer(token), json: true})
	if w := on2.readJSON(); w["uid"] != "7" {
		t.Fatalf("welcome on node 2 = %v", w)
	}
	waitPresence(t, nodes, "b", "7")
	other := nodes[1].dial(dialOptions{path: "/ws/a", header: bearer(hs256(t, "8", nil))})
	other.expect("[server]: welcome UID 8, room a")

	status, body := nodes[0].request("POST", "/api/users/7/disconnect", "", nil)
	if status != 200 || body != `{"uid":"7","sessions":2}` {
		t.Fatalf("disconnect = %d %s", status, body)
	}
	on1.expectClose(websocket.StatusPolicyViolation, "disconnected by the server")
	on2.expectClose(websocket.StatusPolicyViolation, "disconnected by the server")
	other.expect("[server]: UID 7 left a")
	waitPresence(t, nodes, "a", "8")
	if status, body := nodes[1].request("POST", "/api/users/7/disconnect", "", nil); status != 200 || body != `{"uid":"7","sessions":0}` {
		t.Fatalf("second disconnect = %d %s", status, body)
	}
	// Broker gone: the disconnect cannot reach the other nodes, and says so.
	n.stop()
	waitHealth(t, nodes[0], http.StatusServiceUnavailable)
	if status, body := nodes[0].request("POST", "/api/users/8/disconnect", "", nil); status != 503 || body != `{"error":"cluster unavailable"}` {
		t.Fatalf("disconnect without broker = %d %s", status, body)
	}
}

// The binary says at start who chooses the uid; in token mode (from the
// environment twin) it takes tokens, ignores the uid header, and logs
// neither tokens nor query strings, even at debug level.
func TestProcessTokenMode(t *testing.T) {
	dev := startProcess(t)
	if log := dev.log(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "clients choose their own uid") {
		t.Fatalf("development mode start without the warning:\n%s", log)
	}
	p := startProcessEnv(t, []string{"SWITCHBOARD_JWT_SECRET=" + testSecret, "LOG_LEVEL=debug"})
	if log := p.log(); !strings.Contains(log, "token mode") || strings.Contains(log, "clients choose their own uid") {
		t.Fatalf("token mode start:\n%s", log)
	}
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	token := hs256(t, "alice", func(c *tokenClaims) { c.ExpiresAt = jwt.NewNumericDate(exp) })
	dial := func(path string, header http.Header) *testClient {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		conn, _, err := websocket.Dial(ctx, "ws://"+p.addr+path, &websocket.DialOptions{
			HTTPHeader: header,
			HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { conn.CloseNow() })
		return &testClient{t: t, conn: conn}
	}
	dial("/ws", http.Header{"uid": {"alice"}}).expectClose(websocket.StatusPolicyViolation, reasonTokenMissing)
	c := dial("/ws?uid=mallory&secretquery=1&token="+token, nil)
	c.expect("[server]: welcome UID alice, room lobby")
	c.send("/refresh " + token)
	c.expect("[server]: token refreshed, expires " + exp.UTC().Format(time.RFC3339))
	dial("/ws?token=garbage.garbage.garbage", nil).expectClose(websocket.StatusPolicyViolation, reasonTokenInvalid)
	c.close()
	eventually(t, "the session's end in the log", func() bool { return strings.Contains(p.log(), "session ended") })
	if log := p.log(); strings.Contains(log, token) || strings.Contains(log, "garbage") || strings.Contains(log, "secretquery") {
		t.Fatalf("the log holds a token or a query string:\n%s", log)
	}
}
