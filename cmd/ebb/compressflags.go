package main

import "github.com/ebb-ws/ebb/websocket"

// compressionOptions builds a server's permessage-deflate options from the
// --compress-level, --no-context-takeover and --window-bits flags.
func compressionOptions(level int, noTakeover bool, windowBits int) (*websocket.CompressionOptions, error) {
	if level < 0 || level > 9 {
		return nil, usagef("--compress-level %d: want 1–9, or 0 for the default", level)
	}
	if windowBits != 0 && (windowBits < 8 || windowBits > 15) {
		return nil, usagef("--window-bits %d: want 8–15, or 0 for 15", windowBits)
	}
	return &websocket.CompressionOptions{
		Level:                   level,
		ServerNoContextTakeover: noTakeover,
		ClientNoContextTakeover: noTakeover,
		ServerMaxWindowBits:     windowBits,
	}, nil
}
