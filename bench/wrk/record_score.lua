-- Record a PHQ-9 score (a total imported from elsewhere) on an active plan: the native
-- administrations route.
local n = 0

function on_init()
  headers["Accept"] = "application/json"
end

function request()
  n = n + 1
  local plan = pick(data.writable)
  return wrk.format("POST", "/api/v1/care-plans/" .. plan.id .. "/administrations",
    with({["Content-Type"] = "application/json"}),
    string.format('{"instrument":"phq-9","administered_on":"%s","total":%d}', data.today, n % 28))
end
