-- A ~200 B chat body; the system prompt starts with one of 64 tags, so that
-- prefix affinity spreads the requests over the replicas as p2c does.
local n = 0
local hdr = {["Content-Type"] = "application/json"}
request = function()
  n = n + 1
  local body = string.format('{"model":"m","messages":[{"role":"system","content":"%02d: You are a careful assistant. Answer in short sentences, cite your sources, never invent facts."},{"role":"user","content":"hello there"}]}', n % 64)
  return wrk.format("POST", "/", hdr, body)
end
