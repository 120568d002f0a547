package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

// tokenAuth is token mode: a client proves its uid with a JWT signed by one
// of the configured keys (PROTOCOL.md, Tokens). Parsing and validation are
// golang-jwt's; the JWK Set is kept by keyfunc/jwkset.
type tokenAuth struct {
	parser    *jwt.Parser
	secret    []byte          // -jwt-secret; nil when not set
	publicKey any             // -jwt-public-key; nil when not set
	jwks      keyfunc.Keyfunc // -jwt-jwks-url; nil when not set
	summary   string

	// The JWK Set as last fetched, what fetches it again for an unknown
	// kid, and how often that may happen (see fetchForUnknownKID).
	jwksStore     jwkset.Storage
	jwksRefresher jwkset.Storage
	unknownKID    *rate.Limiter
	fetching      singleflight.Group
	fetchTimeout  time.Duration
	stopJWKS      context.CancelFunc
	jwksHTTP      *http.Client
}

// tokenClaims are the claims switchboard reads.
type tokenClaims struct {
	jwt.RegisteredClaims
	// Rooms, when present, lists the rooms the token may join. A JSON
	// null or a missing claim means any room; [] means none.
	Rooms []string `json:"rooms"`
}

// Algorithms per kind of key. Only those of the configured keys are ever
// accepted, so "none" and an HMAC token checked against a public key's
// bytes (key confusion) are refused by the parser before any key is read.
var (
	hmacMethods    = []string{"HS256", "HS384", "HS512"}
	rsaMethods     = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	ed25519Methods = []string{"EdDSA"}
	// A JWK Set may hold any kind of public key; never an HMAC one.
	jwksMethods = append(append(append([]string{}, rsaMethods...), "ES256", "ES384", "ES512"), ed25519Methods...)
)

// jwksTiming says how the key set is kept fresh. Not flags: the defaults
// suit identity providers, and tests shorten them.
type jwksTiming struct {
	// RefreshInterval is the background refresh period.
	RefreshInterval time.Duration
	// UnknownKIDEvery is the least time between two fetches caused by a
	// token whose kid is not in the set, so a flood of made-up kids
	// cannot hammer the provider; tokens that find the limit spent are
	// refused at once. A kid rotated in meanwhile is found by the next
	// fetch this allows, or by the background refresh.
	UnknownKIDEvery time.Duration
	// FetchTimeout bounds one fetch of the set.
	FetchTimeout time.Duration
}

func defaultJWKSTiming() jwksTiming {
	return jwksTiming{RefreshInterval: 10 * time.Minute, UnknownKIDEvery: 10 * time.Second, FetchTimeout: 5 * time.Second}
}

// tokenMode reports whether cfg asks for token mode.
func tokenMode(cfg Config) bool {
	return cfg.JWTSecret != "" || cfg.JWTPublicKey != "" || cfg.JWTJWKSURL != ""
}

// newAuthenticator returns token mode when a key option is set and
// development mode otherwise. A key that cannot be loaded is an error
// naming its flag.
func newAuthenticator(cfg Config, log *slog.Logger) (authenticator, error) {
	if !tokenMode(cfg) {
		return headerAuth{}, nil
	}
	a := &tokenAuth{}
	var methods, sources []string
	if cfg.JWTSecret != "" {
		a.secret = []byte(cfg.JWTSecret)
		methods = append(methods, hmacMethods...)
		sources = append(sources, "secret")
	}
	if cfg.JWTPublicKey != "" {
		key, keyMethods, err := readPublicKey(cfg.JWTPublicKey)
		if err != nil {
			return nil, fmt.Errorf("cannot use -jwt-public-key %s: %v", cfg.JWTPublicKey, err)
		}
		a.publicKey = key
		methods = append(methods, keyMethods...)
		sources = append(sources, "public key ("+strings.Join(keyMethods, ",")+")")
	}
	if cfg.JWTJWKSURL != "" {
		if err := a.loadJWKS(cfg, log); err != nil {
			return nil, fmt.Errorf("cannot use -jwt-jwks-url %s: %s", cfg.JWTJWKSURL, oneLine(err))
		}
		methods = append(methods, jwksMethods...)
		sources = append(sources, "JWK Set")
	}
	options := []jwt.ParserOption{jwt.WithValidMethods(methods)}
	if cfg.JWTAudience != "" {
		options = append(options, jwt.WithAudience(cfg.JWTAudience))
	}
	if cfg.JWTIssuer != "" {
		options = append(options, jwt.WithIssuer(cfg.JWTIssuer))
	}
	a.parser = jwt.NewParser(options...)
	a.summary = "token mode: uids come from JWTs (" + strings.Join(sources, ", ") + ")"
	return a, nil
}

// loadJWKS fetches the key set once, which must answer with keys, and keeps
// it fresh in the background until stop.
//
// keyfunc reads keys from the set as last fetched and never fetches on its
// own; a token whose kid the set lacks goes through fetchForUnknownKID,
// which decides without waiting whether a fetch may happen now.
func (a *tokenAuth) loadJWKS(cfg Config, log *slog.Logger) error {
	timing := cfg.JWKS
	ctx, cancel := context.WithCancel(context.Background())
	// Its own transport, so stop can close its idle connections.
	a.jwksHTTP = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}, Timeout: timing.FetchTimeout}
	fail := func(err error) error {
		cancel()
		a.jwksHTTP.CloseIdleConnections()
		return err
	}
	store, err := jwkset.NewStorageFromHTTP(cfg.JWTJWKSURL, jwkset.HTTPClientStorageOptions{
		Client:          a.jwksHTTP,
		Ctx:             ctx,
		HTTPTimeout:     timing.FetchTimeout,
		RefreshInterval: timing.RefreshInterval,
		RefreshErrorHandler: func(_ context.Context, err error) {
			log.Warn("JWK Set refresh failed; keeping the keys we have", "url", cfg.JWTJWKSURL, "err", oneLine(err))
		},
		// NoErrorReturnFirstHTTPReq false: a set that cannot be fetched
		// at start is an error.
	})
	if err != nil {
		return fail(err)
	}
	keys, err := store.KeyReadAll(ctx)
	if err == nil && len(keys) == 0 {
		err = errors.New("the key set holds no usable key")
	}
	if err != nil {
		return fail(err)
	}
	// The refresher is the same store behind a client that fetches again
	// when asked for an unknown kid; its own limiter lets every such ask
	// through, because ours (unknownKID) has already decided.
	refresher, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs:          map[string]jwkset.Storage{cfg.JWTJWKSURL: store},
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
		RateLimitWaitMax:  timing.FetchTimeout,
	})
	if err != nil {
		return fail(err)
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: store})
	if err != nil {
		return fail(err)
	}
	a.jwks, a.jwksStore, a.jwksRefresher, a.stopJWKS = kf, store, refresher, cancel
	a.unknownKID = rate.NewLimiter(rate.Every(timing.UnknownKIDEvery), 1)
	a.fetchTimeout = timing.FetchTimeout
	return nil
}

// fetchForUnknownKID fetches the key set again for a kid it lacks, at most
// once per UnknownKIDEvery: a flood of made-up kids costs the provider one
// fetch, and each of those tokens is refused at once rather than waiting
// for the limit. Handshakes that arrive while a fetch is on its way wait
// for that one fetch (a rotation seen by many clients at once).
func (a *tokenAuth) fetchForUnknownKID(kid string) {
	_, _, _ = a.fetching.Do("fetch", func() (any, error) {
		if !a.unknownKID.Allow() {
			return nil, nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.fetchTimeout)
		defer cancel()
		_, err := a.jwksRefresher.KeyRead(ctx, kid)
		return nil, err
	})
}

// readPublicKey loads a PEM public key (or certificate) and says which
// algorithms it verifies.
func readPublicKey(path string) (any, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, nil, errors.New("no PEM block in the file")
	}
	var key any
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		return nil, nil, fmt.Errorf("PEM block %q is not a public key", block.Type)
	}
	if err != nil {
		return nil, nil, err
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		return k, rsaMethods, nil
	case ed25519.PublicKey:
		return k, ed25519Methods, nil
	case *ecdsa.PublicKey:
		// Each ES algorithm goes with one curve.
		switch k.Curve {
		case elliptic.P256():
			return k, []string{"ES256"}, nil
		case elliptic.P384():
			return k, []string{"ES384"}, nil
		case elliptic.P521():
			return k, []string{"ES512"}, nil
		}
		return nil, nil, fmt.Errorf("ECDSA curve %s has no JWT algorithm", k.Curve.Params().Name)
	}
	return nil, nil, fmt.Errorf("unsupported key type %T (want RSA, ECDSA or Ed25519)", key)
}

// key picks the key a token is checked with. The parser has already
// refused every algorithm no configured key verifies.
func (a *tokenAuth) key(t *jwt.Token) (any, error) {
	if _, hmac := t.Method.(*jwt.SigningMethodHMAC); hmac {
		return a.secret, nil // HS* is accepted only with a secret set
	}
	_, hasKID := t.Header["kid"]
	if a.publicKey != nil && (!hasKID || a.jwks == nil) {
		return a.publicKey, nil
	}
	if a.jwks != nil {
		if kid, ok := t.Header["kid"].(string); ok {
			if _, err := a.jwksStore.KeyRead(context.Background(), kid); errors.Is(err, jwkset.ErrKeyNotFound) {
				a.fetchForUnknownKID(kid)
			}
		}
		return a.jwks.Keyfunc(t)
	}
	return nil, errors.New("no key for this algorithm")
}

// verify checks a token and reads its identity; problem is the refusal
// reason of PROTOCOL.md.
func (a *tokenAuth) verify(token string) (identity, string) {
	if token == "" {
		return identity{}, reasonTokenMissing
	}
	var claims tokenClaims
	_, err := a.parser.ParseWithClaims(token, &claims, a.key)
	for _, date := range []*jwt.NumericDate{claims.ExpiresAt, claims.NotBefore} {
		if date != nil && (date.Year() < 1970 || date.Year() > 9999) {
			return identity{}, reasonTokenInvalid // nonsense, and not writable as RFC 3339
		}
	}
	switch {
	case errors.Is(err, jwt.ErrTokenExpired): // only ever said of a good signature
		return identity{}, reasonTokenExpired
	case err != nil:
		return identity{}, reasonTokenInvalid
	case !validUID(claims.Subject):
		return identity{}, reasonTokenInvalid
	}
	id := identity{uid: claims.Subject, rooms: claims.Rooms}
	if claims.ExpiresAt != nil {
		id.expires = claims.ExpiresAt.Time
	}
	return id, ""
}

func (a *tokenAuth) identify(header http.Header, query url.Values) (identity, string) {
	return a.verify(bearerToken(header, query))
}

func (a *tokenAuth) refresh(token string) (identity, string) {
	return a.verify(strings.TrimSpace(token))
}

func (a *tokenAuth) describe() (string, bool) { return a.summary, false }

func (a *tokenAuth) stop() {
	if a.stopJWKS != nil {
		a.stopJWKS()
		a.jwksHTTP.CloseIdleConnections()
	}
}

// oneLine joins a multi-line error (errors.Join) into one line, for the
// one-line start-up errors.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}
