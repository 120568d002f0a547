package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

// TLS without a proxy in front (-tls-cert, -tls-key). The certificate is
// read at start, where a bad file is a startup error, and again on
// SIGHUP, where a bad file keeps the one in use: rotating a certificate
// must never take a running server down. Connections already open keep
// the certificate they were made with; new handshakes get the new one.

// certificate holds the key pair that new TLS handshakes are served with.
type certificate struct {
	certFile, keyFile string
	current           atomic.Pointer[tls.Certificate]
	// hangups receives SIGHUP from the moment the certificate is first
	// loaded to the process's end, so a SIGHUP (a renewal job) never
	// kills a TLS server, not while it starts nor while it drains.
	hangups chan os.Signal
}

// loadCertificate reads the pair once; the error names both flags, since
// a mismatch between them is as likely as a bad path.
func loadCertificate(certFile, keyFile string) (*certificate, error) {
	c := &certificate{certFile: certFile, keyFile: keyFile, hangups: make(chan os.Signal, 1)}
	if err := c.reload(); err != nil {
		return nil, err
	}
	signal.Notify(c.hangups, syscall.SIGHUP)
	return c, nil
}

// reload reads the files again and, if they make a key pair, serves it
// from the next handshake on.
func (c *certificate) reload() error {
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("cannot load -tls-cert %s and -tls-key %s: %w", c.certFile, c.keyFile, err)
	}
	c.current.Store(&pair)
	return nil
}

// get is tls.Config.GetCertificate: the pair of the moment.
func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.current.Load(), nil
}

// tlsConfig is what the HTTP server serves with. h2 is offered for the
// API, SSE and the page; WebSockets stay HTTP/1.1 upgrades, because
// net/http does not offer WebSockets over HTTP/2 (RFC 8441) unless asked
// to, so browsers open an HTTP/1.1 connection for them, as they do
// everywhere.
func (c *certificate) tlsConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: c.get,
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// reloadOnHangup re-reads the certificate on every SIGHUP until ctx ends;
// later ones wait in hangups, unheeded, and do no harm.
func (c *certificate) reloadOnHangup(ctx context.Context, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.hangups:
			if err := c.reload(); err != nil {
				log.Error("SIGHUP: certificate not reloaded; the previous one stays in use", "err", err)
				continue
			}
			log.Info("SIGHUP: certificate reloaded", "cert", c.certFile)
		}
	}
}
