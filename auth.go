package main

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// authenticator decides who a connecting client is. There are two: the
// development mode that trusts the uid it is given (auth_header.go) and
// token mode, where a JWT proves it (auth_token.go). The factory and the
// sessions never ask which one they have.
type authenticator interface {
	// identify reads the client's identity from an upgrade request.
	// problem is a close reason of PROTOCOL.md when it has none.
	identify(header http.Header, query url.Values) (id identity, problem string)
	// refresh checks a fresher token sent by a live session; problem is
	// the error message to answer with when it is not usable.
	refresh(token string) (id identity, problem string)
	// describe is one line for the start-up log.
	describe() (msg string, warn bool)
	// stop ends background work (key set refreshes).
	stop()
}

// identity is who a session belongs to and what it may do.
type identity struct {
	uid string
	// rooms lists the rooms the session may join; nil means any room.
	rooms []string
	// expires ends the session's right to stay; zero means never.
	expires time.Time
}

// mayJoin reports whether the identity allows room.
func (id identity) mayJoin(room string) bool {
	return id.rooms == nil || slices.Contains(id.rooms, room)
}

// Refusal reasons of PROTOCOL.md (Connecting, Tokens), word for word.
const (
	reasonUIDMissing    = "uid is missing"
	reasonUIDInvalid    = "uid is invalid"
	reasonRoomInvalid   = "room is invalid"
	reasonRoomForbidden = "room is forbidden"
	reasonTokenMissing  = "token is missing"
	reasonTokenInvalid  = "token is invalid"
	reasonTokenExpired  = "token expired"
	reasonOtherUID      = "token is for another uid"
	reasonNoTokens      = "tokens are not enabled"
	reasonSinceInvalid  = "since is invalid"
)

// bearerToken is the token of a request: the Authorization header's Bearer
// credentials, else the token query parameter (browsers cannot set
// headers). The scheme is matched without regard to case (RFC 7235).
func bearerToken(header http.Header, query url.Values) string {
	if scheme, credentials, ok := strings.Cut(header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		if token := strings.TrimSpace(credentials); token != "" {
			return token
		}
	}
	return strings.TrimSpace(query.Get("token"))
}

// formatExpiry is how PROTOCOL.md writes an expiry: RFC 3339 in UTC, empty
// for none.
func formatExpiry(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
