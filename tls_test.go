package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// testCert is a self-signed certificate for 127.0.0.1, its own root.
type testCert struct {
	cert            *x509.Certificate
	certPEM, keyPEM []byte
}

// newTestCert makes a certificate whose serial tells it apart.
func newTestCert(t *testing.T, serial int64) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "switchboard test"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testCert{
		cert:    cert,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
}

// write puts the pair where the server reads it, replacing the files in
// one rename each as a certificate tool would.
func (c testCert) write(t *testing.T, certFile, keyFile string) {
	t.Helper()
	for file, data := range map[string][]byte{certFile: c.certPEM, keyFile: c.keyPEM} {
		tmp := file + ".new"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
}

// trusting is a TLS client config that trusts the given certificates.
func trusting(certs ...testCert) *tls.Config {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c.cert)
	}
	return &tls.Config{RootCAs: pool}
}

// servedSerial makes a fresh TLS handshake and returns the serial of the
// certificate the server presented.
func servedSerial(t *testing.T, addr string, conf *tls.Config) int64 {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		t.Fatalf("tls dial: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// dialWSS opens a wss:// session (HTTP/1.1, as WebSocket upgrades are)
// and reads its welcome.
func dialWSS(t *testing.T, addr, uid string, conf *tls.Config) *testClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "wss://"+addr+"/ws", &websocket.DialOptions{
		HTTPHeader: http.Header{"uid": {uid}},
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: conf, DisableKeepAlives: true}},
	})
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	c := &testClient{t: t, conn: conn}
	c.expect("[server]: welcome UID " + uid + ", room lobby")
	return c
}

// With -tls-cert and -tls-key the one address serves WSS and HTTPS, the
// API over HTTP/2; SIGHUP rotates the certificate for new handshakes
// while open sessions carry on; a bad file on SIGHUP keeps the old one.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first, second := newTestCert(t, 1), newTestCert(t, 2)
	first.write(t, certFile, keyFile)
	p := startProcess(t, "-tls-cert", certFile, "-tls-key", keyFile)
	conf := trusting(first, second)

	alice := dialWSS(t, p.addr, "alice", conf)
	bob := dialWSS(t, p.addr, "bob", conf)
	alice.expect("[server]: UID bob joined lobby")
	alice.send("over tls")
	alice.expect("[UID: alice]: over tls")
	bob.expect("[UID: alice]: over tls")

	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}}
	for _, path := range []string{"/healthcheck", "/api/rooms", "/"} {
		resp, err := h2.Get("https://" + p.addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/2.0" {
			t.Fatalf("GET %s: %s over %s, want 200 over HTTP/2.0", path, resp.Status, resp.Proto)
		}
	}
	// An event stream over HTTP/2.
	stream, err := h2.Get("https://" + p.addr + "/sse/lobby?uid=dash")
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stream.Body).ReadString('\n')
	stream.Body.Close()
	if stream.Proto != "HTTP/2.0" || line != "event: welcome\n" {
		t.Fatalf("SSE over TLS: %s, first line %q", stream.Proto, line)
	}
	for _, c := range []*testClient{alice, bob} {
		c.expect("[server]: UID dash joined lobby", "[server]: UID dash left lobby")
	}
	// Plain HTTP on the TLS port is not served.
	if resp, err := http.Get("http://" + p.addr + "/healthcheck"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP answered 200 on the TLS address")
		}
	}

	if got := servedSerial(t, p.addr, conf); got != 1 {
		t.Fatalf("served certificate %d, want 1", got)
	}
	second.write(t, certFile, keyFile)
	p.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, "the new certificate served", func() bool { return servedSerial(t, p.addr, conf) == 2 })
	bob.send("after rotation")
	alice.expect("[UID: bob]: after rotation")
	bob.expect("[UID: bob]: after rotation")
	dialWSS(t, p.addr, "carol", conf)
	alice.expect("[server]: UID carol joined lobby")
	bob.expect("[server]: UID carol joined lobby")

	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, "the failed reload logged", func() bool { return strings.Contains(p.log(), "certificate not reloaded") })
	if got := servedSerial(t, p.addr, conf); got != 2 {
		t.Fatalf("after a bad reload served %d, want 2", got)
	}
	alice.send("still here")
	bob.expect("[UID: alice]: still here")
}

// TLS options that cannot work stop the start with one line: one file
// without the other (exit 2), a file that cannot be read, or a key that
// is not the certificate's (exit 1).
func TestTLSBadOptions(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	one, other := newTestCert(t, 1), newTestCert(t, 2)
	one.write(t, filepath.Join(dir, "one.pem"), filepath.Join(dir, "one.key"))
	other.write(t, filepath.Join(dir, "other.pem"), filepath.Join(dir, "other.key"))
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-tls-cert", filepath.Join(dir, "one.pem")}, 2, "-tls-key"},
		{[]string{"-tls-key", filepath.Join(dir, "one.key")}, 2, "-tls-cert"},
		{[]string{"-tls-cert", filepath.Join(dir, "missing.pem"), "-tls-key", filepath.Join(dir, "one.key")}, 1, "-tls-cert"},
		{[]string{"-tls-cert", filepath.Join(dir, "one.pem"), "-tls-key", filepath.Join(dir, "other.key")}, 1, "-tls-key"},
	}
	for _, tc := range cases {
		cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0"}, tc.args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != tc.code {
			t.Errorf("%v: %v, want exit %d", tc.args, err, tc.code)
			continue
		}
		// The development-mode warning is a log line; the error is the last.
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "switchboard: ") || !strings.Contains(last, tc.want) {
			t.Errorf("%v: last line %q, want one naming %s", tc.args, last, tc.want)
		}
	}
}
