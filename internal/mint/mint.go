// Package mint makes HS256 tokens of the shape switchboard's token mode
// reads (PROTOCOL.md, Tokens). It is what `switchboard token`, the tests and
// the load tool use, so a token minted by hand and one minted by a test are
// the same thing.
package mint

import (
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are the claims switchboard reads: the registered ones (sub, exp,
// nbf, aud, iss) and rooms, the rooms the token may join.
type Claims struct {
	jwt.RegisteredClaims
	// Rooms limits the rooms the token may join; nil means any room. It is
	// omitted from the token when nil.
	Rooms []string `json:"rooms,omitempty"`
}

// Options describe one token. A zero TTL means no exp claim.
type Options struct {
	Subject  string
	TTL      time.Duration
	Rooms    []string
	Audience string
	Issuer   string
	Now      time.Time // zero = time.Now()
}

// HS256 signs a token for o with secret.
func HS256(secret []byte, o Options) (string, error) {
	if len(secret) == 0 {
		return "", fmt.Errorf("mint: empty secret")
	}
	claims := o.Claims()
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("mint: sign for %q: %w", o.Subject, err)
	}
	return signed, nil
}

// Claims builds the claims of o, for callers that sign with another method.
func (o Options) Claims() Claims {
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: o.Subject, IssuedAt: jwt.NewNumericDate(now), Issuer: o.Issuer},
		Rooms:            o.Rooms,
	}
	if o.TTL != 0 {
		c.ExpiresAt = jwt.NewNumericDate(now.Add(o.TTL))
	}
	if o.Audience != "" {
		c.Audience = jwt.ClaimStrings{o.Audience}
	}
	return c
}
