-- wrk script for POST /sprockets (API and baseline alike): the same valid sprocket every time,
-- so each request creates one more.
wrk.method = "POST"
wrk.body = '{"teeth": 12, "pitch_diameter": 12.0, "outside_diameter": 13.5, "pitch": 1.0}'
wrk.headers["Content-Type"] = "application/json"
