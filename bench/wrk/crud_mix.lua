-- 70 % reads and searches, 30 % writes, on one connection per thread:
-- 35 % read a CarePlan, 10 % read a Goal, 15 % search plans (with goals), 10 % search goals,
-- 12 % conditional create of a Goal, 12 % update (If-Match) of one this thread made,
-- 6 % delete of one this thread made.
local made, owned, pending, target = 0, {}, nil, nil
local mine

function on_init()
  mine = share(data.writable)
end

local function goal_body(id, value, text)
  return fill(id and data.goal_update or data.goal_create, {
    EPISODE = target.id, PATIENT = target.patient, AREA = target.area, TEXT = text,
    VALUE = value, ID = id or ""})
end

local function create()
  made = made + 1
  target = mine[(made - 1) % #mine + 1]
  local value = data.run .. "-mix-" .. thread_id .. "-" .. made
  pending = {kind = "create", value = value, target = target}
  return wrk.format("POST", "/fhir/Goal", with({
    ["Content-Type"] = "application/fhir+json",
    ["If-None-Exist"] = "identifier=" .. data.identifier_system .. "|" .. value,
    ["Prefer"] = "return=minimal"}), goal_body(nil, value, "Call a cousin every week"))
end

function request()
  local roll = math.random(100)
  pending = nil
  if roll <= 35 then
    return wrk.format("GET", "/fhir/CarePlan/" .. pick(data.episodes), headers)
  elseif roll <= 45 then
    return wrk.format("GET", "/fhir/Goal/" .. pick(data.goals), headers)
  elseif roll <= 60 then
    return wrk.format("GET", "/fhir/CarePlan?patient=Patient/" .. pick(data.patients) ..
      "&status=active&_include=CarePlan:goal", headers)
  elseif roll <= 70 then
    return wrk.format("GET", "/fhir/Goal?patient=Patient/" .. pick(data.patients) ..
      "&lifecycle-status=active", headers)
  elseif roll <= 82 or #owned == 0 then
    return create()
  end
  local index = math.random(#owned)
  local goal = owned[index]
  if roll <= 94 then
    target = goal.target
    pending = {kind = "update", index = index}
    return wrk.format("PUT", "/fhir/Goal/" .. goal.id, with({
      ["Content-Type"] = "application/fhir+json", ["If-Match"] = goal.etag,
      ["Prefer"] = "return=minimal"}),
      goal_body(goal.id, goal.value, "Call a cousin every week, and a friend"))
  end
  pending = {kind = "delete", index = index}
  return wrk.format("DELETE", "/fhir/Goal/" .. goal.id, headers)
end

function response(status, headers, body)
  if pending == nil then return end
  if pending.kind == "create" and status == 201 then
    local id = string.match(headers["Location"] or "", "Goal/([^/]+)")
    if id then
      owned[#owned + 1] = {id = id, etag = headers["ETag"], value = pending.value,
        target = pending.target}
    end
  elseif pending.kind == "update" and status == 200 then
    owned[pending.index].etag = headers["ETag"]
  elseif pending.kind == "delete" then
    table.remove(owned, pending.index)
  end
end
