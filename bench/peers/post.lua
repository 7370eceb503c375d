-- wrk script for the plain actix-web baseline: POST /echo with a 200-byte JSON body.
wrk.method = "POST"
wrk.path = "/echo"
wrk.headers["Content-Type"] = "application/json"
local pad = string.rep("x", 200 - string.len('{"t":1234567890123456789,"p":""}'))
wrk.body = '{"t":1234567890123456789,"p":"' .. pad .. '"}'
