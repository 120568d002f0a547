package main

import "github.com/coder/websocket"

// Compression (-compression) is permessage-deflate (RFC 7692) as
// coder/websocket implements it, negotiated only with clients that offer
// it; the others get the same frames as without the flag.
//
// The library mode used when it is on is "no context takeover": each
// message is compressed on its own with a compressor borrowed from a
// pool, so a connection keeps no deflate state between messages and
// compression costs memory only while a write is in progress; messages
// under the library's threshold (512 bytes) go as they are. Context
// takeover compresses a stream of similar messages better but keeps a
// compressor and its window per connection for the connection's life.
// BENCHMARKS.md ("Compression") has the figures the choice was made from.
//
// compressionModeName exists so that bench/compression.sh can build the
// other mode for that comparison
// (-ldflags "-X main.compressionModeName=context-takeover"); nothing else
// sets it.
var compressionModeName = "no-context-takeover"

// compressionMode is the Accept option for the -compression flag.
func compressionMode(on bool) websocket.CompressionMode {
	switch {
	case !on:
		return websocket.CompressionDisabled
	case compressionModeName == "context-takeover":
		return websocket.CompressionContextTakeover
	default:
		return websocket.CompressionNoContextTakeover
	}
}
