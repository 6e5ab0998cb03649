-- Covering indexes for the fleet summary and rollout views: with 10,000
-- devices, GET /fleet and GET /rollouts/{id} scanned the whole devices and
-- rollout_members tables (device rows carry keys and a signed manifest),
-- 15 ms and 9 ms per call on an idle server; with these, ~1 ms each.
CREATE INDEX devices_platform_seen ON devices (platform, last_seen_ms);
CREATE INDEX devices_live ON devices (live_model, live_version);
CREATE INDEX rollout_members_status ON rollout_members (rollout_id, status);
