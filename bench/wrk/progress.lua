-- A plan's progress (native API) of a plan holding a course of 40 scores.
function on_init()
  headers["Accept"] = "application/json"
end

function request()
  return wrk.format("GET", "/api/v1/care-plans/" .. pick(data.scored) .. "/progress", headers)
end
