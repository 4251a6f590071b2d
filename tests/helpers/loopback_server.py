"""An HTTP server on 127.0.0.1 (port chosen by the system) that serves files and misbehaves on purpose.

Routes map a path to a handler(request, query); helpers below answer as a file server,
Google Drive (folder view, virus-scan confirmation, quota page) and Zenodo's records API do.
Every request is logged (path, Range header) so that tests can see what the client asked.
"""
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.log.append((parts.path, self.headers.get("Range"), query))
        route = self.server.routes.get(parts.path)
        if route is None:
            return send(self, b"<html><body>Not Found</body></html>", status=404, content_type="text/html")
        route(self, query)

    def log_message(self, *args):  # keep test output quiet
        pass


class LoopbackServer:
    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.routes, self.httpd.log = {}, []
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def routes(self):
        return self.httpd.routes

    @property
    def log(self):
        return self.httpd.log

    def hits(self, path):
        """The Range header (or None) of each request for `path`."""
        return [rng for p, rng, _ in self.log if p == path]

    def queries(self, path):
        return [query for p, _, query in self.log if p == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def send(h, body, *, status=200, content_type="application/octet-stream", headers=None):
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


def file_route(data, *, ranges=True, drop_first=0, delay=0.0, content_type="application/octet-stream",
               headers=None):
    """A file: honours Range (unless ranges=False), the first `drop_first` answers stop halfway
    and close the connection, and `delay` seconds pass between headers and body."""
    state = {"served": 0}

    def route(h, query):
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
        status, extra = 200, dict(headers or {})
        if ranges and m:
            start = int(m.group(1))
            if start >= len(data):
                return send(h, b"", status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            extra["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes" if ranges else "none")
        for k, v in extra.items():
            h.send_header(k, v)
        h.end_headers()
        state["served"] += 1
        if delay:
            h.wfile.flush()
            time.sleep(delay)
        if state["served"] <= drop_first:
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(body)

    return route


def html_route(text, status=200):
    return lambda h, q: send(h, text.encode(), status=status, content_type="text/html; charset=utf-8")


# --- Google Drive, as gdown meets it -------------------------------------------------------

QUOTA_PAGE = (
    '<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>'
    '<div class="uc-main"><div id="uc-text"><p class="uc-error-caption">Sorry, you can&#39;t view or '
    'download this file at this time.</p><p class="uc-error-subcaption">Too many users have viewed or '
    'downloaded this file recently. Please try accessing the file again later. If the file you are trying '
    'to access is particularly large or is shared with many people, it may take up to 24 hours to be able '
    'to view or download the file.</p></div></div></body></html>')


def drive_id(name):
    """A Drive-like id (gdown wants 25 or more word characters)."""
    return "1" + hashlib.sha1(name.encode()).hexdigest()[:32]


class FakeDrive:
    """Drive's pages on a LoopbackServer: /embeddedfolderview, /uc (redirect) and /download.

    A big file gets the virus-scan confirmation page first; a file in `quota` gets the quota page.
    """

    def __init__(self, server):
        self.server = server
        self.files, self.folders = {}, {}  # id -> (name, data); id -> (name, [child ids])
        self.big, self.quota, self.drops = set(), set(), {}
        server.routes["/embeddedfolderview"] = self._folder_view
        server.routes["/uc"] = self._uc
        server.routes["/download"] = self._download

    def add_folder(self, name, parent=None):
        fid = drive_id("folder:" + name)
        self.folders[fid] = (name, [])
        if parent:
            self.folders[parent][1].append(fid)
        return fid

    def add_file(self, folder, name, data):
        fid = drive_id(f"file:{folder}/{name}")
        self.files[fid] = (name, data)
        if folder:
            self.folders[folder][1].append(fid)
        return fid

    def _folder_view(self, h, query):
        name, children = self.folders[query["id"]]
        links = []
        for cid in children:
            if cid in self.folders:
                links.append(f'<a href="https://drive.google.com/drive/folders/{cid}">'
                             f'<div class="flip-entry-title">{self.folders[cid][0]}</div></a>')
            else:
                links.append(f'<a href="https://drive.google.com/file/d/{cid}/view?usp=drive_web" target="_blank">'
                             f'<div class="flip-entry-title">{self.files[cid][0]}</div></a>')
        page = f"<!DOCTYPE html><html><head><title>{name}</title></head><body>{''.join(links)}</body></html>"
        send(h, page.encode(), content_type="text/html; charset=utf-8")

    def _uc(self, h, query):
        h.send_response(303)
        h.send_header("Location", f"https://drive.usercontent.google.com/download?id={query['id']}&export=download")
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _download(self, h, query):
        fid = query.get("id")
        if fid not in self.files:
            return send(h, b"<html><body>Not found</body></html>", status=404, content_type="text/html")
        if fid in self.quota:
            return send(h, QUOTA_PAGE.encode(), status=200, content_type="text/html; charset=utf-8")
        if fid in self.big and query.get("confirm") != "t":
            page = ('<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>'
                    '<p class="uc-warning-caption">Google Drive can&#39;t scan this file for viruses.</p>'
                    '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
                    '<input type="submit" id="uc-download-link" value="Download anyway"/>'
                    f'<input type="hidden" name="id" value="{fid}"><input type="hidden" name="export" value="download">'
                    '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="0f1e2d3c">'
                    '</form></body></html>')
            return send(h, page.encode(), content_type="text/html; charset=utf-8")
        name, data = self.files[fid]
        route = self.drops.get(fid) or file_route(data, headers={
            "Content-Disposition": f'attachment; filename="{name}"'})
        route(h, query)

    def drop_first(self, fid, times=1):
        """The file's first `times` answers stop halfway and close the connection."""
        name, data = self.files[fid]
        self.drops[fid] = file_route(data, drop_first=times, headers={
            "Content-Disposition": f'attachment; filename="{name}"'})


# --- Zenodo's records API ----------------------------------------------------------------------

def add_zenodo_record(server, record, files, *, bad_md5=()):
    """Serve /api/records/<record> listing `files` {key: bytes} and each file's content."""
    entries = []
    for key, data in files.items():
        path = f"/api/records/{record}/files/{key}/content"
        server.routes[path] = file_route(data)
        md5 = hashlib.md5(b"other" if key in bad_md5 else data).hexdigest()
        entries.append({"id": key, "key": key, "size": len(data), "checksum": f"md5:{md5}",
                        "links": {"self": server.url + path}})
    body = json.dumps({"id": int(record), "files": entries}).encode()
    server.routes[f"/api/records/{record}"] = lambda h, q: send(h, body, content_type="application/json")
