#!/usr/bin/env python3
"""Number-crunching helpers for scripts/bench.sh (stdlib only).

  bench.py stats FILE                     "median min max n" of the numbers in FILE (one a line)
  bench.py fmt-ms FILE                    "median (min-max)" in ms of the ns numbers in FILE
  bench.py gen-folder DIR KIND            script folder: KIND = 2 | 1000 | 10000 | 50mb
  bench.py tar DIR SCRIPT OUT UID GID     the payload the product copies, as one tar file
  bench.py freeport START                 first port >= START that 127.0.0.1 can bind
  bench.py watch URL OUT DEADLINE_S       poll URL every ~5 ms; write the ns time of the first 200
  bench.py breakdown LOG...               per-call durations from docker-wrap logs (markdown)
  bench.py rest-deploy URL BODY           POST BODY (JSON) to URL's stream endpoint; prints
                                          "total_ns first_event_ns final_stage"
  bench.py get-ns URL                     one GET; prints "ns status"
  bench.py health-burst URL N             N concurrent GETs of URL; prints how many got 200
  bench.py poll URL SCRIPT OUT STOP       GET /health and POST /execute of SCRIPT every 20 ms
                                          until the file STOP exists; one line per round in OUT:
                                          "ns ok|error marker" (marker: the script's last line)
  bench.py latency URL METHOD PATH N      N sequential requests on one keep-alive connection
                                          (POST: /execute of /payload/hello/hello.md); one ns
                                          time a line, after 50 unmeasured warm-up requests
  bench.py rps URL METHOD PATH CONC SECS  CONC keep-alive clients (threads) for SECS seconds;
                                          prints "requests_per_second failed"
  bench.py pct FILE P...                  the P-th percentiles (nearest rank) of FILE, in ms
"""
import http.client
import json
import io
import os
import socket
import statistics
import sys
import tarfile
import time


def numbers(path):
    with open(path) as f:
        return [float(line.split()[0]) for line in f if line.strip()]


def rest_deploy(url, body):
    host, port = url.split("://", 1)[1].split(":")
    t0 = time.monotonic_ns()
    c = http.client.HTTPConnection(host, int(port), timeout=300)
    c.request("POST", "/api/deploy/docker-registry/stream", body=body,
              headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
    r = c.getresponse()
    first = None
    stage = "none"
    if r.status != 200:
        print(f"0 0 http-{r.status}")
        return
    while True:
        line = r.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            if first is None:
                first = time.monotonic_ns() - t0
            e = json.loads(line[6:])
            stage = e.get("stage", "?")
            if stage in ("completed", "error"):
                break
    total = time.monotonic_ns() - t0
    c.close()
    print(f"{total} {first or 0} {stage}")


def get_ns(url):
    host, rest = url.split("://", 1)[1].split(":", 1)
    port, _, path = rest.partition("/")
    t0 = time.monotonic_ns()
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    c.request("GET", "/" + path)
    r = c.getresponse()
    r.read()
    print(f"{time.monotonic_ns() - t0} {r.status}")


def health_burst(url, n):
    import threading
    host, rest = url.split("://", 1)[1].split(":", 1)
    port, _, path = rest.partition("/")
    ok = []
    barrier = threading.Barrier(n)

    def one():
        barrier.wait()
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=30)
            c.request("GET", "/" + path)
            if c.getresponse().status == 200:
                ok.append(1)
        except OSError:
            pass

    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(len(ok))


def stats(path):
    xs = numbers(path)
    if not xs:
        print("nan nan nan 0")
        return
    print(f"{statistics.median(xs):.0f} {min(xs):.0f} {max(xs):.0f} {len(xs)}")


def fmt_ms(path):
    xs = [x / 1e6 for x in numbers(path)]
    if not xs:
        print("n/a")
        return
    print(f"{statistics.median(xs):.0f} ({min(xs):.0f}-{max(xs):.0f})")


HELLO = """# Demo task {id=demo-task}

@shell
prompt: echo "hello from fractalic shell"; uname -s
use-header: "# Shell output {id=shell-output}"

@return
block: shell-output
"""
SETTINGS = 'defaultProvider = "demo"\n\n[settings.demo]\nmodel = "m"\napiKey = "placeholder"\n'


def gen_folder(d, kind):
    """hello.md + settings.toml, plus the extra files KIND asks for (counted in the total)."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "hello.md"), "w") as f:
        f.write(HELLO)
    with open(os.path.join(d, "settings.toml"), "w") as f:
        f.write(SETTINGS)
    if kind in ("1000", "10000"):
        n = int(kind) - 2
        per_dir = 500
        for i in range(n):
            sub = os.path.join(d, "data", f"d{i // per_dir:03d}")
            if i % per_dir == 0:
                os.makedirs(sub, exist_ok=True)
            with open(os.path.join(sub, f"f{i:05d}.md"), "w") as f:
                f.write(f"# note {i}\nsmall file {i}\n")
    elif kind == "50mb":
        with open(os.path.join(d, "big.bin"), "wb") as f:
            for _ in range(50):
                f.write(os.urandom(1 << 20))
    elif kind != "2":
        sys.exit(f"unknown folder kind {kind}")


def make_tar(src, script, out, uid, gid):
    """The layout the product copies (design.md step 4): /payload/<script>/..., settings.toml
    at /fractalic/ and /, the /fractalic/payload link; owned by the image user, secrets 0600."""
    uid, gid = int(uid), int(gid)
    now = int(time.time())

    def info(name, kind, mode, size=0, link=""):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.size, ti.uid, ti.gid, ti.mtime = kind, mode, size, uid, gid, now
        ti.linkname = link
        return ti

    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as t:
        t.addfile(info(f"payload/{script}/", tarfile.DIRTYPE, 0o755))
        for root, dirs, files in os.walk(src):
            dirs.sort()
            rel = os.path.relpath(root, src)
            base = f"payload/{script}" if rel == "." else f"payload/{script}/{rel}"
            if rel != ".":
                t.addfile(info(base + "/", tarfile.DIRTYPE, 0o755))
            for name in sorted(files):
                p = os.path.join(root, name)
                mode = 0o600 if name == "settings.toml" else 0o644
                with open(p, "rb") as fh:
                    t.addfile(info(f"{base}/{name}", tarfile.REGTYPE, mode, os.path.getsize(p)), fh)
        settings = os.path.join(src, "settings.toml")
        if os.path.exists(settings):
            data = open(settings, "rb").read()
            for dest in ("fractalic/settings.toml", "settings.toml"):
                t.addfile(info(dest, tarfile.REGTYPE, 0o600, len(data)), io.BytesIO(data))
        t.addfile(info("fractalic/payload", tarfile.SYMTYPE, 0o777, link="/payload"))


def freeport(start):
    for port in range(int(start), 65000):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            print(port)
            return
        except OSError:
            pass
        finally:
            s.close()
    sys.exit("no free port")


def watch(url, out, deadline_s):
    """Tight readiness poll: the wall-clock ns (same clock as `date +%s%N`) of the first 200."""
    rest = url.split("://", 1)[1]
    hostport, path = rest.split("/", 1)
    host, port = hostport.split(":")
    end = time.monotonic() + float(deadline_s)
    while time.monotonic() < end:
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=0.5)
            c.request("GET", "/" + path)
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                with open(out, "w") as f:
                    f.write(f"{time.time_ns()}\n")
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.005)
    sys.exit(1)


def verb(argv):
    """A short name for a docker call: `cp passwd`, `cp payload`, `exec curl`, `ps`, ..."""
    a = argv.split()
    if not a:
        return "?"
    if a[0] == "cp":
        if a[1] == "-":
            return "cp - NAME:/ (payload)"
        if a[1].endswith(":/etc/passwd"):
            return "cp NAME:/etc/passwd -"
        return "cp NAME:SCRIPT - (main-script check)"
    if a[0] in ("image", "container") and len(a) > 1:
        return f"{a[0]} {a[1]}"
    if a[0] == "exec":
        return "exec curl :5859/status"
    if a[0] == "ps":
        return "ps -a"
    return a[0]


def breakdown(logs):
    """Median per docker verb over runs; the gaps between calls; one log = one deploy."""
    per = {}
    order = []
    gaps, totals, insides = [], [], []
    for path in logs:
        calls = []
        with open(path) as f:
            for line in f:
                if line.startswith("#"):
                    continue
                s, e, rc, argv = line.rstrip("\n").split(" ", 3)
                calls.append((int(s), int(e), verb(argv)))
        if not calls:
            continue
        # The deploy's own start/end, written by bench.sh as "#run START END".
        run = [line.split() for line in open(path) if line.startswith("#run")]
        seen = {}
        for s, e, v in calls:
            if v not in order:
                order.append(v)
            seen[v] = seen.get(v, 0) + (e - s)
            per.setdefault(v, [])
        for v, d in seen.items():
            per[v].append(d)
        if run:
            t0, t1 = int(run[0][1]), int(run[0][2])
            totals.append(t1 - t0)
            insides.append(sum(e - s for s, e, _ in calls))
            # Named gaps: before the first call, start -> exec (health wait), after the last.
            g = {"before first call (flags, plugin compile)": calls[0][0] - t0,
                 "after last call (output, exit)": t1 - calls[-1][1]}
            for (s0, e0, v0), (s1, e1, v1) in zip(calls, calls[1:]):
                key = f"gap {v0} -> {v1}"
                g[key] = g.get(key, 0) + (s1 - e0)
            gaps.append(g)
    med = lambda xs: statistics.median(xs) / 1e6 if xs else float("nan")
    total = med(totals)
    print("| step | median ms | share of deploy |")
    print("|---|---:|---:|")
    for v in order:
        m = med(per[v])
        print(f"| docker {v} | {m:.0f} | {100 * m / total:.0f}% |")
    keys = []
    for g in gaps:
        for k in g:
            if k not in keys:
                keys.append(k)
    for k in keys:
        m = med([g.get(k, 0) for g in gaps])
        if m >= 1:
            print(f"| {k} | {m:.0f} | {100 * m / total:.0f}% |")
    inside = med(insides)
    print(f"| **all docker calls** | {inside:.0f} | {100 * inside / total:.0f}% |")
    print(f"| **whole deploy** | {total:.0f} | 100% |")


def poll(url, script, out, stop):
    rest = url.split("://", 1)[1]
    host, port = rest.split("/", 1)[0].split(":")
    body = json.dumps({"filename": script})
    with open(out, "w") as f:
        while not os.path.exists(stop):
            t = time.time_ns()
            status, marker = "ok", "-"
            try:
                c = http.client.HTTPConnection(host, int(port), timeout=5)
                c.request("GET", "/health")
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    status = f"health-{r.status}"
                c.request("POST", "/execute", body, {"Content-Type": "application/json"})
                r = c.getresponse()
                v = json.loads(r.read())
                c.close()
                if not v.get("success"):
                    status = "execute-failed"
                else:
                    lines = (v.get("return_content") or "").strip().splitlines()
                    marker = lines[-1].replace(" ", "_") if lines else "-"
            except (OSError, http.client.HTTPException, ValueError) as e:
                status = "error-" + type(e).__name__
            f.write(f"{t} {status} {marker}\n")
            f.flush()
            time.sleep(0.02)


EXECUTE_BODY = json.dumps({"filename": "/payload/hello/hello.md"})


def _one(c, method, path):
    if method == "POST":
        c.request("POST", path, EXECUTE_BODY, {"Content-Type": "application/json"})
    else:
        c.request("GET", path)
    r = c.getresponse()
    r.read()
    return r.status


def _conn(url):
    host, port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=30)


def latency(url, method, path, n):
    c = _conn(url)
    for _ in range(50):
        _one(c, method, path)
    out = []
    for _ in range(int(n)):
        t = time.monotonic_ns()
        status = _one(c, method, path)
        out.append(time.monotonic_ns() - t)
        if status != 200:
            sys.exit(f"{method} {url}{path}: HTTP {status}")
    print("\n".join(str(x) for x in out))


def rps(url, method, path, conc, secs):
    import threading
    done, failed = [0], [0]
    lock = threading.Lock()
    end = time.monotonic() + float(secs)

    def client():
        c = _conn(url)
        n = f = 0
        while time.monotonic() < end:
            try:
                if _one(c, method, path) == 200:
                    n += 1
                else:
                    f += 1
            except (OSError, http.client.HTTPException):
                f += 1
                c = _conn(url)
        with lock:
            done[0] += n
            failed[0] += f

    ts = [threading.Thread(target=client) for _ in range(int(conc))]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(f"{done[0] / (time.monotonic() - t0):.0f} {failed[0]}")


def pct(path, *ps):
    xs = sorted(numbers(path))
    out = []
    for p in ps:
        k = max(0, min(len(xs) - 1, int(round(float(p) / 100 * len(xs) + 0.5)) - 1))
        out.append(f"{xs[k] / 1e6:.3f}")
    print(" ".join(out))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "stats": stats,
        "fmt-ms": fmt_ms,
        "gen-folder": gen_folder,
        "tar": make_tar,
        "freeport": freeport,
        "watch": watch,
        "breakdown": lambda *logs: breakdown(logs),
        "rest-deploy": rest_deploy,
        "get-ns": get_ns,
        "health-burst": lambda url, n: health_burst(url, int(n)),
        "poll": poll,
        "latency": latency,
        "rps": rps,
        "pct": pct,
    }[cmd](*args)


if __name__ == "__main__":
    main()
