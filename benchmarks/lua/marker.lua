-- Continuous load for bench_reload: POST {} to the URL's path on every connection, pausing
-- `args[1]` ms (default 2) between a connection's requests; reports failures via done().
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

local pause = 2
local headers = {["Content-Type"] = "application/json"}

function init(args)
   if args[1] then pause = tonumber(args[1]) end
end

function request()
   return wrk.format("POST", nil, headers, "{}")
end

function delay()
   return pause
end

done = report
