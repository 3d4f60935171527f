(function () {
  'use strict';
  // The page is /live/{stream}/: the playlist is next to it.
  var src = new URL('index.m3u8', location.href).href;
  var video = document.getElementById('video');
  var unmute = document.getElementById('unmute');
  var unmuteLabel = document.getElementById('unmute-label');
  var statusEl = document.getElementById('status');
  var errorEl = document.getElementById('error');

  var KEEP = 50; // errors kept in window.relaymesh
  var SHOW_ERROR_MS = 30000; // how long the status line shows an error
  var st = {
    engine: '', playing: false, fatalErrors: [], errors: [], errorCount: 0,
    fragsLoaded: 0, partsLoaded: 0, lastError: '', lastFatal: false, lastErrorAt: 0,
    blocked: false, everPlayed: false, host: '', hosts: {}, steeringLoads: 0, waiting: 0,
    stalledMs: 0, waitingSince: 0, showEnded: false, behindOnPurpose: false, jumps: 0
  };
  var hls = null;
  var retryTimer = 0;
  var lastMediaRecovery = -1e9;

  function note(fatal, msg) {
    st.errorCount++;
    st.errors.push(msg);
    if (st.errors.length > KEEP) st.errors.shift();
    if (fatal) {
      st.fatalErrors.push(msg);
      if (st.fatalErrors.length > KEEP) st.fatalErrors.shift();
    }
    st.lastError = msg;
    st.lastFatal = fatal;
    st.lastErrorAt = performance.now();
    render();
  }

  // --- measurements -------------------------------------------------------

  function latency() {
    if (st.engine === 'hls.js') {
      var l = hls ? hls.latency : 0;
      return l > 0 && isFinite(l) ? l : null;
    }
    if (video.readyState === 0) return null;
    if (typeof video.getStartDate === 'function') {
      var start = video.getStartDate().getTime();
      if (isFinite(start) && start > 0) {
        return Date.now() / 1000 - (start / 1000 + video.currentTime);
      }
    }
    // No program date (Chromium's native HLS): distance to the end of the
    // seekable live window instead.
    var s = video.seekable;
    return s.length ? Math.max(0, s.end(s.length - 1) - video.currentTime) : null;
  }

  function bufferAhead() {
    var b = video.buffered, t = video.currentTime;
    for (var i = 0; i < b.length; i++) {
      if (b.start(i) <= t + 0.1 && t < b.end(i)) return b.end(i) - t;
    }
    return 0;
  }

  function level() {
    return video.videoWidth && video.videoHeight ? video.videoWidth + 'x' + video.videoHeight : '';
  }

  function bitrate() {
    var l = hls && hls.levels && hls.levels[hls.currentLevel];
    return l && l.bitrate ? l.bitrate : 0;
  }

  function frames() {
    if (typeof video.getVideoPlaybackQuality === 'function') {
      var q = video.getVideoPlaybackQuality();
      return [q.droppedVideoFrames, q.totalVideoFrames];
    }
    return [video.webkitDroppedFrameCount || 0, video.webkitDecodedFrameCount || 0];
  }

  function playing() {
    return st.playing && !video.paused && !video.ended;
  }

  // The content steering pathway hls.js plays from: a node's name.
  function pathway() {
    var l = hls && hls.levels && hls.levels[hls.currentLevel];
    return l && l.pathwayId && l.pathwayId !== '.' ? l.pathwayId : '';
  }

  // Read-only diagnostics for people and automated browser tests.
  Object.defineProperty(window, 'relaymesh', {
    enumerable: true,
    value: Object.freeze({
      get engine() { return st.engine; },
      get playing() { return playing(); },
      get currentTime() { return video.currentTime; },
      get latency() { return latency(); },
      get bufferAhead() { return bufferAhead(); },
      get level() { return level(); },
      get droppedFrames() { return frames()[0]; },
      get totalFrames() { return frames()[1]; },
      get muted() { return video.muted; },
      get fragsLoaded() { return st.fragsLoaded; },
      get partsLoaded() { return st.partsLoaded; },
      get host() { return st.host; },
      get hosts() { return Object.assign({}, st.hosts); },
      get pathway() { return pathway(); },
      get steeringLoads() { return st.steeringLoads; },
      get waiting() { return st.waiting; },
      get ended() { return st.showEnded; },
      get jumps() { return st.jumps; }, // times catchUp took a stalled viewer back to live
      get stalledMs() {
        return st.stalledMs + (st.waitingSince ? performance.now() - st.waitingSince : 0);
      },
      get errors() { return st.errors.slice(); },
      get fatalErrors() { return st.fatalErrors.slice(); },
      get errorCount() { return st.errorCount; }
    })
  });

  // --- status line --------------------------------------------------------

  function secs(x) {
    return x === null || !isFinite(x) ? '–' : x.toFixed(2) + ' s';
  }

  function render() {
    var state = playing() ? 'live' : st.showEnded ? 'the show has ended' : !st.everPlayed ? 'starting' :
      video.paused ? 'paused' : 'buffering';
    var f = frames();
    var parts = [state, 'latency ' + secs(latency()), 'buffer ' + secs(bufferAhead())];
    var lv = level(), br = bitrate();
    if (lv) parts.push(lv + (br ? ' @ ' + (br / 1e6).toFixed(1) + ' Mb/s' : ''));
    parts.push('dropped ' + f[0] + '/' + f[1]);
    if (st.engine === 'native') parts.push('native HLS');
    if (pathway()) parts.push('from ' + pathway());
    statusEl.textContent = parts.join(' · ');

    // hls.js recovers from most errors by itself: while the video plays,
    // only a fatal one is worth showing.
    var show = st.lastError && performance.now() - st.lastErrorAt < SHOW_ERROR_MS &&
      (st.lastFatal || !playing());
    errorEl.textContent = show ? (st.lastFatal ? 'fatal error: ' : 'error: ') + st.lastError +
      (st.errorCount > 1 ? ' (' + st.errorCount + ' errors)' : '') : '';
    errorEl.className = show && st.lastFatal ? 'fatal' : '';
  }
  setInterval(render, 250);

  // --- playback -----------------------------------------------------------

  function syncButton() {
    if (st.blocked && video.paused) {
      unmuteLabel.textContent = 'Click to play';
      unmute.hidden = false;
    } else {
      unmuteLabel.textContent = 'Click to unmute';
      unmute.hidden = !video.muted;
    }
  }

  function play() {
    var p = video.play();
    if (p && typeof p.catch === 'function') {
      p.catch(function (e) {
        // Autoplay refused even muted (e.g. power saving): wait for a click.
        if (e && e.name === 'NotAllowedError') {
          st.blocked = true;
          syncButton();
        }
      });
    }
  }

  unmute.addEventListener('click', function () {
    st.blocked = false;
    video.muted = false;
    play();
    syncButton();
  });
  video.addEventListener('volumechange', syncButton);
  video.addEventListener('playing', function () {
    if (st.waitingSince) {
      st.stalledMs += performance.now() - st.waitingSince;
      st.waitingSince = 0;
    }
    st.playing = st.everPlayed = true;
    st.blocked = false;
    syncButton();
  });
  ['waiting', 'pause', 'ended', 'emptied'].forEach(function (ev) {
    video.addEventListener(ev, function () { st.playing = false; });
  });
  video.addEventListener('waiting', function () {
    if (!st.everPlayed) return;
    st.waiting++;
    if (!st.waitingSince) st.waitingSince = performance.now();
  });

  function startHls() {
    // maxLiveSyncPlaybackRate 1 turns hls.js's own catch-up off: catchUp
    // below does it instead.
    hls = new Hls({
      lowLatencyMode: true, backBufferLength: 30, maxLiveSyncPlaybackRate: 1, liveSyncOnStallIncrease: 0,
      debug: new URLSearchParams(location.search).has('debug') // ?debug: hls.js logs to the console
    });
    hls.on(Hls.Events.FRAG_LOADED, function (ev, data) {
      if (data.part) st.partsLoaded++; else st.fragsLoaded++;
      try {
        var host = new URL((data.part || data.frag).url).host;
        st.host = host;
        st.hosts[host] = (st.hosts[host] || 0) + 1;
      } catch (e) { /* a URL hls.js could load is one URL can parse */ }
    });
    hls.on(Hls.Events.STEERING_MANIFEST_LOADED, function () { st.steeringLoads++; });
    hls.on(Hls.Events.MANIFEST_PARSED, play);
    startAtSyncPosition(hls);
    hls.on(Hls.Events.ERROR, onHlsError);
    hls.loadSource(src);
    hls.attachMedia(video);
  }

  // hls.js takes its start position from the first playlist (its sync
  // position then, PART-HOLD-BACK behind the live edge), buffers from the
  // keyframe before it, and seeks there once media is buffered. By then
  // the live edge has moved on by hls.js's start-up time (90-270 ms seen),
  // and without catch-up it never makes that up. startAtSyncPosition seeks
  // to the sync position as it is when the first media is buffered (less
  // LIVE_MARGIN), before anything is shown; catchUp below makes up the
  // rest.
  // LIVE_MARGIN: the page plays this much behind hls.js's target latency,
  // so that its buffer also covers a pathway switch (a first playlist from
  // another node).
  var LIVE_MARGIN = 0.1;
  function startAtSyncPosition(h) {
    var done = false;
    h.on(Hls.Events.FRAG_BUFFERED, function () {
      if (done || h !== hls) return;
      done = true;
      var pos = h.liveSyncPosition, b = video.buffered, t = video.currentTime;
      if (pos !== null) pos -= LIVE_MARGIN;
      // Only a player that has not started (its playhead before the
      // buffer), to a position in what is being buffered: hls.js loads the
      // rest of the way to the live edge.
      if (st.everPlayed || video.seeking || pos === null || !isFinite(pos) || !b.length ||
        t >= b.start(0) || pos <= b.start(0)) return;
      seekOwn(pos);
    });
  }

  // seekOwn seeks for the page, not the viewer. A pause, or a seek back,
  // is the viewer's: until they are back at the live edge they may watch
  // behind on purpose, and catchUp does not jump them. (hls.js seeks too, forward over holes.)
  var ownSeek = false, lastPlayhead = 0;
  function seekOwn(pos) {
    ownSeek = true;
    video.currentTime = pos;
  }
  video.addEventListener('seeking', function () {
    if (ownSeek) ownSeek = false;
    else if (st.everPlayed && video.currentTime < lastPlayhead - 0.5) st.behindOnPurpose = true;
  });
  video.addEventListener('pause', function () {
    if (st.everPlayed && !video.ended) st.behindOnPurpose = true;
  });

  // catchUp: a viewer who fell behind (a slow start, a stall) plays faster
  // until back at hls.js's target latency plus LIVE_MARGIN, so the host and
  // the chat stay in step. hls.js's own catch-up (maxLiveSyncPlaybackRate)
  // acts only while more than 1 s is buffered ahead, which a player near
  // PART-HOLD-BACK (3 parts, 0.6 s) never has: it would keep its surplus
  // for the whole session. This one speeds up in proportion to the surplus
  // (up to CATCHUP_MAX_RATE), and only while CATCHUP_MIN_BUFFER is buffered
  // ahead: a viewer who is behind because parts arrive late (a slow link,
  // a busy node) has a thin buffer, and playing it faster would stall.
  // Beyond CATCHUP_MAX_SURPLUS, a viewer who stalled (a busy device, a
  // frozen node) and has the media up to the sync position buffered jumps
  // there at once, unless they paused or seeked back. hls.js would instead
  // raise its target latency by a second per stall
  // (liveSyncOnStallIncrease, set to 0 here) and keep the viewer behind.
  var CATCHUP_MIN_SURPLUS = 0.05, CATCHUP_MAX_SURPLUS = 3, CATCHUP_MIN_BUFFER = 0.5, CATCHUP_MAX_RATE = 1.2;
  setInterval(function catchUp() {
    if (!video.seeking) lastPlayhead = video.currentTime;
    if (!hls || st.engine !== 'hls.js' || !playing()) return;
    var target = hls.targetLatency, surplus = hls.latency - target - LIVE_MARGIN, rate = 1;
    // Back at the live edge, the viewer watches live again.
    if (target && surplus <= CATCHUP_MIN_SURPLUS) st.behindOnPurpose = false;
    if (target && surplus >= CATCHUP_MAX_SURPLUS && !st.behindOnPurpose && !video.seeking &&
      bufferAhead() > surplus) {
      st.jumps++;
      seekOwn(video.currentTime + surplus);
    } else if (target && surplus > CATCHUP_MIN_SURPLUS && surplus < CATCHUP_MAX_SURPLUS &&
      bufferAhead() > CATCHUP_MIN_BUFFER) {
      rate = Math.min(CATCHUP_MAX_RATE, Math.round((1 + surplus) * 20) / 20);
    }
    if (video.playbackRate !== rate) video.playbackRate = rate;
  }, 250);

  function restartHls(delay) {
    if (hls) hls.destroy();
    hls = null;
    clearTimeout(retryTimer);
    retryTimer = setTimeout(startHls, delay);
  }

  function onHlsError(ev, data) {
    if (data.details === 'manifestIncompatibleCodecsError') {
      // The stream is fine; this browser cannot decode it (H.265 without
      // hardware decoding, as in Chromium and Firefox on Linux).
      note(true, 'this browser cannot decode the stream\'s codecs: H.265 plays in Safari, or in Chrome and Edge with ' +
        'hardware HEVC decoding; give the Play URL (index.m3u8) to VLC or ffplay, or publish H.264');
      if (hls) hls.destroy();
      hls = null;
      st.unplayable = true; // reloading would not help: no watchdog restarts
      return;
    }
    var msg = data.type + '/' + data.details;
    if (data.response && data.response.code) msg += ' (HTTP ' + data.response.code + ')';
    note(!!data.fatal, msg);
    // hls.js recovers from non-fatal errors itself.
    if (!data.fatal) return;
    if (data.type === Hls.ErrorTypes.NETWORK_ERROR) {
      clearTimeout(retryTimer);
      retryTimer = setTimeout(function () {
        if (!hls) return;
        // Without a manifest (the stream is not up yet) start over;
        // otherwise carry on from where loading stopped.
        if (hls.levels && hls.levels.length) hls.startLoad(); else hls.loadSource(src);
      }, 1000);
    } else if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
      var now = performance.now();
      if (now - lastMediaRecovery < 5000) {
        restartHls(1000); // recovering did not help
      } else {
        lastMediaRecovery = now;
        hls.recoverMediaError();
      }
    } else {
      restartHls(1000);
    }
  }

  function reloadNative(delay) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(function () {
      video.src = src;
      video.load();
      play();
    }, delay);
  }

  function startNative() {
    video.addEventListener('error', function () {
      var e = video.error;
      note(true, 'mediaError/' + (e ? 'code ' + e.code + (e.message ? ' ' + e.message : '') : 'unknown'));
      reloadNative(1000);
    });
    video.src = src;
    play();
  }

  // The show ended (EXT-X-ENDLIST) and the video played to its end: say so,
  // and look every few seconds for a new show under the same name.
  var NEXT_SHOW_MS = 10000;
  video.addEventListener('ended', function () {
    st.showEnded = true;
    render();
  });
  function liveAgain() {
    // The multivariant playlist names the media playlist, maybe on another
    // node; a live one has no EXT-X-ENDLIST.
    return fetch(src, { cache: 'no-store' }).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.text().then(function (text) { return [r.url, text]; });
    }).then(function (got) {
      var uri = got[1].split('\n').filter(function (l) { return l && l[0] !== '#'; })[0];
      if (!uri) return false;
      return fetch(new URL(uri, got[0]).href, { cache: 'no-store' }).then(function (r) {
        return r.ok && r.text().then(function (text) { return text.indexOf('#EXT-X-ENDLIST') < 0; });
      });
    }).catch(function () { return false; });
  }
  setInterval(function () {
    if (!st.showEnded) return;
    liveAgain().then(function (live) {
      if (!live || !st.showEnded) return;
      st.showEnded = false;
      if (st.engine === 'hls.js') restartHls(0); else reloadNative(0);
    });
  }, NEXT_SHOW_MS);

  // Watchdog: some failures leave the player stuck without a fatal error,
  // e.g. the origin restarted and the stream's timeline began anew. Unless
  // the viewer paused or the show ended, start over when playback has not
  // moved for a while.
  var STUCK_MS = 8000;
  var lastTime = -1, lastProgress = performance.now();
  setInterval(function () {
    var now = performance.now();
    var stuck = !st.showEnded && !video.paused && video.currentTime === lastTime;
    lastTime = video.currentTime;
    if (!stuck || !st.engine || st.unplayable) {
      lastProgress = now;
      return;
    }
    if (now - lastProgress < STUCK_MS) return;
    lastProgress = now;
    note(false, 'stuck/no playback for ' + STUCK_MS / 1000 + ' s, reloading');
    if (st.engine === 'hls.js') restartHls(0); else reloadNative(0);
  }, 1000);

  document.addEventListener('securitypolicyviolation', function (e) {
    note(false, 'csp/' + e.violatedDirective + ' ' + e.blockedURI);
  });

  // Safari plays LL-HLS natively and well. Chromium-based browsers may
  // claim native HLS too (Android, newer desktop builds), but hls.js gets
  // lower latency there. ?engine=native or ?engine=hls.js overrides.
  var want = new URLSearchParams(location.search).get('engine');
  var canNative = !!video.canPlayType('application/vnd.apple.mpegurl');
  var canHls = typeof Hls !== 'undefined' && Hls.isSupported();
  video.muted = true;
  syncButton();
  if (canHls && (!canNative || want === 'hls.js' || (want !== 'native' && 'chrome' in window))) {
    st.engine = 'hls.js';
    startHls();
  } else if (canNative) {
    st.engine = 'native';
    startNative();
  } else {
    note(true, 'unsupported/this browser cannot play HLS');
  }
  render();
})();
