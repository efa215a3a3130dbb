-- A patient's active goals.
function request()
  local path = "/fhir/Goal?patient=Patient/" .. pick(data.patients) .. "&lifecycle-status=active"
  return wrk.format("GET", path, headers)
end
