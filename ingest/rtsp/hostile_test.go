package rtsp

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"
)

var (
	testH264SPS = []byte{
		0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02,
		0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04,
		0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc9,
		0x20,
	}
	testH264PPS = []byte{0x68, 0xce, 0x3c, 0x80}
	testH265VPS = []byte{
		0x40, 0x1, 0xc, 0x1, 0xff, 0xff, 0x1, 0x60,
		0x0, 0x0, 0x3, 0x0, 0x90, 0x0, 0x0, 0x3,
		0x0, 0x0, 0x3, 0x0, 0x78, 0x99, 0x98, 0x9,
	}
	testH265SPS = []byte{
		0x42, 0x1, 0x1, 0x1, 0x60, 0x0, 0x0, 0x3,
		0x0, 0x90, 0x0, 0x0, 0x3, 0x0, 0x0, 0x3,
		0x0, 0x78, 0xa0, 0x3, 0xc0, 0x80, 0x10, 0xe5,
		0x96, 0x66, 0x69, 0x24, 0xca, 0xe0, 0x10, 0x0,
		0x0, 0x3, 0x0, 0x10, 0x0, 0x0, 0x3, 0x1,
		0xe0, 0x80,
	}
	testH265PPS = []byte{0x44, 0x1, 0xc1, 0x72, 0xb4, 0x62, 0x40}
)

// testMedias are one media of each codec relaymesh packages.
func testMedias() []*description.Media {
	return []*description.Media{
		{Type: description.MediaTypeVideo, Formats: []format.Format{&format.H264{
			PayloadTyp: 96, SPS: testH264SPS, PPS: testH264PPS, PacketizationMode: 1,
		}}},
		{Type: description.MediaTypeAudio, Formats: []format.Format{&format.MPEG4Audio{
			PayloadTyp: 97,
			Config:     &mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 2},
			SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3,
		}}},
		{Type: description.MediaTypeVideo, Formats: []format.Format{&format.H265{
			PayloadTyp: 98, VPS: testH265VPS, SPS: testH265SPS, PPS: testH265PPS,
		}}},
		{Type: description.MediaTypeAudio, Formats: []format.Format{&format.Opus{PayloadTyp: 99, ChannelCount: 2}}},
	}
}

// hostilePayload is random bytes shaped enough like the codec's RTP
// payloads to get past the first checks: NAL unit headers of keyframes,
// parameter sets and fragments; AU headers.
func hostilePayload(rng *rand.Rand, f format.Format) []byte {
	b := make([]byte, 1+rng.IntN(300))
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	switch f.(type) {
	case *format.H264:
		b[0] = []byte{0x65, 0x41, 0x67, 0x68, 0x7c, 0x78, 0x06, 0x09}[rng.IntN(8)]
		if b[0] == 0x7c && len(b) > 1 { // FU-A of an IDR
			b[1] = b[1]&0xc0 | 5
		}
	case *format.H265:
		b[0] = []byte{0x26, 0x02, 0x40, 0x42, 0x44, 0x62, 0x60, 0x2a}[rng.IntN(8)]
		if len(b) > 2 && b[0] == 0x62 { // FU of an IDR
			b[2] = b[2]&0xc0 | 19
		}
	}
	return b
}

// TestHostileInput throws garbage at every port while ffmpeg publishes over
// UDP: its stream must keep getting parts and ffmpeg must finish cleanly.
func TestHostileInput(t *testing.T) {
	requireFFmpeg(t)
	t.Parallel()
	ts := startServer(t, serverOptions{udp: true, timeout: 2 * time.Second})
	ff := startFFmpeg(t, encoder{video: "h264", audio: "aac", transport: "udp", seconds: 10}, ts.url("/live/cam"))
	waitFor(t, 15*time.Second, "the publisher's parts", func() bool { return parts(ts.reg, "cam") >= 3 })
	before := parts(ts.reg, "cam")

	var wg sync.WaitGroup
	defer wg.Wait()
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	for i := range 36 {
		run(func() { garbageTCP(t, ts.addr, uint64(i)) })
	}
	run(func() { garbageUDP(t, ts.rtp, 1) })
	run(func() { garbageUDP(t, ts.rtcp, 2) })
	for i, medias := range [][]*description.Media{testMedias()[:2], testMedias()[2:]} {
		run(func() { hostilePublisher(t, ts.url(fmt.Sprintf("/live/junk%d", i)), medias, uint64(i)) })
	}
	wg.Wait()

	waitFor(t, 5*time.Second, "more parts after the garbage", func() bool { return parts(ts.reg, "cam") > before+5 })
	if err := ff.wait(t, 20*time.Second); err != nil {
		t.Fatalf("the publisher was disturbed: %s", describe(ff))
	}
	checkStream(t, ts.reg, "cam", avcAAC)
	if strings.Contains(ts.logs.String(), "panicked") {
		t.Errorf("a handler panicked")
	}
}

// garbageTCP connects and sends one kind of garbage, chosen by seed.
func garbageTCP(t *testing.T, addr string, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Errorf("dial: %v", err)
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	var msg []byte
	switch seed % 6 {
	case 0:
		msg = random(8192)
	case 1: // a request line, then garbage headers
		msg = append([]byte("OPTIONS rtsp://x/live/cam RTSP/1.0\r\n"), random(4096)...)
	case 2: // an ANNOUNCE with a garbage SDP
		body := random(2000)
		msg = fmt.Appendf(nil, "ANNOUNCE rtsp://%s/live/g%d RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", addr, seed, len(body), body)
	case 3: // an ANNOUNCE with a plausible SDP whose parameters are garbage
		body := fmt.Sprintf("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"+
			"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1; sprop-parameter-sets=%s,aM48gA==\r\n"+
			"m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\na=fmtp:97 streamtype=5; mode=AAC-hbr; config=1190; sizelength=13; indexlength=3; indexdeltalength=3\r\n",
			base64.StdEncoding.EncodeToString(append([]byte{0x67}, random(1+rng.IntN(40))...)))
		msg = fmt.Appendf(nil, "ANNOUNCE rtsp://%s/live/g%d RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", addr, seed, len(body), body)
	case 4: // interleaved frames without a session
		for range 50 {
			p := random(1 + rng.IntN(1400))
			msg = append(msg, '$', byte(rng.UintN(4)), byte(len(p)>>8), byte(len(p)))
			msg = append(msg, p...)
		}
	case 5: // a huge header
		msg = append([]byte("DESCRIBE rtsp://x/live/cam RTSP/1.0\r\nCSeq: 1\r\nX: "), make([]byte, 1<<20)...)
	}
	conn.Write(msg) //nolint:errcheck // the server may hang up at any point
	// The server must hang up, at the latest at its setup deadline.
	buf := make([]byte, 4096)
	for {
		if _, err := conn.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("garbage connection %d still open after 5s", seed)
			}
			return
		}
	}
}

func garbageUDP(t *testing.T, addr string, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 9))
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Errorf("dial: %v", err)
		return
	}
	defer conn.Close()
	for range 2000 {
		b := make([]byte, 1+rng.IntN(1500))
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		if rng.IntN(2) == 0 {
			b[0] = 0x80 // RTP version 2
		}
		conn.Write(b) //nolint:errcheck // nobody listens for replies
	}
}

// hostilePublisher announces valid medias and then sends RTP packets whose
// payloads are garbage, through the depacketizers and parsers.
func hostilePublisher(t *testing.T, url string, medias []*description.Media, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 11))
	u, err := base.ParseURL(url)
	if err != nil {
		t.Errorf("parse %s: %v", url, err)
		return
	}
	transport := gortsplib.TransportTCP
	c := &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: &transport}
	if err := c.StartRecording(url, &description.Session{Medias: medias}); err != nil {
		t.Errorf("hostile publisher: %v", err)
		return
	}
	defer c.Close()
	for i := range 3000 {
		m := medias[rng.IntN(len(medias))]
		f := m.Formats[0]
		pkt := &rtp.Packet{
			Header: rtp.Header{
				Version: 2, PayloadType: f.PayloadType(), SequenceNumber: uint16(i),
				Timestamp: uint32(i * 3000), Marker: rng.IntN(3) == 0, SSRC: 1234,
			},
			Payload: hostilePayload(rng, f),
		}
		if err := c.WritePacketRTP(m, pkt); err != nil {
			return // the server may disconnect a hostile publisher
		}
		if i%100 == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
}
