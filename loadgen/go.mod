module github.com/ebb-ws/ebb/loadgen

go 1.26

require (
	github.com/HdrHistogram/hdrhistogram-go v1.4.0
	github.com/ebb-ws/ebb v0.0.0-00010101000000-000000000000
)

require github.com/klauspost/compress v1.20.4 // indirect
