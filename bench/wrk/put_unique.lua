-- wrk script: PUT one small object per request, each under a new name.
-- Arguments after "--": repository path (/v1/repos/NAME), object kind, body file,
-- X-Content-Hash value of the body (sha256=HEX). The token comes from BACKVAULT_TOKEN.
-- bench/load_test.py runs it; see bench/README.md.

local next_thread_id = 0

function setup(thread)
  thread:set("thread_id", next_thread_id)
  next_thread_id = next_thread_id + 1
end

function init(args)
  object_path = args[1] .. "/" .. args[2] .. "/"
  local file = assert(io.open(args[3], "rb"))
  body = file:read("*a")
  file:close()
  headers = {
    ["Authorization"] = "Bearer " .. assert(os.getenv("BACKVAULT_TOKEN"),
                                            "BACKVAULT_TOKEN is not set"),
    ["X-Content-Hash"] = args[4],
    ["Content-Type"] = "application/octet-stream",
  }
  counter = 0
end

function request()
  counter = counter + 1
  -- The server accepts 1 to 128 lowercase hex digits: 2 for the thread, 14 for the count.
  local name = string.format("%02x%014x", thread_id, counter)
  return wrk.format("PUT", object_path .. name, headers, body)
end
