package main

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// api serves /api/* and /healthcheck. Every /api answer is JSON, errors
// included, so scripts never have to parse prose.
type api struct {
	hub             *WebSocketServer
	cluster         *clusterLink // nil on a single node
	apiKey          string
	maxMessageBytes int64
}

const (
	// healthTimeout bounds how long /healthcheck waits for the hub loop.
	healthTimeout = time.Second
	// bodyReadTimeout bounds how long a publish body may take to arrive.
	bodyReadTimeout = 10 * time.Second
)

func (a *api) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthcheck", a.healthcheck)
	mux.Handle("POST /api/rooms/{room}/messages", a.guard(a.publish))
	mux.Handle("GET /api/rooms", a.guard(a.listRooms))
	mux.Handle("GET /api/rooms/{room}/presence", a.guard(a.presence))
	mux.Handle("GET /api/rooms/{room}/history", a.guard(a.roomHistory))
	mux.Handle("POST /api/users/{uid}/disconnect", a.guard(a.disconnect))
	mux.Handle("/api/", a.guard(func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path)
	}))
}

func (a *api) healthcheck(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	reply := make(chan struct{}, 1)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if _, err := ask(ctx, a.hub, HealthPing{Reply: reply}, reply); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("hub not answering"))
		return
	}
	if a.cluster != nil && !a.cluster.available() {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("cluster unavailable"))
		return
	}
	w.Write([]byte("switchboard is live"))
}

// guard admits a request that carries the API key, or, when no key is
// configured, one from a loopback peer.
func (a *api) guard(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.apiKey == "" {
			if proxied(r) {
				writeJSONError(w, http.StatusForbidden, "the API answers loopback peers only unless -api-key is set, and this request came through a proxy")
				return
			}
			if !isLoopback(r.RemoteAddr) {
				writeJSONError(w, http.StatusForbidden, "the API answers loopback peers only unless -api-key is set")
				return
			}
			next(w, r)
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(a.apiKey)) != 1 {
			writeJSONError(w, http.StatusUnauthorized, "missing or wrong API key")
			return
		}
		next(w, r)
	})
}

// proxied reports whether a request says it was forwarded by a proxy. A
// reverse proxy on the same host connects from loopback, so without this
// it would open a key-less API to whoever the proxy serves.
func proxied(r *http.Request) bool {
	for _, name := range []string{"Forwarded", "X-Forwarded-For", "X-Real-Ip"} {
		if _, ok := r.Header[name]; ok {
			return true
		}
	}
	return false
}

func isLoopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// publishBody is the body of POST /api/rooms/{room}/messages.
type publishBody struct {
	Text *string         `json:"text"`
	Data json.RawMessage `json:"data"`
}

// publishAnswer and presenceAnswer keep PROTOCOL.md's field order.
type publishAnswer struct {
	Room       string `json:"room"`
	Recipients int    `json:"recipients"`
}

type presenceAnswer struct {
	Room   string   `json:"room"`
	Online []string `json:"online"`
}

func (a *api) publish(w http.ResponseWriter, r *http.Request) {
	roomName := r.PathValue("room")
	if !validRoom(roomName) {
		writeJSONError(w, http.StatusBadRequest, "room is invalid")
		return
	}
	cmd, status, problem := a.readPublish(w, r)
	if problem != "" {
		writeJSONError(w, status, problem)
		return
	}
	cmd.Room = roomName
	cmd.Reply = make(chan PublishResult, 1)
	result, err := ask(r.Context(), a.hub, cmd, cmd.Reply)
	if err == nil {
		err = result.Err
	}
	if errors.Is(err, errClusterUnavailable) {
		writeJSONError(w, http.StatusServiceUnavailable, errClusterUnavailable.Error())
		return
	}
	if err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, errShuttingDown.Error())
		return
	}
	writeJSON(w, http.StatusOK, publishAnswer{Room: roomName, Recipients: result.Recipients})
}

// readPublish decodes and checks a publish body; problem is the error to
// answer with when it is not usable.
func (a *api) readPublish(w http.ResponseWriter, r *http.Request) (cmd Publish, status int, problem string) {
	// A client that sends its body slowly must not hold the handler (nor a
	// graceful shutdown) for long.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyReadTimeout))
	var body publishBody
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, a.maxMessageBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return cmd, http.StatusRequestEntityTooLarge, "body is larger than -max-message-bytes"
		}
		return cmd, http.StatusBadRequest, "body must be a JSON object with \"text\" or \"data\": " + err.Error()
	}
	if dec.More() {
		return cmd, http.StatusBadRequest, "body must be one JSON object"
	}
	hasData := len(body.Data) > 0 && !bytes.Equal(body.Data, []byte("null"))
	switch {
	case body.Text != nil && hasData:
		return cmd, http.StatusBadRequest, "give \"text\" or \"data\", not both"
	case body.Text != nil && *body.Text == "":
		return cmd, http.StatusBadRequest, "\"text\" is empty"
	case body.Text != nil:
		cmd.Text = *body.Text
	case hasData:
		compact, err := compactJSON(body.Data)
		if err != nil || !utf8.Valid(compact) {
			return cmd, http.StatusBadRequest, "\"data\" is not valid JSON in UTF-8"
		}
		cmd.Data = compact
	default:
		return cmd, http.StatusBadRequest, "body needs \"text\" or \"data\""
	}
	return cmd, 0, ""
}

func (a *api) listRooms(w http.ResponseWriter, r *http.Request) {
	reply := make(chan []RoomSummary, 1)
	rooms, err := ask(r.Context(), a.hub, ListRooms{Reply: reply}, reply)
	if err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, "server shutting down")
		return
	}
	writeJSON(w, http.StatusOK, rooms)
}

func (a *api) presence(w http.ResponseWriter, r *http.Request) {
	roomName := r.PathValue("room")
	if !validRoom(roomName) {
		writeJSONError(w, http.StatusBadRequest, "room is invalid")
		return
	}
	reply := make(chan []string, 1)
	online, err := ask(r.Context(), a.hub, RoomPresence{Room: roomName, Reply: reply}, reply)
	if err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, "server shutting down")
		return
	}
	writeJSON(w, http.StatusOK, presenceAnswer{Room: roomName, Online: online})
}

// roomHistory answers the room's kept events (History): the last ?limit=
// of them, or with ?since= the first ?limit= after it and whether that is
// everything after it. The events are JSON mode's objects, written as the
// hub holds them.
func (a *api) roomHistory(w http.ResponseWriter, r *http.Request) {
	roomName := r.PathValue("room")
	if !validRoom(roomName) {
		writeJSONError(w, http.StatusBadRequest, reasonRoomInvalid)
		return
	}
	query := r.URL.Query()
	limit, ok := parseLimit(query.Get("limit"), true)
	if !ok {
		writeJSONError(w, http.StatusBadRequest, "limit must be a positive integer")
		return
	}
	recover, problem := readSince(query.Get("since"))
	if problem != "" {
		writeJSONError(w, http.StatusBadRequest, "since must be a non-negative integer")
		return
	}
	if recover.asked {
		a.hub.broker.reach(r.Context(), recover.since) // as a recovering session does
	}
	reply := make(chan RoomHistoryAnswer, 1)
	answer, err := ask(r.Context(), a.hub, RoomHistory{Room: roomName, Limit: limit, Recover: recover, Reply: reply}, reply)
	if err != nil {
		writeJSONError(w, http.StatusServiceUnavailable, errShuttingDown.Error())
		return
	}
	body := make([]byte, 0, historySize(roomName, answer.Frames))
	body = append(append(append(body, `{"room":"`...), roomName...), `",`...)
	body = appendMessages(body, answer.Frames)
	if recover.asked {
		body = strconv.AppendBool(append(body, `,"recovered":`...), answer.Recovered)
	}
	body = append(body, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// disconnectAnswer keeps PROTOCOL.md's field order.
type disconnectAnswer struct {
	UID      string `json:"uid"`
	Sessions int    `json:"sessions"`
}

// disconnect puts a uid out: every session of it, on every node, is closed
// with 1008 "disconnected by the server".
func (a *api) disconnect(w http.ResponseWriter, r *http.Request) {
	uid := r.PathValue("uid")
	if !validUID(uid) {
		writeJSONError(w, http.StatusBadRequest, reasonUIDInvalid)
		return
	}
	reply := make(chan PublishResult, 1)
	result, err := ask(r.Context(), a.hub, DisconnectUser{UID: uid, Reply: reply}, reply)
	if err == nil {
		err = result.Err
	}
	switch {
	case errors.Is(err, errClusterUnavailable):
		writeJSONError(w, http.StatusServiceUnavailable, errClusterUnavailable.Error())
	case err != nil:
		writeJSONError(w, http.StatusServiceUnavailable, errShuttingDown.Error())
	default:
		writeJSON(w, http.StatusOK, disconnectAnswer{UID: uid, Sessions: result.Recipients})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeJSONError(w http.ResponseWriter, status int, message string) {
	writeJSON(w, status, map[string]string{"error": message})
}
