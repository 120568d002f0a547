package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"path"
	"strings"
	"time"
)

// Config holds every option of the server. Each one is a flag with an
// environment-variable twin; the flag wins when both are given.
type Config struct {
	Addr            string
	PingInterval    time.Duration
	PongTimeout     time.Duration
	WriteTimeout    time.Duration
	BatchWindow     time.Duration
	MaxMessageBytes int64
	MaxQueueBytes   int64
	Rate            float64
	MaxConns        int64
	APIKey          string
	AllowedOrigins  []string
	ShutdownTimeout time.Duration
	PprofAddr       string // empty = no profiler
	LogLevel        slog.Level

	// TLS (tls.go): both files or neither; with them -addr serves HTTPS
	// and WSS.
	TLSCert string
	TLSKey  string

	// Compression turns on permessage-deflate for clients that offer it
	// (compression.go).
	Compression bool

	// History (history.go): per room, by age, over all rooms.
	HistorySize     int
	HistoryTTL      time.Duration
	HistoryMaxBytes int64

	// Token mode (auth_token.go): any key option set turns it on.
	JWTSecret    string
	JWTPublicKey string // PEM file
	JWTJWKSURL   string
	JWTAudience  string
	JWTIssuer    string
	JWKS         jwksTiming

	// Cluster mode; NATSURL empty means a single node.
	NATSURL        string
	NodeID         string
	StreamMaxAge   time.Duration
	StreamMaxBytes int64
	StreamStorage  string // "memory" or "file"
	// PresenceHeartbeat is how often a node tells the others it is alive;
	// PresenceExpiry is the silence after which they take it for dead and
	// its uids leave. Not flags: PROTOCOL.md promises the bound (15 s),
	// and tests shorten them.
	PresenceHeartbeat time.Duration
	PresenceExpiry    time.Duration
	// StreamCheckInterval is how often a node looks at the stream even
	// when nothing seems wrong (a stream deleted or cut short by hand).
	StreamCheckInterval time.Duration
}

// defaultConfig is what `go run .` uses with no flags and no environment.
func defaultConfig() Config {
	return Config{
		Addr:            ":5000",
		PingInterval:    20 * time.Second,
		PongTimeout:     10 * time.Second,
		WriteTimeout:    10 * time.Second,
		BatchWindow:     5 * time.Millisecond,
		MaxMessageBytes: 65536,
		MaxQueueBytes:   1 << 20,
		Rate:            50,
		MaxConns:        100000,
		ShutdownTimeout: 10 * time.Second,
		LogLevel:        slog.LevelInfo,
		JWKS:            defaultJWKSTiming(),
		HistorySize:     100,
		HistoryTTL:      10 * time.Minute,
		HistoryMaxBytes: 64 << 20,

		StreamMaxAge:      time.Hour,
		StreamMaxBytes:    64 << 20,
		StreamStorage:     "memory",
		PresenceHeartbeat: 2 * time.Second,
		PresenceExpiry:    10 * time.Second,

		StreamCheckInterval: 2 * time.Second,
	}
}

// envPrefix turns a flag name into its environment twin: -max-conns is
// SWITCHBOARD_MAX_CONNS.
func envName(flagName string) string {
	if flagName == "nats" {
		return "SWITCHBOARD_NATS_URL" // PROTOCOL.md's name for it
	}
	return "SWITCHBOARD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseConfig reads args (without the program name) and the environment.
// Every error it returns is one line that names the flag at fault, because
// that is what an operator reads first when the process refuses to start.
// It returns flag.ErrHelp when -h or -help was asked for, after writing the
// usage to usage.
func parseConfig(args []string, getenv func(string) string, usage io.Writer) (Config, error) {
	cfg := defaultConfig()
	var origins string
	fs := flag.NewFlagSet("switchboard", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address")
	fs.DurationVar(&cfg.PingInterval, "ping-interval", cfg.PingInterval, "server ping period")
	fs.DurationVar(&cfg.PongTimeout, "pong-timeout", cfg.PongTimeout, "drop a connection that has not answered a ping by then")
	fs.DurationVar(&cfg.WriteTimeout, "write-timeout", cfg.WriteTimeout, "drop a connection whose single write takes longer")
	fs.DurationVar(&cfg.BatchWindow, "batch-window", cfg.BatchWindow, "least time between two writes to one client; events arriving meanwhile go out together in one write (0 = write at once)")
	fs.Int64Var(&cfg.MaxMessageBytes, "max-message-bytes", cfg.MaxMessageBytes, "largest client message (and HTTP publish body)")
	fs.Int64Var(&cfg.MaxQueueBytes, "max-queue-bytes", cfg.MaxQueueBytes, "outbound bytes a session may have queued before it is closed as a slow consumer")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "client messages per second per session, burst 2 x rate; 0 = unlimited")
	fs.Int64Var(&cfg.MaxConns, "max-conns", cfg.MaxConns, "concurrent WebSocket sessions")
	fs.StringVar(&cfg.APIKey, "api-key", cfg.APIKey, "bearer key for /api/*; empty = /api/* only from loopback peers")
	fs.StringVar(&origins, "allowed-origins", "", "extra Origin host patterns for browsers (comma list)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "graceful shutdown bound")
	fs.StringVar(&cfg.PprofAddr, "pprof", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060); empty = off")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate (chain) file: serve HTTPS and WSS on -addr; needs -tls-key; re-read on SIGHUP")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key file of -tls-cert")
	fs.BoolVar(&cfg.Compression, "compression", false, "negotiate permessage-deflate with clients that offer it (no context takeover; messages from 512 bytes)")
	fs.IntVar(&cfg.HistorySize, "history-size", cfg.HistorySize, "room messages and publishes kept per room for history and recovery; 0 = no history")
	fs.DurationVar(&cfg.HistoryTTL, "history-ttl", cfg.HistoryTTL, "how long each kept message is kept")
	fs.Int64Var(&cfg.HistoryMaxBytes, "history-max-bytes", cfg.HistoryMaxBytes, "bytes kept over all rooms together; past it the oldest go first")
	fs.StringVar(&cfg.JWTSecret, "jwt-secret", "", "token mode: HMAC key; tokens signed HS256, HS384 or HS512 with it are accepted")
	fs.StringVar(&cfg.JWTPublicKey, "jwt-public-key", "", "token mode: PEM file of an RSA, ECDSA or Ed25519 public key; tokens signed RS*/PS*, ES* or EdDSA with it are accepted")
	fs.StringVar(&cfg.JWTJWKSURL, "jwt-jwks-url", "", "token mode: JWK Set URL of an identity provider; tokens are checked against its keys, chosen by kid")
	fs.StringVar(&cfg.JWTAudience, "jwt-audience", "", "token mode: when set, a token's aud must contain it")
	fs.StringVar(&cfg.JWTIssuer, "jwt-issuer", "", "token mode: when set, a token's iss must equal it")
	fs.StringVar(&cfg.NATSURL, "nats", "", "NATS server URL(s), comma list, for cluster mode; empty = a single node")
	fs.StringVar(&cfg.NodeID, "node-id", "", "this node's name in the cluster (letters, digits, - and _); default: host name plus a random suffix")
	fs.DurationVar(&cfg.StreamMaxAge, "stream-max-age", cfg.StreamMaxAge, "cluster: drop stream messages older than this")
	fs.Int64Var(&cfg.StreamMaxBytes, "stream-max-bytes", cfg.StreamMaxBytes, "cluster: bytes the stream keeps before dropping its oldest messages")
	fs.StringVar(&cfg.StreamStorage, "stream-storage", cfg.StreamStorage, "cluster: stream storage, memory or file")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeUsage(fs, usage)
			return cfg, err
		}
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q (every option is a flag, see -h)", fs.Arg(0))
	}
	if err := applyEnv(fs, getenv); err != nil {
		return cfg, err
	}
	cfg.AllowedOrigins = splitList(origins)
	level, err := parseLogLevel(getenv("LOG_LEVEL"))
	if err != nil {
		return cfg, err
	}
	cfg.LogLevel = level
	if cfg.NodeID == "" {
		hostname, _ := os.Hostname()
		cfg.NodeID = defaultNodeID(hostname)
	}
	return cfg, validateConfig(cfg)
}

// applyEnv fills every flag that was not given on the command line from its
// environment twin, with the same parsing and the same error wording.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var firstErr error
	fs.VisitAll(func(f *flag.Flag) {
		value := getenv(envName(f.Name))
		if firstErr != nil || given[f.Name] || value == "" {
			return
		}
		if err := fs.Set(f.Name, value); err != nil {
			firstErr = fmt.Errorf("invalid value %q for flag -%s (from %s): %v", value, f.Name, envName(f.Name), err)
		}
	})
	return firstErr
}

func validateConfig(cfg Config) error {
	positive := []struct {
		name string
		ok   bool
	}{
		{"ping-interval", cfg.PingInterval > 0},
		{"pong-timeout", cfg.PongTimeout > 0},
		{"write-timeout", cfg.WriteTimeout > 0},
		{"max-message-bytes", cfg.MaxMessageBytes > 0},
		{"max-queue-bytes", cfg.MaxQueueBytes > 0},
		{"max-conns", cfg.MaxConns > 0},
		{"shutdown-timeout", cfg.ShutdownTimeout > 0},
		{"stream-max-age", cfg.StreamMaxAge > 0},
		{"stream-max-bytes", cfg.StreamMaxBytes > 0},
		{"history-ttl", cfg.HistoryTTL > 0},
		{"history-max-bytes", cfg.HistoryMaxBytes > 0},
	}
	for _, p := range positive {
		if !p.ok {
			return fmt.Errorf("invalid value for flag -%s: must be greater than zero", p.name)
		}
	}
	for _, b := range []struct {
		name  string
		value int64
	}{{"max-message-bytes", cfg.MaxMessageBytes}, {"max-queue-bytes", cfg.MaxQueueBytes}} {
		if b.value > maxByteLimit {
			return fmt.Errorf("invalid value %d for flag -%s: at most %d (1 GiB)", b.value, b.name, int64(maxByteLimit))
		}
	}
	if cfg.HistorySize < 0 || cfg.HistorySize > maxHistorySize {
		return fmt.Errorf("invalid value %d for flag -history-size: between 0 (no history) and %d", cfg.HistorySize, maxHistorySize)
	}
	if cfg.HistoryMaxBytes > maxHistoryBytes {
		return fmt.Errorf("invalid value %d for flag -history-max-bytes: at most %d (64 GiB)", cfg.HistoryMaxBytes, int64(maxHistoryBytes))
	}
	if cfg.BatchWindow < 0 || cfg.BatchWindow > time.Second {
		return fmt.Errorf("invalid value %v for flag -batch-window: must be between 0 and 1s", cfg.BatchWindow)
	}
	if cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0) {
		return fmt.Errorf("invalid value %v for flag -rate: must be zero (unlimited) or a positive number", cfg.Rate)
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return fmt.Errorf("invalid value %q for flag -addr: %v", cfg.Addr, err)
	}
	if cfg.PprofAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.PprofAddr); err != nil {
			return fmt.Errorf("invalid value %q for flag -pprof: %v", cfg.PprofAddr, err)
		}
	}
	if !validNodeID(cfg.NodeID) {
		return fmt.Errorf("invalid value %q for flag -node-id: 1-64 letters, digits, - or _", cfg.NodeID)
	}
	if cfg.StreamStorage != "memory" && cfg.StreamStorage != "file" {
		return fmt.Errorf("invalid value %q for flag -stream-storage: want memory or file", cfg.StreamStorage)
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return errors.New("flags -tls-cert and -tls-key go together: set both or neither")
	}
	if err := validateTokenFlags(cfg); err != nil {
		return err
	}
	for _, pattern := range cfg.AllowedOrigins {
		if _, err := path.Match(pattern, ""); err != nil {
			return fmt.Errorf("invalid value %q for flag -allowed-origins: pattern %q: %v", strings.Join(cfg.AllowedOrigins, ","), pattern, err)
		}
	}
	return nil
}

// validateTokenFlags checks the token options that can be checked without
// reading a file or the network (newAuthenticator does the rest).
func validateTokenFlags(cfg Config) error {
	if cfg.JWTJWKSURL != "" {
		u, err := url.Parse(cfg.JWTJWKSURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("invalid value %q for flag -jwt-jwks-url: want an http:// or https:// URL", cfg.JWTJWKSURL)
		}
	}
	if !tokenMode(cfg) {
		for _, f := range []struct{ name, value string }{{"jwt-audience", cfg.JWTAudience}, {"jwt-issuer", cfg.JWTIssuer}} {
			if f.value != "" {
				return fmt.Errorf("flag -%s needs token mode: set -jwt-secret, -jwt-public-key or -jwt-jwks-url", f.name)
			}
		}
	}
	return nil
}

// Bounds of the history options: a recovery replays up to -history-size
// events on the hub, so it stays modest; bytes are the operator's to
// spend.
const (
	maxHistorySize  = 100000
	maxHistoryBytes = 64 << 30
)

// maxByteLimit caps the byte options far below where arithmetic on them
// could overflow.
const maxByteLimit = 1 << 30

func parseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return slog.LevelInfo, fmt.Errorf("invalid value %q for LOG_LEVEL: want debug, info, warn or error", s)
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func writeUsage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintln(w, "usage: switchboard [flags]   (every flag also reads SWITCHBOARD_<NAME>, e.g. SWITCHBOARD_ADDR)")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}
