-- POST {"ticket_id": <random id>} to the URL's path, the id drawn per request from a file of
-- ids (one per line): `wrk ... -s ids.lua http://127.0.0.1:PORT/fn/bench.touch -- ids.txt`.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

local ids = {}
local headers = {["Content-Type"] = "application/json"}

function init(args)
   for line in io.lines(args[1]) do
      if #line > 0 then ids[#ids + 1] = line end
   end
   assert(#ids > 0, "no ids in " .. tostring(args[1]))
   -- distinct streams per wrk thread
   math.randomseed(os.time() + tonumber(tostring(ids):match("0x(%x+)") or "0", 16) % 100000)
end

function request()
   local body = '{"ticket_id":"' .. ids[math.random(#ids)] .. '"}'
   return wrk.format("POST", nil, headers, body)
end

done = report
