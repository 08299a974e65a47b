-- wrk script: GET existing objects, cycling through a list of names.
-- Arguments after "--": repository path (/v1/repos/NAME), object kind, file with one
-- object name per line. The token comes from BACKVAULT_TOKEN.
-- bench/load_test.py runs it; see bench/README.md.

local next_thread_id = 0

function setup(thread)
  thread:set("thread_id", next_thread_id)
  next_thread_id = next_thread_id + 1
end

function init(args)
  object_path = args[1] .. "/" .. args[2] .. "/"
  names = {}
  for line in io.lines(args[3]) do
    if line ~= "" then
      names[#names + 1] = line
    end
  end
  assert(#names > 0, "the name file " .. args[3] .. " lists no objects")
  headers = {
    ["Authorization"] = "Bearer " .. assert(os.getenv("BACKVAULT_TOKEN"),
                                            "BACKVAULT_TOKEN is not set"),
  }
  -- Threads start at different names, so they do not read the same object in step.
  position = (thread_id * 7919) % #names
end

function request()
  position = position % #names + 1
  return wrk.format("GET", object_path .. names[position], headers)
end
