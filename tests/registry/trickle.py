#!/usr/bin/env python3
"""trickle.py URL TOKEN SHA256 LENGTH INTERVAL_S: a slow artifact uploader.

PUTs LENGTH bytes (all 'x', so SHA256 is known in advance) to URL with
Content-Length set, one byte every INTERVAL_S seconds, and stops sending as
soon as the server answers or closes. Prints one line: "STATUS SECONDS BODY"
(STATUS 000 when the connection ended without an answer)."""
import socket
import sys
import time
from urllib.parse import urlsplit

url, token, sha, length, interval = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
u = urlsplit(url)
t0 = time.monotonic()
s = socket.create_connection((u.hostname, u.port), timeout=120)
path = u.path + ("?" + u.query if u.query else "")
s.sendall((f"PUT {path} HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: Bearer {token}\r\n"
           f"X-Kiln-Sha256: {sha}\r\nContent-Length: {length}\r\n\r\n").encode())
got = b""
s.setblocking(False)
sent = 0
try:
    while True:
        try:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
            if b"\r\n\r\n" in got:
                head, _, rest = got.partition(b"\r\n\r\n")
                cl = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if cl and len(rest) >= int(cl[0].split(b":")[1]):
                    break
            continue
        except BlockingIOError:
            pass
        if sent < length:
            try:
                s.send(b"x")
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                s.setblocking(True)
                s.settimeout(2)
                try:
                    got += s.recv(65536)
                except OSError:
                    pass
                break
        time.sleep(interval if sent < length else 0.05)
except ConnectionResetError:
    pass
secs = time.monotonic() - t0
status = got.split(b" ", 2)[1].decode() if got.startswith(b"HTTP/") else "000"
body = got.partition(b"\r\n\r\n")[2].decode(errors="replace").replace("\n", " ")
print(f"{status} {secs:.1f} sent={sent} {body}")
