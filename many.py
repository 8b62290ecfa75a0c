import http.client, threading, collections
res = collections.Counter()
def worker():
    c = http.client.HTTPConnection("127.0.0.1", 19200, timeout=5)
    for i in range(200):
        try:
            c.request("GET", f"/x{i}")
            r = c.getresponse(); b = r.read()
            res["poison" if b"POISON" in b else str(r.status)] += 1
        except Exception as e:
            res[type(e).__name__] += 1
            c = http.client.HTTPConnection("127.0.0.1", 19200, timeout=5)
ts = [threading.Thread(target=worker) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print(res)
