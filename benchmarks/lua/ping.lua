-- GET the URL (a bare route): the HTTP stack's ceiling with the same wrk settings.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")
done = report
