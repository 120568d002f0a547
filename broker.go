package main

import "context"

// broker carries what the hub has accepted (room messages, publishes,
// binary relay, DMs, disconnects) to where it is numbered, and brings it
// back as a Delivery the hub applies: the one path of every such message,
// on one node and in a cluster. On a single node the broker is the hub
// itself (broker_memory.go); in a cluster it is the JetStream stream every
// node reads (clusterLink, cluster.go). The hub never asks which it has.
type broker interface {
	// publish hands out on. false means it was refused now; the hub then
	// tells the sender (or the API caller) that it was not sent.
	publish(h *WebSocketServer, out clusterOut) bool
	// presenceChanged tells the other nodes, if any, a uid's session
	// count in a room.
	presenceChanged(e presenceEntry)
	// node is this node's id as deliveries carry it ("" on a single
	// node), so the hub knows its own DMs for their echo.
	node() string
	// reach waits, briefly and at most until ctx ends, until every event
	// numbered up to seq has been handed to the hub, so a recovery from a
	// seq another node handed out is not refused for being early.
	reach(ctx context.Context, seq uint64)
}
