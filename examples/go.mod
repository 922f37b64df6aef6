module github.com/ebb-ws/ebb/examples

go 1.26

require (
	github.com/coder/websocket v1.8.15
	github.com/ebb-ws/ebb v0.0.0-00010101000000-000000000000
	github.com/gorilla/websocket v1.5.3
)

require github.com/klauspost/compress v1.20.4 // indirect
