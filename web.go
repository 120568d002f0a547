package main

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"time"
)

// webFiles is the browser chat client: plain HTML, CSS and JavaScript that
// speak the JSON subprotocol to /ws/{room} on the same origin.
//
//go:embed web
var webFiles embed.FS

// webAsset is one embedded file, ready to serve.
type webAsset struct {
	name string
	data []byte
	etag string
}

// registerWebRoutes serves the chat page at exactly "/" and its files at
// /web/{file}. Every other path stays unrouted here (404).
func registerWebRoutes(mux *http.ServeMux) {
	assets := map[string]*webAsset{}
	err := fs.WalkDir(webFiles, "web", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := webFiles.ReadFile(name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		base := path.Base(name)
		assets[base] = &webAsset{name: base, data: data, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil || assets["index.html"] == nil {
		// The files are compiled in; this only fails if the build is broken.
		panic("web client files missing from the binary")
	}
	mux.Handle("GET /{$}", assets["index.html"])
	mux.HandleFunc("GET /web/{file}", func(w http.ResponseWriter, r *http.Request) {
		a := assets[r.PathValue("file")]
		if a == nil || a.name == "index.html" {
			http.NotFound(w, r)
			return
		}
		a.ServeHTTP(w, r)
	})
}

// ServeHTTP answers with the file, revalidated by ETag on every load so a
// new server version is picked up at once.
func (a *webAsset) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	if a.name == "index.html" {
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'")
		h.Set("Referrer-Policy", "no-referrer")
	}
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.data))
}
