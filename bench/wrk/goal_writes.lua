-- Conditional create of a Goal (If-None-Exist on a new identifier), then a versioned
-- update of it (If-Match on the ETag the create returned); one connection per thread.
local step, made, goal, etag, target = "create", 0, nil, nil, nil
local mine

function on_init()
  mine = share(data.writable)
end

local function body(id, text)
  local values = {
    EPISODE = target.id, PATIENT = target.patient, AREA = target.area, TEXT = text,
    VALUE = data.run .. "-" .. thread_id .. "-" .. made, ID = id or "",
  }
  return fill(id and data.goal_update or data.goal_create, values)
end

function request()
  if step == "create" then
    made = made + 1
    target = mine[(made - 1) % #mine + 1]
    local condition = "identifier=" .. data.identifier_system .. "|" ..
      data.run .. "-" .. thread_id .. "-" .. made
    return wrk.format("POST", "/fhir/Goal", with({
      ["Content-Type"] = "application/fhir+json", ["If-None-Exist"] = condition,
      ["Prefer"] = "return=minimal"}), body(nil, "Rejoin the Tuesday choir"))
  end
  return wrk.format("PUT", "/fhir/Goal/" .. goal, with({
    ["Content-Type"] = "application/fhir+json", ["If-Match"] = etag,
    ["Prefer"] = "return=minimal"}), body(goal, "Rejoin the Tuesday choir and stay for tea"))
end

function response(status, headers, body)
  if step == "create" and status == 201 then
    goal = string.match(headers["Location"] or "", "Goal/([^/]+)")
    etag = headers["ETag"]
    step = goal and "update" or "create"
  else
    step = "create"
  end
end
