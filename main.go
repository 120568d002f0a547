// Command switchboard is a WebSocket chat and broadcast server. See
// README.md for how to run it and ../shared/PROTOCOL.md for the wire contract.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "token" {
		os.Exit(tokenCommand(os.Args[2:], os.Getenv, os.Stdout, os.Stderr))
	}
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "switchboard:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sb, err := newSwitchboard(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "switchboard:", err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "switchboard: cannot listen on -addr %s: %v\n", cfg.Addr, err)
		os.Exit(1)
	}
	if files, err := raiseFileLimit(); err != nil {
		log.Warn("open-file limit", "err", err)
	} else {
		// A few descriptors go to the listener, logs and the runtime.
		log.Info("connection ceiling", "open_files", files, "max_conns", min(int64(files)-64, cfg.MaxConns))
	}
	if err := sb.serve(ctx, ln); err != nil {
		log.Error("switchboard stopped", "err", err)
		os.Exit(1)
	}
}

// switchboard is one server: the hub, the session factory and the HTTP
// routes in front of them, and in cluster mode the link to the broker.
type switchboard struct {
	cfg     Config
	log     *slog.Logger
	hub     *WebSocketServer
	factory *SessionFactory
	auth    authenticator
	cluster *clusterLink // nil on a single node
	cert    *certificate // nil without -tls-cert
	handler http.Handler
}

// newSwitchboard builds a server; with -nats it also joins the cluster,
// which fails when the broker cannot be reached or the node id is taken.
func newSwitchboard(ctx context.Context, cfg Config, log *slog.Logger) (*switchboard, error) {
	var cert *certificate
	if cfg.TLSCert != "" {
		c, err := loadCertificate(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, err
		}
		cert = c
	}
	auth, err := newAuthenticator(cfg, log)
	if err != nil {
		return nil, err
	}
	m := newMetrics()
	hub := NewWebSocketServer(m, newHistory(cfg.HistorySize, cfg.HistoryTTL, cfg.HistoryMaxBytes))
	var link *clusterLink
	if cfg.NATSURL != "" {
		if link, err = connectCluster(ctx, cfg, hub, m, log); err != nil {
			auth.stop()
			return nil, err
		}
		hub.broker = link
	}
	factory := NewSessionFactory(hub, auth, cfg, m, log)
	if link != nil {
		factory.settle = func(ctx context.Context) {
			ctx, cancel := context.WithTimeout(ctx, settleTimeout)
			defer cancel()
			link.settle(ctx)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /ws", factory)
	mux.Handle("GET /ws/{room}", factory)
	mux.HandleFunc("GET /sse", factory.serveSSE)
	mux.HandleFunc("GET /sse/{room}", factory.serveSSE)
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	(&api{hub: hub, cluster: link, apiKey: cfg.APIKey, maxMessageBytes: cfg.MaxMessageBytes}).routes(mux)
	registerWebRoutes(mux)
	return &switchboard{cfg: cfg, log: log, hub: hub, factory: factory, auth: auth, cluster: link, cert: cert, handler: mux}, nil
}

// fillTimeout bounds how long a starting cluster node reads the stream
// into its history before it listens anyway.
const fillTimeout = time.Minute

// waitFilled waits until a cluster node's history holds what the stream
// held at start (a single node has nothing to wait for).
func (sb *switchboard) waitFilled(ctx context.Context) error {
	if sb.cluster == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, fillTimeout)
	defer cancel()
	return sb.cluster.filled(ctx)
}

// settleTimeout bounds how long a stopping cluster node waits for its own
// messages to come back from the broker before closing its sessions.
const settleTimeout = 2 * time.Second

// listen serves HTTP on ln, or HTTPS (HTTP/2 and HTTP/1.1) with -tls-cert.
func (sb *switchboard) listen(srv *http.Server, ln net.Listener) error {
	if sb.cert != nil {
		return srv.ServeTLS(ln, "", "") // the certificate comes from srv.TLSConfig
	}
	return srv.Serve(ln)
}

// serve runs the hub and the HTTP server on ln until ctx ends, then shuts
// down within -shutdown-timeout: stop accepting, stop the hub taking new
// traffic, let every session flush its queue and close with 1001, then stop
// the hub.
func (sb *switchboard) serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           sb.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(sb.log.Handler(), slog.LevelDebug),
	}
	defer sb.auth.stop()
	if msg, warn := sb.auth.describe(); warn {
		sb.log.Warn(msg)
	} else {
		sb.log.Info(msg)
	}
	hubCtx, stopHub := context.WithCancel(context.Background())
	defer stopHub()
	clusterCtx, stopCluster := context.WithCancel(context.Background())
	defer stopCluster()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sb.hub.Run(hubCtx) })
	if sb.cluster != nil {
		g.Go(func() error { return sb.cluster.Run(clusterCtx) })
	}
	if sb.cfg.PprofAddr != "" {
		g.Go(func() error { return servePprof(gctx, sb.cfg.PprofAddr, sb.log) })
	}
	if sb.cert != nil {
		srv.TLSConfig = sb.cert.tlsConfig()
		g.Go(func() error { sb.cert.reloadOnHangup(gctx, sb.log); return nil })
	}
	g.Go(func() error {
		if err := sb.waitFilled(gctx); err != nil {
			sb.log.Warn("listening before the history is filled from the stream", "err", err)
		}
		sb.log.Info("switchboard listening", "addr", ln.Addr().String(), "tls", sb.cert != nil)
		if err := sb.listen(srv, ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sb.log.Info("shutting down", "timeout", sb.cfg.ShutdownTimeout)
		deadline, cancel := context.WithTimeout(context.Background(), sb.cfg.ShutdownTimeout)
		defer cancel()
		if sb.cluster != nil {
			// First, so the other nodes see this node's uids leave at
			// once rather than one by one as the sessions close.
			sb.cluster.goodbye(time.Second)
		}
		// Plain HTTP requests and WebSocket sessions wind down side by
		// side, so a slow request cannot eat the sessions' time.
		var parts errgroup.Group
		parts.Go(func() error { return srv.Shutdown(deadline) })
		parts.Go(func() error { return sb.factory.Shutdown(deadline) })
		if err := parts.Wait(); err != nil {
			sb.log.Warn("shutdown incomplete", "err", err)
		}
		stopCluster()
		stopHub()
		sb.log.Info("shutdown complete")
		return nil
	})
	return g.Wait()
}
