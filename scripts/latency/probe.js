// Injected by scripts/latency into every document before the page's own
// scripts run (DevTools Page.addScriptToEvaluateOnNewDocument, which a
// Content-Security-Policy does not block). It catches the Hls instance the
// page creates, whichever page it is, and records what the player did at
// window.__latency. Times are epoch milliseconds (performance.timeOrigin +
// performance.now(), the clock hls.js's stats and requestVideoFrameCallback
// use), so they compare with PROGRAM-DATE-TIME, the origin's wall clock.
(function () {
  'use strict';
  if (window.__latency) return;
  var T0 = performance.timeOrigin; // navigation start
  var L = {
    hooked: false, firstFrame: 0, firstPlaying: 0, waiting: 0, stalledMs: 0, waitingSince: 0,
    errors: [], hosts: {}, steeringLoads: 0, pathway: '',
    samples: [], frames: [], parts: [], playlists: [], loads: [], seeks: [], config: null
  };
  Object.defineProperty(window, '__latency', { value: L });
  var MAXKEEP = 4000; // bounds every array: a 2-minute run at 30 fps

  function keep(a, v) { if (a.length < MAXKEEP) a.push(v); }
  function abs(t) { return T0 + t; }

  // Fragments (segments) seen, to map a media time to its wall clock the
  // way hls.js's playingDate does: PROGRAM-DATE-TIME + (t - frag.start).
  var frags = [];
  function noteFrag(f) {
    if (!f || typeof f.programDateTime !== 'number') return;
    for (var i = frags.length - 1; i >= 0 && i >= frags.length - 8; i--) {
      if (frags[i] === f) return;
    }
    frags.push(f);
    if (frags.length > 64) frags.shift();
  }
  function pdtAt(t) {
    var best = null;
    for (var i = 0; i < frags.length; i++) {
      var f = frags[i];
      if (f.start <= t + 0.001 && (!best || f.start > best.start)) best = f;
    }
    return best ? best.programDateTime + (t - best.start) * 1000 : NaN;
  }

  // safe keeps a probe bug out of hls.js: an exception in an event
  // handler would become an hls.js error.
  function safe(fn) {
    return function () {
      try { return fn.apply(this, arguments); } catch (e) {
        if (L.errors.length < 200) L.errors.push('probe/' + e);
      }
    };
  }

  function edgeOf(text) {
    var pdt = NaN, sum = 0, lines = text.split('\n');
    for (var i = 0; i < lines.length; i++) {
      var l = lines[i];
      if (l.lastIndexOf('#EXT-X-PROGRAM-DATE-TIME:', 0) === 0) {
        pdt = Date.parse(l.slice(25).trim());
        sum = 0;
      } else if (l.lastIndexOf('#EXT-X-PART:', 0) === 0) {
        var m = /DURATION=([0-9.]+)/.exec(l);
        if (m) sum += parseFloat(m[1]);
      }
    }
    return pdt + sum * 1000;
  }

  function hook(hls, video) {
    if (L.hooked) return;
    L.hooked = true;
    var E = hls.constructor.Events;
    L.config = {
      lowLatencyMode: hls.config.lowLatencyMode,
      maxLiveSyncPlaybackRate: hls.config.maxLiveSyncPlaybackRate,
      liveSyncDuration: hls.config.liveSyncDuration === undefined ? null : hls.config.liveSyncDuration,
      liveSyncDurationCount: hls.config.liveSyncDurationCount,
      version: hls.constructor.version
    };

    // A playlist response: how far behind its newest part's media end it
    // arrived (blocking reload wake-up, relay, delivery, all together).
    hls.on(E.LEVEL_LOADED, safe(function (ev, d) {
      var det = d.details, st = d.stats;
      if (!det || !st || !det.fragments.length) return;
      // The newest part's media end, from the playlist text: the last
      // PROGRAM-DATE-TIME plus the durations of the parts after it. (The
      // dates and starts hls.js derives can be a part off for the open
      // segment.)
      var edgeWall = edgeOf(det.m3u8 || '');
      if (!isFinite(edgeWall)) return;
      keep(L.playlists, { t: abs(st.loading.end), lag: abs(st.loading.end) - edgeWall,
        wait: st.loading.end - st.loading.start });
    }));
    hls.on(E.FRAG_LOADED, safe(function (ev, d) {
      var p = d.part || d.frag;
      noteFrag(d.frag);
      if (L.loads.length < 20) {
        L.loads.push({ sn: d.frag.sn, part: d.part ? d.part.index : -1, start: p.start, dur: p.duration,
          loaded: abs(p.stats.loading.end), currentTime: video.currentTime });
      }
      try {
        var host = new URL(p.url).host;
        L.hosts[host] = (L.hosts[host] || 0) + 1;
      } catch (e) { /* not a URL */ }
    }));
    // A part in the buffer: when its bytes arrived and when it was
    // appended, against its media end (PROGRAM-DATE-TIME based).
    hls.on(E.FRAG_BUFFERED, safe(function (ev, d) {
      noteFrag(d.frag);
      var p = d.part, f = d.frag;
      if (!p || typeof f.programDateTime !== 'number') return;
      var st = p.stats;
      var endWall = f.programDateTime + (p.fragOffset + p.duration) * 1000;
      keep(L.parts, {
        start: p.start, dur: p.duration * 1000, endWall: endWall,
        reqStart: abs(st.loading.start), loaded: abs(st.loading.end), buffered: abs(st.buffering.end),
        shown: 0, presented: 0
      });
    }));
    hls.on(E.STEERING_MANIFEST_LOADED, safe(function () { L.steeringLoads++; }));
    hls.on(E.ERROR, safe(function (ev, d) {
      if (L.errors.length < 200) L.errors.push((d.fatal ? 'FATAL ' : '') + d.type + '/' + d.details);
    }));

    video.addEventListener('playing', function () {
      if (!L.firstPlaying) L.firstPlaying = Date.now();
      if (L.waitingSince) {
        L.stalledMs += performance.now() - L.waitingSince;
        L.waitingSince = 0;
      }
    });
    video.addEventListener('seeking', function () {
      if (L.seeks.length >= 20) return;
      var det = hls.latestLevelDetails, b = video.buffered;
      L.seeks.push({ t: Date.now(), to: video.currentTime, sync: hls.liveSyncPosition, latency: hls.latency,
        edge: det ? det.edge : null, age: det ? det.age : null,
        buffered: b.length ? [b.start(0), b.end(b.length - 1)] : null });
    });
    video.addEventListener('waiting', function () {
      if (!L.firstPlaying) return;
      L.waiting++;
      if (!L.waitingSince) L.waitingSince = performance.now();
    });

    // Every frame shown: when it is expected on screen against the wall
    // clock at which it reached the ingest. The first frame of each part
    // also gives how long that part sat in the buffer.
    var pi = 0;
    function onFrame(now, md) {
      var shown = abs(md.expectedDisplayTime), presented = abs(md.presentationTime);
      if (!L.firstFrame) {
        L.firstFrame = presented;
        L.firstMediaTime = md.mediaTime;
      }
      var w = pdtAt(md.mediaTime);
      keep(L.frames, { t: shown, g2g: shown - w, render: md.expectedDisplayTime - md.presentationTime });
      for (; pi < L.parts.length; pi++) {
        var p = L.parts[pi];
        if (md.mediaTime < p.start - 0.001) break; // not reached yet
        if (md.mediaTime < p.start + p.dur / 1000 - 0.001 && !p.shown) {
          p.shown = shown;
          p.presented = presented;
        }
        if (md.mediaTime < p.start + p.dur / 1000 - 0.001) break;
      }
      video.requestVideoFrameCallback(onFrame);
    }
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onFrame);

    // Glass-to-glass as the issue defines it, every 250 ms.
    setInterval(function () {
      if (!L.firstPlaying) return;
      var pd = hls.playingDate;
      var b = video.buffered, t = video.currentTime, ahead = 0;
      for (var i = 0; i < b.length; i++) {
        if (b.start(i) <= t + 0.1 && t < b.end(i)) ahead = b.end(i) - t;
      }
      var lvl = hls.levels && hls.levels[hls.currentLevel];
      L.pathway = lvl && lvl.pathwayId ? lvl.pathwayId : '';
      var now = Date.now();
      keep(L.samples, {
        t: now, g2g: pd ? now - pd.getTime() : null, latency: hls.latency, target: hls.targetLatency,
        drift: hls.drift, ahead: ahead, rate: video.playbackRate, playing: !video.paused && !L.waitingSince
      });
    }, 250);
  }

  // hls.min.js assigns window.Hls once (UMD): wrap attachMedia of the
  // class it assigns, so the instance the page makes is hooked before it
  // loads anything.
  var H;
  Object.defineProperty(window, 'Hls', {
    configurable: true, enumerable: true,
    get: function () { return H; },
    set: function (v) {
      H = v;
      if (v && v.prototype && !v.prototype.__latencyHooked) {
        var attach = v.prototype.attachMedia;
        v.prototype.attachMedia = function (m) {
          hook(this, m);
          return attach.apply(this, arguments);
        };
        v.prototype.__latencyHooked = true;
      }
    }
  });
})();
