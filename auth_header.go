package main

import (
	"net/http"
	"net/url"
)

// headerAuth is development mode: the client says who it is with the uid
// header or ?uid=, and is believed. It is what you want on a laptop and
// nowhere else; the server says so at start.
type headerAuth struct{}

func (headerAuth) identify(header http.Header, query url.Values) (identity, string) {
	uid := firstNonEmpty(header.Get("uid"), query.Get("uid"))
	switch {
	case uid == "":
		return identity{}, reasonUIDMissing
	case !validUID(uid):
		return identity{}, reasonUIDInvalid
	}
	return identity{uid: uid}, ""
}

func (headerAuth) refresh(string) (identity, string) { return identity{}, reasonNoTokens }

func (headerAuth) describe() (string, bool) {
	return "development mode: clients choose their own uid (set -jwt-secret, -jwt-public-key or -jwt-jwks-url for token mode)", true
}

func (headerAuth) stop() {}
