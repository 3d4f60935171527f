//go:build !linux

package rtsp

const quickAckSupported = false

func setQuickAck(uintptr) {}
