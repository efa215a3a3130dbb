-- The native API: get a plan, schedule its next session, give homework; one connection
-- per thread, each on plans of its own (a plan takes as many sessions as its contract).
local step, index, plan, number = 3, 0, nil, 0
local mine

function on_init()
  mine = share(data.native)
  headers["Accept"] = "application/json"
end

local function next_plan()
  repeat
    index = index + 1
    plan = mine[(index - 1) % #mine + 1]
  until plan.next <= plan.last or index > 10 * #mine
end

function request()
  step = step % 3 + 1
  if step == 1 then
    next_plan()
    number = plan.next
    plan.next = plan.next + 1
    return wrk.format("GET", "/api/v1/care-plans/" .. plan.id, headers)
  elseif step == 2 then
    return wrk.format("POST", "/api/v1/care-plans/" .. plan.id .. "/sessions",
      with({["Content-Type"] = "application/json"}),
      string.format('{"number":%d,"status":"scheduled","date":"%s"}', number, data.session_day))
  end
  return wrk.format("POST", "/api/v1/care-plans/" .. plan.id .. "/homework",
    with({["Content-Type"] = "application/json"}),
    '{"kind":"reconnect","phase":"middle","description":"Call an old friend this week"}')
end
