package main

import (
	"net/http"
	"sync"
	"time"

	"github.com/switchboard/switchboard/internal/mint"
)

// bearerTokens is the token mode of the switchboard targets (-token-secret):
// a connection proves its uid with an HS256 JWT whose sub is the uid, sent
// as "Authorization: Bearer <token>" instead of the uid header.
//
// HMAC signing costs the generator a few microseconds per token, which at
// tens of thousands of handshakes would be charged to the server's
// handshake rate. So dialMany mints every uid's token (prepare) before it
// starts its clock, and a dial only looks its token up (identify).
type bearerTokens struct {
	secret []byte
	ttl    time.Duration // 0: no exp claim

	mu    sync.RWMutex
	byUID map[string]string
	// misses counts dials that found no token minted up front and had to
	// mint one during the dial phase; it stays 0 when dialMany prepares.
	misses int
}

func newBearerTokens(secret string, ttl time.Duration) *bearerTokens {
	return &bearerTokens{secret: []byte(secret), ttl: ttl, byUID: map[string]string{}}
}

// prepare signs a fresh token for every distinct uid, replacing older
// ones, so a token's exp counts from just before the dial phase that uses
// it (a ladder dials once a step, possibly for longer than one TTL in
// all). Without token mode (b nil) it does nothing.
func (b *bearerTokens) prepare(uids []string) error {
	if b == nil {
		return nil
	}
	fresh := map[string]string{}
	now := time.Now()
	for _, uid := range uids {
		if _, ok := fresh[uid]; ok {
			continue
		}
		tok, err := mint.HS256(b.secret, mint.Options{Subject: uid, TTL: b.ttl, Now: now})
		if err != nil {
			return err
		}
		fresh[uid] = tok
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for uid, tok := range fresh {
		b.byUID[uid] = tok
	}
	return nil
}

// token returns uid's token, minting it now on a miss (a dial prepare was
// not told about; dialMany always tells it).
func (b *bearerTokens) token(uid string) (string, error) {
	b.mu.RLock()
	tok, ok := b.byUID[uid]
	b.mu.RUnlock()
	if ok {
		return tok, nil
	}
	b.mu.Lock()
	b.misses++
	b.mu.Unlock()
	if err := b.prepare([]string{uid}); err != nil {
		return "", err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.byUID[uid], nil
}

// identify is the handshake header that names uid: the uid header without
// token mode (b nil), the bearer token with it. A token that cannot be
// minted (only an empty secret, which -token-secret never gives) leaves
// the header empty, so the server refuses the dial and the run shows it.
func (b *bearerTokens) identify(uid string) http.Header {
	if b == nil {
		return http.Header{"Uid": []string{uid}}
	}
	tok, err := b.token(uid)
	if err != nil {
		return http.Header{}
	}
	return http.Header{"Authorization": []string{"Bearer " + tok}}
}

// tokenTarget is a Target with a token mode; withTokens returns it
// proving uids with tokens from b.
type tokenTarget interface {
	Target
	withTokens(b *bearerTokens) Target
}

// tokenMinter is a Target that wants its tokens minted before a dial
// phase; dialMany calls mintTokens with every uid it is about to dial.
type tokenMinter interface {
	mintTokens(uids []string) error
}
