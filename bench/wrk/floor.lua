-- The floor: one stored JSON row by primary key from a minimal Flask app.
function request()
  return wrk.format("GET", "/row/" .. pick(data.episodes), headers)
end
