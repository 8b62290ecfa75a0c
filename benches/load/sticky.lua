-- wrk script for the sticky split: every request carries a `sessionid`
-- cookie taken in turn from a fixed set of users (default 10,000; pass
-- another count after `--`), so the proxy hashes a different user each time.
-- Prints the same summary line as stats.lua.
local requests_by_user = {}
local users = 10000
local next_user = 0
local threads = 0

-- Runs in the main state once per thread: threads start at different users.
setup = function(thread)
   thread:set("first_user", threads * 4999)
   threads = threads + 1
end

init = function(args)
   users = tonumber(args[1]) or users
   for i = 1, users do
      requests_by_user[i] = wrk.format(nil, nil, { ["Cookie"] = string.format("sessionid=u%08d", i) })
   end
   next_user = (first_user or 0) % users
end

request = function()
   next_user = next_user % users + 1
   return requests_by_user[next_user]
end

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRKSTATS requests=%d duration_us=%d socket_errors=%d non2xx=%d p50=%d p99=%d p999=%d\n",
      summary.requests, summary.duration,
      e.connect + e.read + e.write + e.timeout, e.status,
      latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
