"""MJPEG over HTTP for headless devices: a page with the live view, people count, FPS and
per-stage latency, polled from a JSON endpoint. Bound to 127.0.0.1 unless asked otherwise.

    GET /             the page (self-contained HTML + JS, no network)
    GET /stream.mjpg  multipart/x-mixed-replace stream of JPEG frames
    GET /frame.jpg    the newest frame
    GET /stats.json   people count, FPS, per-stage mean latency, frame index (+ counts: people
                      in view, unique, line in/out, zone occupancy, people-in-view history)

Frames are JPEG-encoded only while someone watches, so an idle server costs nothing.
http.server + ThreadingMixIn (Python 3.6 has no ThreadingHTTPServer).
"""

import json
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import cv2

from edge_runtime.errors import EdgeError

BOUNDARY = "nanopruneframe"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>nanoprune live</title>
<style>
body{font-family:sans-serif;background:#111;color:#eee;margin:0;padding:12px}
#view{max-width:100%;border:1px solid #444}
.row{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.big{font-size:40px;font-weight:bold}
table{border-collapse:collapse}td{padding:2px 10px;border-bottom:1px solid #333}
#counts{display:none}#spark{background:#1b1b1b;border:1px solid #333}
</style></head><body>
<h2 id="title">nanoprune</h2>
<div class="row">
<img id="view" src="/stream.mjpg" alt="live view">
<div>
<div>people</div><div class="big" id="people">-</div>
<div>FPS</div><div class="big" id="fps">-</div>
<table id="stages"></table>
<div id="counts">
<div>in view / unique</div><div class="big" id="inview">-</div>
<table id="places"></table>
<div>people in view, last minutes</div>
<canvas id="spark" width="240" height="60"></canvas>
</div>
<p id="frame"></p>
</div></div>
<script>
function poll(){
  fetch('/stats.json',{cache:'no-store'}).then(function(r){return r.json();}).then(function(s){
    document.getElementById('title').textContent = s.model || 'nanoprune';
    document.getElementById('people').textContent = s.people;
    document.getElementById('fps').textContent = s.fps.toFixed(1);
    var rows = '';
    for (var k in s.stages_ms){ rows += '<tr><td>'+k+'</td><td>'+s.stages_ms[k].toFixed(1)+' ms</td></tr>'; }
    document.getElementById('stages').innerHTML = rows;
    document.getElementById('frame').textContent = 'frame ' + s.frame;
    if (s.counts){ showCounts(s.counts); }
  }).catch(function(){}).then(function(){ setTimeout(poll, 500); });
}
function showCounts(c){
  document.getElementById('counts').style.display = 'block';
  document.getElementById('inview').textContent = c.in_view + ' / ' + c.unique;
  var rows = '';
  for (var k in c.lines){ rows += '<tr><td>'+k+'</td><td>in '+c.lines[k][0]+'</td><td>out '+c.lines[k][1]+'</td></tr>'; }
  for (var z in c.zones){ rows += '<tr><td>'+z+'</td><td colspan="2">'+c.zones[z]+' inside</td></tr>'; }
  document.getElementById('places').innerHTML = rows;
  var cv = document.getElementById('spark'), g = cv.getContext('2d'), h = c.history || [];
  g.clearRect(0, 0, cv.width, cv.height);
  if (h.length < 1){ return; }
  var top = 1, t0 = h[0][0], span = Math.max(h[h.length-1][0] - t0, 1);
  for (var i = 0; i < h.length; i++){ top = Math.max(top, h[i][1]); }
  g.strokeStyle = '#3c3'; g.lineWidth = 2; g.beginPath();
  for (var j = 0; j < h.length; j++){
    var x = (h[j][0] - t0) / span * (cv.width - 4) + 2, y = cv.height - 4 - h[j][1] / top * (cv.height - 16);
    if (j){ g.lineTo(x, y); } else { g.moveTo(x, y); }
  }
  g.stroke(); g.fillStyle = '#aaa'; g.fillText('max ' + top, 4, 10);
}
poll();
</script></body></html>
"""


class _Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MjpegServer(object):
    """Serve the newest annotated frame and status; `write(result)` is the loop's output hook."""

    needs_image = True

    def __init__(self, host="127.0.0.1", port=8080, quality=80, title="nanoprune"):
        self.quality, self.title = int(quality), title
        self._cond = threading.Condition()
        self._jpeg, self._seq, self._closed = None, 0, False
        self._status = {"model": title, "people": 0, "fps": 0.0, "stages_ms": {}, "frame": -1}
        self.watchers = 0
        try:
            self.httpd = _Server((host, int(port)), self._handler_class())
        except OSError as exc:
            raise EdgeError(
                "--http {}:{}: cannot listen there: {}".format(host, port, exc)
            ) from exc
        self.host, self.port = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="mjpeg", daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://{}:{}/".format(self.host, self.port)

    # -- loop side -----------------------------------------------------------------------------
    def write(self, result):
        status = {
            "model": self.title,
            "people": int(result.people),
            "fps": float(result.fps),
            "stages_ms": result.stage_ms,
            "frame": int(result.index),
            "time": time.time(),
        }
        if getattr(result, "counts", None) is not None:
            status["counts"] = result.counts
        jpeg = None
        if self.watchers > 0 or self._jpeg is None:
            ok, buf = cv2.imencode(
                ".jpg", result.annotated, [int(cv2.IMWRITE_JPEG_QUALITY), self.quality]
            )
            jpeg = buf.tobytes() if ok else None
        with self._cond:
            self._status = status
            if jpeg is not None:
                self._jpeg = jpeg
                self._seq += 1
            self._cond.notify_all()

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5.0)

    # -- HTTP side -----------------------------------------------------------------------------
    def _watch(self, delta):
        with self._cond:
            self.watchers += delta

    def _next_jpeg(self, last_seq, timeout=1.0):
        with self._cond:
            if self._seq == last_seq and not self._closed:
                self._cond.wait(timeout)
            return self._seq, self._jpeg, self._closed

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # quiet: the loop prints its own summary
                pass

            def _send(self, body, content_type, status=200):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                route = ROUTES.get(path)
                if route is None:
                    self._send(b"not found\n", "text/plain", 404)
                else:
                    route(self)

            def page(self):
                self._send(PAGE.encode("utf-8"), "text/html; charset=utf-8")

            def stats(self):
                with server._cond:
                    body = json.dumps(server._status).encode("utf-8")
                self._send(body, "application/json")

            def frame(self):
                jpeg = server._jpeg
                if jpeg is None:
                    self._send(b"no frame yet\n", "text/plain", 503)
                else:
                    self._send(jpeg, "image/jpeg")

            def stream(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=" + BOUNDARY)
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                server._watch(+1)
                seq = -1
                try:
                    while True:
                        seq, jpeg, closed = server._next_jpeg(seq)
                        if closed:
                            break
                        if jpeg is None:
                            continue
                        self.wfile.write(
                            "--{}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n".format(
                                BOUNDARY, len(jpeg)
                            ).encode("ascii")
                        )
                        self.wfile.write(jpeg)
                        self.wfile.write(b"\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the viewer went away
                finally:
                    server._watch(-1)

        ROUTES = {
            "/": Handler.page,
            "/index.html": Handler.page,
            "/stats.json": Handler.stats,
            "/frame.jpg": Handler.frame,
            "/stream.mjpg": Handler.stream,
        }
        return Handler
