//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// respReader parses one HTTP/1.1 response from the bytes a connection
// delivers, in whatever pieces they come, without allocating once its
// buffers have grown: the head is gathered in head (only when it spans
// reads), the body is copied into body when keep is set and otherwise
// only counted. Only Content-Length bodies are understood; relaymesh and
// nginx send nothing else for these resources.
type respReader struct {
	keep     bool
	head     []byte // a head that spans reads, gathered
	body     []byte // the kept body
	h        head
	headDone bool
	left     int64 // body bytes still to come
	n        int64 // body bytes so far
}

// reset prepares for the next response.
func (r *respReader) reset(keep bool) {
	r.keep, r.head, r.body = keep, r.head[:0], r.body[:0]
	r.headDone, r.left, r.n = false, 0, 0
}

var (
	errHeadTooLarge = errors.New("response head too large")
	errNoLength     = errors.New("response without Content-Length")
	errMalformed    = errors.New("malformed response")
	errExtraBytes   = errors.New("bytes after the response")
)

// maxHead bounds a response head.
const maxHead = 16 << 10

var crlf2 = []byte("\r\n\r\n")

// feed takes the next bytes of the connection. done reports that the
// response is complete; bytes past its end are an error (requests are
// never pipelined).
func (r *respReader) feed(b []byte) (done bool, err error) {
	if !r.headDone {
		var end int
		if len(r.head) == 0 {
			// The usual case: the whole head in this read.
			i := bytes.Index(b, crlf2)
			if i < 0 {
				r.head = append(r.head, b...)
				return false, r.checkHead()
			}
			end = i + len(crlf2)
			if r.h, err = parseHead(b[:end]); err != nil {
				return false, err
			}
		} else {
			// Search from where a "\r\n\r\n" split across reads can start.
			from := max(len(r.head)-3, 0)
			r.head = append(r.head, b...)
			i := bytes.Index(r.head[from:], crlf2)
			if i < 0 {
				return false, r.checkHead()
			}
			headLen := from + i + len(crlf2)
			if r.h, err = parseHead(r.head[:headLen]); err != nil {
				return false, err
			}
			end = headLen - (len(r.head) - len(b))
		}
		r.headDone, r.left = true, r.h.length
		b = b[end:]
	}
	n := int64(len(b))
	if n > r.left {
		return false, errExtraBytes
	}
	if r.keep {
		r.body = append(r.body, b...)
	}
	r.left -= n
	r.n += n
	return r.left == 0, nil
}

func (r *respReader) checkHead() error {
	if len(r.head) > maxHead {
		return errHeadTooLarge
	}
	return nil
}

// head is what a response head says that matters here.
type head struct {
	status int
	length int64
	close  bool
}

var (
	hdrLength = []byte("content-length:")
	hdrConn   = []byte("connection:")
	hdrTE     = []byte("transfer-encoding:")
)

// parseHead reads the status line and the headers that matter, in place
// and without allocating. A response with no Content-Length is refused
// unless it can have no body.
func parseHead(b []byte) (head, error) {
	var h head
	line, rest, _ := bytes.Cut(b, []byte("\r\n"))
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return h, errMalformed
	}
	st, ok := uintOf(line[9:12])
	if !ok || (len(line) > 12 && line[12] != ' ') {
		return h, errMalformed
	}
	h.status = int(st)
	h.length = -1
	h.close = line[7] == '0' // HTTP/1.0 closes unless told otherwise
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		switch {
		case hasPrefixFold(line, hdrLength):
			n, ok := uintOf(bytes.TrimSpace(line[len(hdrLength):]))
			if !ok {
				return h, errMalformed
			}
			h.length = int64(n)
		case hasPrefixFold(line, hdrConn):
			v := bytes.TrimSpace(line[len(hdrConn):])
			h.close = equalFold(v, []byte("close")) || (h.close && !equalFold(v, []byte("keep-alive")))
		case hasPrefixFold(line, hdrTE):
			return h, fmt.Errorf("%w: Transfer-Encoding %q", errNoLength, bytes.TrimSpace(line[len(hdrTE):]))
		}
	}
	if h.length < 0 {
		if h.status == 204 || h.status == 304 || h.status < 200 {
			h.length = 0
		} else {
			return h, errNoLength
		}
	}
	return h, nil
}

// hasPrefixFold is bytes.HasPrefix ignoring ASCII case; prefix is lower
// case.
func hasPrefixFold(b, prefix []byte) bool {
	return len(b) >= len(prefix) && equalFold(b[:len(prefix)], prefix)
}

func equalFold(a, lower []byte) bool {
	if len(a) != len(lower) {
		return false
	}
	for i, c := range a {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// appendRequest appends a GET request for path to dst.
func appendRequest(dst, path, host []byte) []byte {
	dst = append(dst, "GET "...)
	dst = append(dst, path...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	return append(dst, "\r\nUser-Agent: capload\r\n\r\n"...)
}

// appendDirectives adds _HLS_msn and _HLS_part to a media playlist path
// that may already have a query.
func appendDirectives(dst, path []byte, at cursor) []byte {
	dst = append(dst[:0], path...)
	if bytes.IndexByte(path, '?') >= 0 {
		dst = append(dst, "&_HLS_msn="...)
	} else {
		dst = append(dst, "?_HLS_msn="...)
	}
	dst = strconv.AppendUint(dst, at.msn, 10)
	dst = append(dst, "&_HLS_part="...)
	return strconv.AppendInt(dst, int64(at.idx), 10)
}

// resolveRef appends to dst the absolute path of ref (a relative URI or
// an absolute path, never a full URL here) next to the document at base.
func resolveRef(dst, base, ref []byte) []byte {
	if len(ref) > 0 && ref[0] == '/' {
		return append(dst, ref...)
	}
	if q := bytes.IndexByte(base, '?'); q >= 0 {
		base = base[:q]
	}
	dir := base[:bytes.LastIndexByte(base, '/')+1]
	dst = append(dst, dir...)
	return append(dst, ref...)
}
