-- wrk script for the 64 KiB POST workload of bench/run.sh:
-- every request is POST /upload with a 65536-byte body.
wrk.method = "POST"
wrk.path = "/upload"
wrk.body = string.rep("a", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
