package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Following the stream: finding or making it, the ordered consumer that
// reads it, and the keeper that checks it after reconnects and every few
// seconds.

// streamConfig is the stream as the flags describe it. firstSeq is used
// only when the stream is created; see nextFirstSeq.
func (c *clusterLink) streamConfig(firstSeq uint64) jetstream.StreamConfig {
	storage := jetstream.MemoryStorage
	if c.cfg.StreamStorage == "file" {
		storage = jetstream.FileStorage
	}
	return jetstream.StreamConfig{
		Name:        streamName,
		Description: "switchboard room messages, publishes and DMs",
		Subjects:    []string{roomSubject, directSubject},
		Storage:     storage,
		MaxAge:      c.cfg.StreamMaxAge,
		MaxBytes:    c.cfg.StreamMaxBytes,
		Discard:     jetstream.DiscardOld,
		FirstSeq:    firstSeq,
		// Lost acks are settled within seconds of a reconnect; the window
		// must cover that, and may not exceed the stream's max age.
		Duplicates: min(2*time.Minute, c.cfg.StreamMaxAge),
	}
}

// nextFirstSeq numbers a new stream. A broker restart loses a memory
// stream, and whichever node reconnects first makes it again: starting at
// the clock in microseconds puts it above every sequence any node has seen
// (fewer than a million messages a second), so seq keeps increasing and
// every consumer resumes at the new stream's start rather than past it.
func (c *clusterLink) nextFirstSeq() uint64 {
	return max(c.lastSeq.Load()+1, uint64(time.Now().UnixMicro()))
}

// ensureStream finds the stream, or makes it, and returns its info. With
// adjustLimits (at start) it brings the stream's limits in line with the
// flags; later checks leave them, so nodes started with different limits
// do not undo each other every few seconds.
func (c *clusterLink) ensureStream(ctx context.Context, adjustLimits bool) (*jetstream.StreamInfo, error) {
	// Short: a lookup sent on a connection that is dying gets no answer,
	// and the keeper should be free again soon after the reconnect.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	stream, err := c.js.Stream(ctx, streamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		stream, err = c.js.CreateStream(ctx, c.streamConfig(c.nextFirstSeq()))
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			stream, err = c.js.Stream(ctx, streamName) // another node made it first
		}
		if err != nil {
			return nil, fmt.Errorf("create stream %s: %w", streamName, err)
		}
		c.streamFirst.Store(stream.CachedInfo().Config.FirstSeq)
		c.streamReady.Store(true)
		return stream.CachedInfo(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", streamName, err)
	}
	info := stream.CachedInfo()
	if !adjustLimits {
		c.streamFirst.Store(info.Config.FirstSeq)
		c.streamReady.Store(true)
		return info, nil
	}
	want := c.streamConfig(info.Config.FirstSeq)
	if info.Config.Storage != want.Storage {
		c.log.Warn("stream storage differs from -stream-storage; keeping the stream as it is",
			"stream", streamName, "have", info.Config.Storage.String(), "want", want.Storage.String())
		want.Storage = info.Config.Storage
	}
	if info.Config.MaxAge != want.MaxAge || info.Config.MaxBytes != want.MaxBytes || info.Config.Duplicates != want.Duplicates {
		if _, err := c.js.UpdateStream(ctx, want); err != nil {
			return nil, fmt.Errorf("update stream %s limits: %w", streamName, err)
		}
	}
	c.streamFirst.Store(info.Config.FirstSeq)
	c.streamReady.Store(true)
	return info, nil
}

// startConsumer follows the stream from the message after lastSeq with an
// ordered consumer: nats.go recreates it after a gap or a reconnect,
// resuming after the last message it delivered, so every node sees the
// stream's order. It starts before the node listens, so no session can
// miss a message sent between its welcome and the consumer's start.
func (c *clusterLink) startConsumer(ctx context.Context, lastSeq uint64) error {
	run := c.consumerRun.Add(1) // first: from now on an older consumer's callbacks do nothing
	setup, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	consumer, err := c.js.OrderedConsumer(setup, streamName, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   lastSeq + 1,
	})
	if err != nil {
		return fmt.Errorf("ordered consumer on %s: %w", streamName, err)
	}
	c.lastSeq.Store(lastSeq)
	c.handedOver.Store(lastSeq)
	if c.highestAcked.Load() > lastSeq {
		c.highestAcked.Store(lastSeq) // a stream that went back: its old numbers are gone
	}
	consumeCtx, stopConsume := context.WithCancel(context.Background())
	c.stopConsume = stopConsume
	consuming, err := consumer.Consume(func(m jetstream.Msg) {
		// A consumer still stopping delivers nothing more.
		if consumeCtx.Err() == nil && c.consumerRun.Load() == run {
			c.deliver(consumeCtx, m)
		}
	},
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			c.log.Debug("stream consumer", "err", err)
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrStreamNotFound) {
				c.recheckStream() // the stream may have been deleted and made anew
			}
		}))
	if err != nil {
		stopConsume()
		return fmt.Errorf("consume %s: %w", streamName, err)
	}
	c.consumer = consuming
	return nil
}

// stopConsumer stops the consumer. It waits at most consumerStopWait:
// nats.go holds a consumer while it retries a reset, which takes seconds
// when the broker is flapping, and a consumer still stopping delivers
// nothing more anyway (its context is cancelled first). The caller holds
// consumerMu.
func (c *clusterLink) stopConsumer() {
	if c.consumer == nil {
		return
	}
	c.stopConsume()
	consumer := c.consumer
	c.consumer = nil
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		consumer.Stop()
		<-consumer.Closed()
	}()
	select {
	case <-stopped:
	case <-time.After(consumerStopWait):
		c.log.Warn("stream consumer still stopping; going on without waiting")
	}
}

// restartConsumer follows the stream again from after lastSeq.
func (c *clusterLink) restartConsumer(ctx context.Context, lastSeq uint64) error {
	c.consumerMu.Lock()
	defer c.consumerMu.Unlock()
	c.stopConsumer()
	return c.startConsumer(ctx, lastSeq)
}

// streamStartsAt reports whether seq is the first sequence of the current
// stream, as after a broker restart made it anew: that jump loses nothing
// this node could have had. The consumer may see the new stream before the
// stream keeper does, so it asks the broker, until it gets an answer: a
// failed lookup must not close every session.
func (c *clusterLink) streamStartsAt(ctx context.Context, seq uint64) bool {
	if seq == c.streamFirst.Load() {
		return true
	}
	for {
		lookup, cancel := context.WithTimeout(ctx, 5*time.Second)
		stream, err := c.js.Stream(lookup, streamName)
		cancel()
		if err == nil {
			return stream.CachedInfo().Config.FirstSeq == seq
		}
		c.log.Warn("stream lookup failed while checking a jump in sequence", "err", err)
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return true // stopping: nobody left to tell
		}
	}
}

// keepStream makes sure the stream exists after every reconnect: a broker
// restarted with memory storage has lost it. Until then the node refuses
// traffic and /healthcheck says the cluster is unavailable.
func (c *clusterLink) keepStream(ctx context.Context) error {
	// Besides reconnects and consumer errors, it looks every few seconds:
	// a stream deleted or cut short by hand must not go unnoticed.
	check := time.NewTicker(c.cfg.StreamCheckInterval)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.reconnected:
			// Until the stream is found or made, the node refuses traffic
			// and /healthcheck says so: keep trying.
			for !c.keepStreamPass(ctx) {
				if !sleepCtx(ctx, 500*time.Millisecond) {
					return nil
				}
			}
		case <-check.C:
			// A routine look that fails (a busy broker) changes nothing;
			// the next tick looks again.
			if c.connected.Load() {
				c.keepStreamPass(ctx)
			}
		}
	}
}

// keepStreamPass finds or makes the stream once and acts on what it finds;
// it reports whether it got an answer.
func (c *clusterLink) keepStreamPass(ctx context.Context) bool {
	passStart := time.Now()
	wasReady := c.streamReady.Load()
	// Read before asking: the consumer moves on while the answer comes,
	// and the stream's end is never below what it had.
	readBefore := c.lastSeq.Load()
	info, err := c.ensureStream(ctx, false)
	if err != nil {
		c.log.Debug("stream lookup", "err", err)
		return false
	}
	c.metrics.clusterUp.Set(1)
	remade := !info.Created.Equal(c.streamCreated)
	c.streamCreated = info.Created
	if !wasReady || remade {
		c.log.Info("cluster available again", "stream", streamName, "stream_remade", remade)
	}
	if remade {
		// Whatever the history holds came from the stream that is gone;
		// the new one numbers above it. The floor covers what the consumer
		// may already have read of the new one, which the reset drops.
		_ = c.hub.submit(ctx, HistoryReset{Floor: max(info.State.LastSeq, c.lastSeq.Load())})
	}
	c.checkStreamEnd(ctx, info, readBefore)
	c.settleLost(ctx, passStart)
	return true
}

// checkStreamEnd handles a stream that came back ending below readBefore,
// what this node had read before info was asked for (a broker that lost
// its tail, or a stream made anew by a node whose clock is behind): the
// consumer would wait past its end and skip every new message below its
// position. The node's sessions
// may have missed messages, so they are closed with a reason, and the
// consumer restarts at the stream's end.
func (c *clusterLink) checkStreamEnd(ctx context.Context, info *jetstream.StreamInfo, readBefore uint64) {
	if info.State.LastSeq >= readBefore {
		return
	}
	c.log.Error("stream ends below what this node has read; closing its sessions and following the stream's end",
		"stream_last", info.State.LastSeq, "node_last", readBefore)
	_ = c.hub.submit(ctx, CloseEverySession{Status: closeMissedMessages})
	// Its numbers went back: whatever the history holds is from before.
	_ = c.hub.submit(ctx, HistoryReset{Floor: max(info.State.LastSeq, c.lastSeq.Load())})
	for {
		err := c.restartConsumer(ctx, info.State.LastSeq)
		if err == nil {
			return
		}
		c.log.Warn("restart consumer", "err", err)
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return
		}
	}
}
