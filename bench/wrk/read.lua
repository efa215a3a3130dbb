-- FHIR read of an episode CarePlan by id.
function request()
  return wrk.format("GET", "/fhir/CarePlan/" .. pick(data.episodes), headers)
end
