package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// presenceBound is PROTOCOL.md's promise: the uids of a node that dies
// without a goodbye leave within 15 s.
const presenceBound = 15 * time.Second

// Two real binaries on one NATS server, with default presence timings: a
// uid on a node killed with SIGKILL leaves the other node's room within
// PROTOCOL.md's bound, and the survivor keeps working.
func TestClusterProcessKilled(t *testing.T) {
	n := startNATS(t)
	// The survivor gets a URL list whose first server is down, and no
	// -node-id: it picks the live server and names itself after the host.
	survivor := startProcess(t, "-nats", "nats://127.0.0.1:1,"+n.url())
	victim := startProcessEnv(t, []string{"SWITCHBOARD_NATS_URL=" + n.url(), "SWITCHBOARD_NODE_ID=victim"})
	eventually(t, "the victim to join with the id and URL from its environment", func() bool {
		return strings.Contains(victim.log(), `msg="joined the cluster" node=victim`)
	})
	hostname, _ := os.Hostname()
	defaultID := regexp.MustCompile(`msg="joined the cluster" node=` + regexp.QuoteMeta(defaultNodeID(hostname)[:len(defaultNodeID(hostname))-6]) + `[0-9a-f]{6} `)
	eventually(t, "the survivor to join under a default id", func() bool {
		return defaultID.MatchString(survivor.log())
	})
	alice := dialProcess(t, survivor, "alice", false)
	eventually(t, "the victim to see alice", func() bool {
		return strings.Contains(httpGet(t, "http://"+victim.addr+"/api/rooms/lobby/presence"), `"alice"`)
	})
	dialed := time.Now()
	dialProcess(t, victim, "bob", false)
	alice.expect("[server]: UID bob joined lobby")
	t.Logf("alice saw bob join on the other node %v after his dial began", time.Since(dialed).Round(time.Millisecond))

	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), presenceBound)
	defer cancel()
	kind, data, err := alice.conn.Read(ctx)
	if err != nil || kind != websocket.MessageText || string(data) != "[server]: UID bob left lobby" {
		t.Fatalf("after the kill alice got %v %q %v, want bob leaving within %v", kind, data, err, presenceBound)
	}
	t.Logf("bob left %v after his node was killed", time.Since(killed).Round(10*time.Millisecond))
	alice.send("still here")
	alice.expect("[UID: alice]: still here")
}

// httpGet returns a loopback URL's body.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return string(body)
}
