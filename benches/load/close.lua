-- wrk script: every request asks the server to close the connection after
-- answering, so each request opens a new connection (with TLS, a full
-- handshake: wrk does not resume sessions). Prints stats.lua's summary line.
wrk.headers["Connection"] = "close"
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "stats.lua")
