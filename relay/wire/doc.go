// Package wire owns the node-to-node relay protocol: how bytes are framed
// on a QUIC stream and how each message is encoded. It does no I/O of its
// own beyond reading and writing frames on the streams it is handed, and it
// knows nothing of QUIC, TLS or the mesh; relay/peertls owns authentication
// and the relay client and server own the streams.
//
// # Frames
//
// Every message travels in one frame:
//
//	[type uint8][length uvarint][payload: length bytes]
//
// A Reader checks the declared length against a limit before it allocates
// anything: small control messages are capped at 4 KiB, Catalog and Part
// frames at the Reader's limit (DefaultMaxPayload, 16 MiB, unless set).
// Unknown types, oversize lengths, non-minimal varints and frames cut short
// are errors; io.EOF is returned only at a frame boundary.
//
// Payloads are compact binary: uvarints, zigzag varints for signed values,
// length-prefixed strings and bytes, one byte (0 or 1) per bool and eight
// big-endian bytes per float64. Decoding is strict: a payload that decodes
// without error re-encodes to exactly the same bytes. Trailing bytes,
// over-long strings, non-minimal varints, negative durations and values
// that cannot be right (NaN frame rates, a stream that is both live and
// gone) are rejected with an error that wraps ErrMalformed.
//
// # Conversation
//
// A subscriber dials the holder of a stream (QUIC, ALPN "relaymesh-relay/2",
// mutual TLS) and opens one bidirectional control stream:
//
//	subscriber -> Hello, Subscribe
//	holder     -> Hello, then Catalog (or Error and close)
//	holder     -> StreamState whenever the publisher leaves or returns, or the show ends
//
// A peer whose Hello carries another Version gets Error{CodeBadVersion} and
// the connection is closed. The holder then sends every segment on its own
// unidirectional stream:
//
//	SegmentStart, Part, Part, ..., SegmentEnd
//
// SegmentStart names its stream, so one connection between two nodes
// carries all their subscriptions. Segment streams and the control stream are independent QUIC streams, so
// their frames are not ordered with respect to each other.
package wire

// ALPN is the TLS application protocol of the relay. A node that speaks
// another version of the protocol offers another ALPN string, so an
// incompatible peer fails the handshake rather than a later frame.
const ALPN = "relaymesh-relay/2"

// Version is the protocol version carried in Hello.
const Version = 2
