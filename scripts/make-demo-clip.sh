#!/usr/bin/env bash
# Regenerates ingest/demo/clip.ts, the looping test stream behind
# `relaymesh demo`, from ffmpeg's lavfi sources (no input files, no fonts).
#
# The clip is exactly 8 s so that it loops seamlessly on both tracks:
#   video: 240 frames at 30 fps, GOP 60 (a keyframe every 2 s, closed GOPs,
#          scene-cut detection off so the cadence never changes), B-frames on;
#   audio: 375 AAC-LC frames of 1024 samples at 48 kHz = 384000 samples = 8 s.
# The AAC encoder prepends 1024 samples of priming, so 1024 fewer source
# samples are fed to it; the muxed stream then holds exactly 375 frames.
#
# One encoder thread and bitexact flags make the output byte-identical from
# run to run with the same ffmpeg build, so a rerun leaves no spurious diff.
#
# Usage: scripts/make-demo-clip.sh [ffmpeg binary]
set -euo pipefail

ffmpeg=${1:-${FFMPEG:-ffmpeg}}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="$root/ingest/demo/clip.ts"
tmp="$out.tmp.ts"
trap 'rm -f "$tmp"' EXIT

seconds=8
fps=30
rate=48000
aac_frame=1024
gop=$((2 * fps))
audio_samples=$((seconds * rate - aac_frame))

# Left: 440 Hz, right: 660 Hz, both under a 1 kHz beep for the first 100 ms
# of every second, so a listener can tell the stream is live.
beep='0.25*lt(mod(t\,1)\,0.1)*sin(2*PI*1000*t)'
left="0.12*sin(2*PI*440*t)+$beep"
right="0.12*sin(2*PI*660*t)+$beep"

"$ffmpeg" -hide_banner -loglevel error -nostdin -y \
	-f lavfi -i "testsrc2=size=640x360:rate=$fps:duration=$seconds" \
	-f lavfi -i "aevalsrc=exprs=$left|$right:sample_rate=$rate:channel_layout=stereo,atrim=end_sample=$audio_samples" \
	-map 0:v:0 -map 1:a:0 \
	-c:v libx264 -threads 1 -profile:v main -pix_fmt yuv420p -preset medium \
	-b:v 600k -maxrate 700k -bufsize 1200k \
	-g "$gop" -keyint_min "$gop" -sc_threshold 0 -bf 2 \
	-x264-params "scenecut=0:open-gop=0" \
	-c:a aac -profile:a aac_low -b:a 96k -ar "$rate" -ac 2 \
	-fflags +bitexact -flags:v +bitexact -flags:a +bitexact \
	-f mpegts "$tmp"

size=$(wc -c <"$tmp")
if ((size >= 2 * 1024 * 1024)); then
	echo "make-demo-clip: $out would be $size bytes, over the 2 MiB budget" >&2
	exit 1
fi
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out ($size bytes)"
