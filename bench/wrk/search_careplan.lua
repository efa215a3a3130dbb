-- A patient's active plans with their goals.
function request()
  local path = "/fhir/CarePlan?patient=Patient/" .. pick(data.patients) ..
    "&status=active&_include=CarePlan:goal"
  return wrk.format("GET", path, headers)
end
