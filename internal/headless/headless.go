// Package headless holds how relaymesh's browser tests and latency
// benchmark start Chromium, so that both measure the same browser.
package headless

import "github.com/chromedp/chromedp"

// Options are the exec allocator options for the Chromium at path:
// headless, runnable as root in a container, muted, playing media without
// a user gesture, with no proxy, in a 1280x720 window.
func Options(path string) []chromedp.ExecAllocatorOption {
	return append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", "new"),
		chromedp.Flag("no-sandbox", true),
		chromedp.DisableGPU,
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.WindowSize(1280, 720),
	)
}
