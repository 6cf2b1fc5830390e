-- wrk script for POST /factories/{id}/chart_data (API and baseline alike): the same point every time,
-- at 1600002000 (a whole hour); from the second request on, each one rewrites a point already there.
wrk.method = "POST"
wrk.body = '{"time":[1600002000],"sprocket_production_actual":[25],"sprocket_production_goal":[30]}'
wrk.headers["Content-Type"] = "application/json"
