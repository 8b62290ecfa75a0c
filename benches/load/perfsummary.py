#!/usr/bin/env python3
"""perfsummary.py: where a perf profile's samples went, grouped into a Markdown summary.

  perfsummary.py PERF_SCRIPT_OUTPUT

Reads the output of `perf script -F comm,tid,ip,sym,dso --no-inline` over a
profile recorded with call graphs (profile.sh records cutover under wrk)
and prints Markdown tables, as shares of all samples: kernel time by the
system call it was spent under; user time by the kind of work of the leaf
frame (allocation, copying, hashing, formatting, locking, HTTP parsing,
...); inclusive shares of chosen frames (a frame anywhere on the stack);
and the code that asked for the allocations and the copies.
"""

import re

from benchlib import arg_parser, run

# Kernel samples: the system call they were made under (first match wins).
SYSCALLS = [
    ("writev", "send: writev/write/sendmsg"),
    ("sys_write", "send: writev/write/sendmsg"),
    ("sendmsg", "send: writev/write/sendmsg"),
    ("sendto", "send: writev/write/sendmsg"),
    ("recvfrom", "receive: read/recv"),
    ("recvmsg", "receive: read/recv"),
    ("sys_read", "receive: read/recv"),
    ("ksys_read", "receive: read/recv"),
    ("epoll_wait", "epoll_wait"),
    ("epoll_pwait", "epoll_wait"),
    ("epoll_ctl", "epoll_ctl"),
    ("futex", "futex (wake / park a thread)"),
    ("sched_yield", "sched_yield"),
    ("accept", "accept/connect/close"),
    ("connect", "accept/connect/close"),
    ("sys_close", "accept/connect/close"),
]

# User samples: the kind of work of the leaf frame (first match wins).
USER_KINDS = [
    # glibc's malloc, Rust's allocation shims, and jemalloc as cutover links
    # it (tikv-jemalloc-sys prefixes its symbols with `_rjem_`).
    (r"^(__libc_)?(malloc|free|cfree|calloc|realloc)(@.*)?$|^_int_(malloc|free|realloc)|unlink_chunk|"
     r"malloc_consolidate|tcache|^(__rustc::)?__rust_(alloc|dealloc|realloc)|raw_vec|alloc::alloc::|"
     r"^_rjem_|tikv_jemallocator|^do_rallocx$",
     "allocation (malloc/free)"),
    (r"^__mem(move|cpy|set|cmp)|^memcpy|^memmove|bytes::bytes_mut::BytesMut::(extend|put)",
     "copying (memcpy/memmove)"),
    (r"Hasher|hash_one|hash_elem_using|siphash|fnv|core::hash::", "hashing"),
    (r"core::fmt|alloc::fmt|to_string|Display>::fmt|Debug>::fmt", "formatting (core::fmt)"),
    (r"pthread_mutex|lll_lock|parking_lot|std::sync::.*(mutex|Mutex|rwlock|RwLock|once)|"
     r"futex|Notify|semaphore|AtomicWaker", "locking / thread sync"),
    (r"^prometheus::", "metrics (prometheus)"),
    (r"^httparse::|h1::role::Server as .*::parse|h1::role::Client as .*::parse|"
     r"h1::role::.*encode|h1::role::", "HTTP/1 parse + encode (hyper, httparse)"),
    (r"^<?http::header::|<http::header::|http::header::map", "header map operations (http)"),
    (r"^<?cutover::|<cutover::", "cutover's own code"),
    (r"^__GI___(writev|read|recv)|^__libc_(recv|read|write|send)|^__GI___pthread_(en|dis)able_asynccancel|"
     r"^(epoll_wait|syscall)$", "system call wrappers (libc)"),
    (r"^bytes::|Arc<T,A>::drop_slow|drop_in_place<http::uri", "reference counting (Bytes, Arc)"),
    (r"hyper_util::client::legacy|hyper::client::", "upstream client (hyper-util legacy)"),
    (r"tokio::|mio::|tokio_util::", "tokio runtime + I/O driver"),
    (r"hyper|want::|futures_", "hyper other (dispatch, bodies)"),
    (r"^clock_gettime|vdso|^__vdso", "clock reads"),
]

# Inclusive shares: samples whose stack holds a frame containing the text.
FRAMES = [
    ("cutover::proxy::Proxy::serve", "Proxy::serve (whole request path in cutover)"),
    ("hyper_util::client::legacy::client::Client<C,B>::send_request",
     "upstream client send_request (pool checkout + hand-off)"),
    ("hyper::client::conn::http1", "upstream connection task (hyper client)"),
    ("hyper_util::client::legacy::pool", "connection pool (hyper-util legacy)"),
    ("<cutover::proxy::body::Exchange as core::ops::drop::Drop>::drop",
     "Exchange::drop (metrics + access log)"),
    ("prometheus::", "prometheus"),
    ("cutover::proxy::headers::", "cutover::proxy::headers (rewrites)"),
    ("cutover::routing::", "cutover::routing (matching, normalisation)"),
    ("h1::role::Server as hyper::proto::h1::Http1Transaction>::parse",
     "request head parsing (hyper server)"),
    ("h1::role::Server as hyper::proto::h1::Http1Transaction>::encode",
     "response head encoding (hyper server)"),
    ("h1::role::Client as hyper::proto::h1::Http1Transaction>::encode",
     "request head encoding (hyper client)"),
    ("h1::role::Client as hyper::proto::h1::Http1Transaction>::parse",
     "response head parsing (hyper client)"),
    ("tokio::runtime::task::raw::schedule", "task scheduling (wakes)"),
    ("tokio::runtime::scheduler::multi_thread::park", "worker park / unpark"),
]


# Frames skipped when looking for who asked for an allocation or a copy.
GLUE = re.compile(
    r"^(__rust_|__rustc::|_rjem_|do_rallocx|<?tikv_jemallocator|alloc::|<alloc::|core::ptr::|<core::|core::|hashbrown::raw|"
    r"<?bytes::bytes_mut::BytesMut(>::| as )?(reserve|extend|put|with_capacity|from)|"
    r"<?alloc::vec|<?alloc::raw_vec|std::alloc)"
)


def first_caller(frames):
    """The first frame above the leaf that is neither libc nor allocation glue."""
    for sym, dso in frames[1:]:
        if "libc" in dso or "kernel" in dso or GLUE.search(sym):
            continue
        return sym[:110]
    return "?"


def perf_samples(path):
    """Yields each sample's frames as (symbol, dso), leaf first."""
    frames = []
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if frames:
                    yield frames
                frames = []
                continue
            if not line[0].isspace():
                continue  # the sample header: comm tid
            parts = line.strip().split(" ", 1)
            if len(parts) < 2:
                continue
            rest = parts[1]
            dso = ""
            if rest.endswith(")") and " (" in rest:
                rest, dso = rest.rsplit(" (", 1)
                dso = dso[:-1]
            sym = re.sub(r"\+0x[0-9a-f]+$", "", rest)
            frames.append((sym, dso))
    if frames:
        yield frames


def perfsummary(path):
    total = 0
    kernel = {}
    user = {}
    inclusive = {label: 0 for _, label in FRAMES}
    alloc_callers = {}
    copy_callers = {}
    compiled = [(re.compile(p), label) for p, label in USER_KINDS]
    for frames in perf_samples(path):
        total += 1
        leaf_sym, leaf_dso = frames[0]
        if "kernel" in leaf_dso:
            label = "kernel, no system call (interrupts, scheduler)"
            for sym, dso in frames:
                if "kernel" not in dso:
                    break
                hit = next((lab for key, lab in SYSCALLS if key in sym), None)
                if hit:
                    label = hit
                    break
            kernel[label] = kernel.get(label, 0) + 1
        else:
            label = next((lab for rx, lab in compiled if rx.search(leaf_sym)), None)
            if label is None:
                label = "other user code" if leaf_sym != "[unknown]" else "unknown (no symbol)"
            user[label] = user.get(label, 0) + 1
            if label.startswith("allocation"):
                who = first_caller(frames)
                alloc_callers[who] = alloc_callers.get(who, 0) + 1
            elif label.startswith("copying"):
                who = first_caller(frames)
                copy_callers[who] = copy_callers.get(who, 0) + 1
        seen = set()
        for sym, _ in frames:
            for key, lab in FRAMES:
                if lab not in seen and key in sym:
                    seen.add(lab)
        for lab in seen:
            inclusive[lab] += 1
    if not total:
        print("no samples")
        return

    def table(title, counts, base):
        print("| %s | share of all samples |" % title)
        print("| --- | ---: |")
        for label, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print("| %s | %.1f%% |" % (label, 100.0 * n / base))
        print()

    k, u = sum(kernel.values()), sum(user.values())
    print("%d samples: kernel %.1f%%, user space %.1f%%" % (total, 100.0 * k / total, 100.0 * u / total))
    print()
    table("kernel time, by system call", kernel, total)
    table("user time, by kind of work (self time of the leaf frame)", user, total)
    table("inclusive: samples with this frame on the stack", {k: v for k, v in inclusive.items() if v}, total)
    top = lambda d: dict(sorted(d.items(), key=lambda kv: -kv[1])[:8])
    table("allocation samples, by the code that allocated or freed", top(alloc_callers), total)
    table("copy samples (memcpy/memmove), by the code that copied", top(copy_callers), total)


def main(argv):
    parser = arg_parser(__doc__)
    parser.add_argument("perf_script_output")
    args = parser.parse_args(argv)
    perfsummary(args.perf_script_output)


if __name__ == "__main__":
    run(main)
