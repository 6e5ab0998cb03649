#!/usr/bin/env python3
"""Drives an edgefleet agent's local API for targets/linux-arm/run.sh: waits
for it, runs N KWS inferences on the real utterance, checks the label and
prints the mean request time. Usage: agent.py STATE_DIR INPUT_F32_NPY N"""
import json
import pathlib
import sys
import time
import urllib.request

state, npy, n = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
raw = pathlib.Path(npy).read_bytes()
header_len = int.from_bytes(raw[8:10], "little")
import struct
data = raw[10 + header_len:]
x = list(struct.unpack(f"<{len(data) // 4}f", data))

deadline = time.time() + 120
while not (state / "api.addr").exists():
    if time.time() > deadline:
        sys.exit("agent API did not come up")
    time.sleep(0.1)
addr = (state / "api.addr").read_text().strip()
body = json.dumps({"input": x}).encode()
t0 = time.time()
for i in range(n):
    req = urllib.request.Request(f"http://{addr}/v1/infer", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        p = json.load(r)
    if p.get("label") != "on":
        sys.exit(f"inference {i}: expected 'on', got {p}")
print(f"{n} inferences, label 'on', {1000 * (time.time() - t0) / n:.1f} ms per request")
