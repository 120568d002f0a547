package main

import (
	"net/http"
)

// Server-Sent Events: GET /sse/{room} (or /sse?room=) is a listen-only
// session. Identity and room are read exactly as for /ws; a refusal comes
// before the stream starts, as an HTTP status with the JSON error body and
// the reason words of the WebSocket closes. Once streaming, the session is
// like any other (presence, -max-conns, metrics, the byte-capped queue,
// batching, history recovery from Last-Event-ID or ?since=), on an
// sseTransport.

// sseRefusalStatus is the HTTP status of a refusal reason.
func sseRefusalStatus(reason string) int {
	switch reason {
	case reasonTokenMissing, reasonTokenInvalid, reasonTokenExpired, reasonUIDMissing:
		return http.StatusUnauthorized
	case reasonRoomForbidden:
		return http.StatusForbidden
	default: // uid is invalid, room is invalid, since is invalid
		return http.StatusBadRequest
	}
}

// serveSSE admits one stream and runs its session until it ends.
func (f *SessionFactory) serveSSE(w http.ResponseWriter, r *http.Request) {
	if refusal := f.enter(); refusal != "" {
		writeJSONError(w, http.StatusServiceUnavailable, refusal)
		return
	}
	defer f.leave()
	id, room, recover, problem := f.identify(r, true, true)
	if problem != "" {
		writeJSONError(w, sseRefusalStatus(problem), problem)
		return
	}
	header := w.Header()
	header.Set("Content-Type", "text/event-stream")
	header.Set("Cache-Control", "no-cache")
	header.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if err := http.NewResponseController(w).Flush(); err != nil {
		return
	}
	s := f.newSession(newSSETransport(w, r, f.cfg.WriteTimeout), modeJSON, id, room)
	s.debug("event stream started")
	s.Run(f.shutdown, recover)
}
