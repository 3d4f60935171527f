// Package ingest turns what encoders send into CMAF: protocol listeners
// (ingest/rtmp) hand access units to a Packager, which cuts init segments,
// parts and segments into a relay.Stream. It is used on origins only.
package ingest
