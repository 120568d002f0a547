package main

import "context"

// memoryBroker is the broker of a single node: a message is delivered by
// the hub as soon as the hub accepts it, in the order it accepts them.
type memoryBroker struct{}

func (memoryBroker) publish(h *WebSocketServer, out clusterOut) bool {
	queued := h.receive(out.delivery(""))
	if out.reply != nil {
		// One node knows exactly how many sessions took it.
		out.reply <- PublishResult{Recipients: queued}
	}
	return true
}

func (memoryBroker) presenceChanged(presenceEntry) {}

func (memoryBroker) node() string { return "" }

// reach has nothing to wait for: the hub numbers every event itself.
func (memoryBroker) reach(context.Context, uint64) {}

// delivery is out as it comes back from the broker, sent by node.
func (out clusterOut) delivery(node string) Delivery {
	d := Delivery{Kind: out.kind, Room: out.room, From: out.from, To: out.to, TS: out.ts, At: out.at, Node: node, Text: out.text, Data: out.data}
	if out.session != nil {
		d.SessionID = out.session.id
	}
	return d
}
