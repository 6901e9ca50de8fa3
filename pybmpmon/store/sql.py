"""The SQL statements of the writer, built once at import.

The schema itself lives in migrations/; this module holds what the writer runs
per batch.  Route rows arrive by COPY in per-connection temporary tables
(``stage`` for the routes, ``stage_attrs`` for attribute sets not stored
yet), then go to route_attrs, route_history and route_current with set-based
statements.
"""

# Per-route fields kept in route_current when a withdrawal arrives (the
# attribute set itself is named by attr_hash).
KEPT_ON_WITHDRAWAL = ("attr_hash", "labels")
EVPN_COLUMNS = ("evpn_route_type", "evpn_esi", "evpn_ethernet_tag", "evpn_mac", "evpn_ip",
                "evpn_gateway")
# route_attrs' columns after attr_hash, in stage_attrs line order.
ATTRIBUTE_COLUMNS = (
    "next_hop", "origin", "as_path", "origin_as", "med", "local_pref", "communities",
    "large_communities", "ext_communities", "atomic_aggregate", "aggregator",
    "originator_id", "cluster_list",
)

CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS stage (
    gen smallint NOT NULL,
    time double precision NOT NULL,
    received double precision NOT NULL,
    sref smallint NOT NULL,
    nlri text NOT NULL,
    prefix cidr,
    path_id bigint NOT NULL,
    rd text,
    is_withdrawn boolean NOT NULL,
    attr_hash bigint,
    labels integer[],
    evpn_route_type smallint,
    evpn_esi text,
    evpn_ethernet_tag bigint,
    evpn_mac text,
    evpn_ip inet,
    evpn_gateway inet
)
"""

# route_attrs' own columns; first_seen takes its default.
CREATE_STAGE_ATTRS = ("CREATE TEMP TABLE IF NOT EXISTS stage_attrs "
                      "(LIKE route_attrs INCLUDING DEFAULTS)")

# The scopes of the routes in the stage: sref is what the lines carry.
CREATE_STAGE_SCOPES = """
CREATE TEMP TABLE IF NOT EXISTS stage_scopes (
    sref smallint PRIMARY KEY,
    scope_id integer NOT NULL,
    epoch integer NOT NULL,
    peer_asn bigint
)
"""

COPY_STAGE = "COPY stage FROM STDIN"
COPY_STAGE_ATTRS = ("COPY stage_attrs (attr_hash, " + ", ".join(ATTRIBUTE_COLUMNS)
                    + ") FROM STDIN")
TRUNCATE_STAGE = "TRUNCATE stage, stage_scopes, stage_attrs"
TRUNCATE_SEGMENT_STAGE = "TRUNCATE stage, stage_scopes"  # stage_attrs gathers the batch's sets

FILL_STAGE_SCOPES = (
    "INSERT INTO stage_scopes SELECT v.sref, c.scope_id, c.epoch, v.peer_asn "
    "FROM (VALUES %s) AS v(sref, router_ip, peer_ip, peer_rd, rib, afi_safi, peer_asn) "
    "JOIN route_scopes c ON c.router_ip = v.router_ip AND c.peer_ip = v.peer_ip "
    "AND c.peer_rd = v.peer_rd AND c.rib = v.rib AND c.afi_safi = v.afi_safi"
)
FILL_STAGE_SCOPES_TEMPLATE = "(%s::smallint, %s::inet, %s::inet, %s, %s, %s, %s::bigint)"

# Attribute sets this batch may be the first to use; a set already stored
# has its last_sent refreshed (at most every ten minutes: see PRUNE_ATTRS).
STORE_ATTRS = (
    "INSERT INTO route_attrs (attr_hash, " + ", ".join(ATTRIBUTE_COLUMNS) + ") "
    "SELECT DISTINCT ON (attr_hash) attr_hash, " + ", ".join(ATTRIBUTE_COLUMNS)
    + " FROM stage_attrs ON CONFLICT (attr_hash) DO UPDATE SET last_sent = now() "
    "WHERE route_attrs.last_sent < now() - interval '10 minutes'"
)

# Attribute sets nobody uses any more: no route_current row names them, and
# they were last sent before %(before)s, which the caller puts far enough
# back that every history row naming them is past retention, and no writer
# still counts them as stored (a writer forgets after an hour, see
# rows.BatchBuilder).  EXCEPT: one pass over route_current, whatever the
# number of candidates.
PRUNE_ATTRS = (
    "WITH unused AS (SELECT attr_hash FROM route_attrs WHERE last_sent < to_timestamp(%(before)s) "
    "EXCEPT SELECT attr_hash FROM route_current WHERE attr_hash IS NOT NULL) "
    "DELETE FROM route_attrs a USING unused u WHERE a.attr_hash = u.attr_hash"
)

# The stage's nlri is the route's text key (for unicast, the prefix as the
# decoder prints it); prefix is that prefix as cidr (the decoder clears host
# bits, so it is valid; a bad one fails the COPY and is isolated by the writer).
_ROUTE_COLUMNS = ("rd", "is_withdrawn", "attr_hash", "labels") + EVPN_COLUMNS

# After FILL_STAGE_SCOPES, in the same round trip: a temporary table is
# never analyzed by autovacuum, and unanalyzed it looks like thousands of
# rows to the planner, which then hashed the whole stage (its generation
# filter looks selective) to join a handful of scopes: +0.5 us a route in
# the route_current merge.  Analyzing a few rows costs ~0.1 ms a segment,
# plus a few catalog rows (pg_class, pg_statistic) that autovacuum reclaims.
ANALYZE_STAGE_SCOPES = "ANALYZE stage_scopes"

INSERT_HISTORY = (
    "INSERT INTO route_history (time, received_at, scope_id, peer_asn, nlri, prefix, path_id, "
    + ", ".join(_ROUTE_COLUMNS) + ") "
    "SELECT to_timestamp(s.time), to_timestamp(s.received), c.scope_id, c.peer_asn, s.nlri, "
    "s.prefix, s.path_id, "
    + ", ".join(f"s.{c}" for c in _ROUTE_COLUMNS)
    + " FROM stage s JOIN stage_scopes c ON c.sref = s.sref"
)

ENSURE_SCOPES = (
    "INSERT INTO route_scopes (router_ip, peer_ip, peer_rd, rib, afi_safi) "
    "VALUES %s ON CONFLICT DO NOTHING"
)


def _kept_on_withdrawal(column: str) -> str:
    return (f"{column} = CASE WHEN EXCLUDED.is_withdrawn THEN route_current.{column} "
            f"ELSE EXCLUDED.{column} END")


# Keys new to route_current (a table load): INSERT_STATE below, the plain
# insert, run in a savepoint by Store._merge (speculative insertion costs
# ~4 us a route, a third of the merge).  A key that exists fails it with a
# unique violation on route_current_pkey; the savepoint is rolled back and
# UPSERT_STATE runs.
FRESH_SAVEPOINT = "SAVEPOINT fresh_keys"
FRESH_RELEASE = "RELEASE SAVEPOINT fresh_keys"
FRESH_ROLLBACK = "ROLLBACK TO SAVEPOINT fresh_keys"
STATE_KEY = "route_current_pkey"

# One statement per generation (see rows.py): each key occurs once in it, so
# ON CONFLICT sees the previous state, including what the earlier generation
# of the same batch wrote.  (An UPDATE of the existing keys followed by a
# plain INSERT of the others was measured too: no faster on a first load,
# slower on a reload, and at the mercy of the planner's guess about the
# stage.)
#   - a withdrawal keeps the latest attributes, sets is_withdrawn;
#   - last_change moves when the withdrawn flag flips or, for an
#     announcement, when the attributes differ;
#   - change_count counts UPDATE-driven changes (see the migration);
#   - epoch: heard in the scope's current epoch, so no longer stale.
INSERT_STATE = (
    "INSERT INTO route_current (scope_id, nlri, path_id, peer_asn, prefix, epoch, "
    + ", ".join(_ROUTE_COLUMNS)
    + ", first_seen, last_seen, last_change, learn_count, withdraw_count) "
    "SELECT c.scope_id, s.nlri, s.path_id, c.peer_asn, s.prefix, c.epoch, "
    + ", ".join(f"s.{c}" for c in _ROUTE_COLUMNS)
    + ", to_timestamp(s.time), to_timestamp(s.time), to_timestamp(s.time), "
    "(NOT s.is_withdrawn)::int, s.is_withdrawn::int "
    "FROM stage s JOIN stage_scopes c ON c.sref = s.sref "
    "WHERE s.gen = %s"
)
UPSERT_STATE = (
    INSERT_STATE + " "
    "ON CONFLICT (scope_id, nlri, path_id) DO UPDATE SET "
    "peer_asn = EXCLUDED.peer_asn, "
    "is_withdrawn = EXCLUDED.is_withdrawn, "
    "epoch = EXCLUDED.epoch, "
    "cause = NULL, "
    + ", ".join(_kept_on_withdrawal(c) for c in KEPT_ON_WITHDRAWAL)
    + ", "
    + ", ".join(f"{c} = coalesce(EXCLUDED.{c}, route_current.{c})" for c in EVPN_COLUMNS)
    + ", last_seen = EXCLUDED.last_seen, "
    "last_change = CASE WHEN route_current.is_withdrawn <> EXCLUDED.is_withdrawn "
    "OR (NOT EXCLUDED.is_withdrawn "
    "AND route_current.attr_hash IS DISTINCT FROM EXCLUDED.attr_hash) "
    "THEN EXCLUDED.last_seen ELSE route_current.last_change END, "
    "learn_count = route_current.learn_count + EXCLUDED.learn_count, "
    "withdraw_count = route_current.withdraw_count + EXCLUDED.withdraw_count, "
    "change_count = route_current.change_count + CASE "
    "WHEN EXCLUDED.is_withdrawn THEN (NOT route_current.is_withdrawn)::int "
    "ELSE ((route_current.is_withdrawn AND route_current.cause IS NULL) "
    "OR route_current.attr_hash IS DISTINCT FROM EXCLUDED.attr_hash)::int END"
)

# Peers that send routes without a Peer Up (Loc-RIB instances, or a station
# started while the router's sessions were already up).
TOUCH_PEERS = (
    "INSERT INTO bgp_peers (router_ip, peer_type, peer_rd, peer_ip, peer_asn, peer_bgp_id, "
    "state, first_seen, last_seen) VALUES %s "
    "ON CONFLICT (router_ip, peer_type, peer_rd, peer_ip) DO UPDATE SET "
    "last_seen = greatest(bgp_peers.last_seen, EXCLUDED.last_seen), "
    "peer_asn = coalesce(bgp_peers.peer_asn, EXCLUDED.peer_asn), "
    "peer_bgp_id = coalesce(bgp_peers.peer_bgp_id, EXCLUDED.peer_bgp_id)"
)
TOUCH_PEERS_TEMPLATE = "(%s, %s, %s, %s, %s, %s, 'up', to_timestamp(%s), to_timestamp(%s))"

TOUCH_ROUTERS = (
    "INSERT INTO routers (router_ip, first_seen, last_seen) VALUES %s "
    "ON CONFLICT (router_ip) DO UPDATE SET "
    "last_seen = greatest(routers.last_seen, EXCLUDED.last_seen)"
)
TOUCH_ROUTERS_TEMPLATE = "(%s, to_timestamp(%s), to_timestamp(%s))"

ROUTER_CONNECTED = (
    "INSERT INTO routers (router_ip, first_seen, last_seen, connected, last_connected) "
    "VALUES (%(router_ip)s, to_timestamp(%(t)s), to_timestamp(%(t)s), true, to_timestamp(%(t)s)) "
    "ON CONFLICT (router_ip) DO UPDATE SET connected = true, "
    "last_connected = EXCLUDED.last_connected, "
    "last_seen = greatest(routers.last_seen, EXCLUDED.last_seen)"
)

ROUTER_DISCONNECTED = (
    "UPDATE routers SET connected = false, last_disconnected = to_timestamp(%(t)s), "
    "last_seen = greatest(last_seen, to_timestamp(%(t)s)) WHERE router_ip = %(router_ip)s"
)

# The router's BMP session ended: its present routes become stale.  The
# scopes move to a new epoch (routes heard before it are stale, see the
# route_state view), and are flagged so that End-of-RIB knows a sweep is due.
# Cost: one row per scope, however many routes.
MARK_STALE = (
    "UPDATE route_scopes SET epoch = epoch + 1, has_stale = true "
    "WHERE router_ip = %(router_ip)s"
)

# At start: routers a previous process left marked connected.
CONNECTED_ROUTERS = "SELECT host(router_ip) FROM routers WHERE connected"

_IMPLIED_HISTORY = (
    "h AS (INSERT INTO route_history (time, received_at, scope_id, peer_asn, nlri, prefix, "
    "path_id, rd, is_withdrawn, cause) "
    "SELECT to_timestamp(%(t)s), to_timestamp(%(received)s), scope_id, peer_asn, nlri, "
    "prefix, path_id, rd, true, cause "
    "FROM w RETURNING 1) "
    "SELECT count(*) FROM h"
)

_WITHDRAWN = ("RETURNING r.scope_id, r.peer_asn, r.nlri, r.prefix, r.path_id, r.rd, r.cause), ")

# End-of-RIB after a reconnect: what is still stale in that scope (heard in an
# earlier epoch) was not re-announced, so it is gone.
SWEEP_STALE = (
    "WITH sc AS (UPDATE route_scopes SET has_stale = false "
    "WHERE router_ip = %(router_ip)s AND peer_ip = %(peer_ip)s AND peer_rd = %(peer_rd)s "
    "AND rib = %(rib)s AND afi_safi = %(afi_safi)s AND has_stale RETURNING scope_id, epoch), "
    "w AS (UPDATE route_current r SET is_withdrawn = true, cause = 'stale_sweep', "
    "withdraw_count = r.withdraw_count + 1, last_change = to_timestamp(%(t)s) "
    "FROM sc WHERE r.scope_id = sc.scope_id AND r.epoch < sc.epoch AND NOT r.is_withdrawn "
    + _WITHDRAWN + _IMPLIED_HISTORY
)

# BMP Peer Down: every present route of the peer, all RIB views, in one go.
WITHDRAW_PEER = (
    "WITH sc AS (SELECT scope_id FROM route_scopes WHERE router_ip = %(router_ip)s "
    "AND peer_ip = %(peer_ip)s AND peer_rd = %(peer_rd)s), "
    "w AS (UPDATE route_current r SET is_withdrawn = true, cause = 'peer_down', "
    "withdraw_count = r.withdraw_count + 1, last_change = to_timestamp(%(t)s) "
    "FROM sc WHERE r.scope_id = sc.scope_id AND NOT r.is_withdrawn "
    + _WITHDRAWN + _IMPLIED_HISTORY
)

PEER_UP = (
    "INSERT INTO bgp_peers (router_ip, peer_type, peer_rd, peer_ip, peer_asn, peer_bgp_id, "
    "state, local_ip, local_port, remote_port, local_asn, local_bgp_id, hold_time, "
    "four_octet_as, families, add_path, capabilities, description, info, first_seen, "
    "last_seen, last_up) VALUES (%(router_ip)s, %(peer_type)s, %(peer_rd)s, %(peer_ip)s, "
    "%(peer_asn)s, %(peer_bgp_id)s, 'up', %(local_ip)s, %(local_port)s, %(remote_port)s, "
    "%(local_asn)s, %(local_bgp_id)s, %(hold_time)s, %(four_octet_as)s, %(families)s, "
    "%(add_path)s, %(capabilities)s, %(description)s, %(info)s, to_timestamp(%(t)s), "
    "to_timestamp(%(t)s), to_timestamp(%(t)s)) "
    "ON CONFLICT (router_ip, peer_type, peer_rd, peer_ip) DO UPDATE SET "
    "peer_asn = EXCLUDED.peer_asn, peer_bgp_id = EXCLUDED.peer_bgp_id, state = 'up', "
    "local_ip = EXCLUDED.local_ip, local_port = EXCLUDED.local_port, "
    "remote_port = EXCLUDED.remote_port, local_asn = EXCLUDED.local_asn, "
    "local_bgp_id = EXCLUDED.local_bgp_id, hold_time = EXCLUDED.hold_time, "
    "four_octet_as = EXCLUDED.four_octet_as, families = EXCLUDED.families, "
    "add_path = EXCLUDED.add_path, capabilities = EXCLUDED.capabilities, "
    "description = EXCLUDED.description, info = EXCLUDED.info, "
    "last_seen = greatest(bgp_peers.last_seen, EXCLUDED.last_seen), last_up = EXCLUDED.last_up"
)

PEER_DOWN = (
    "INSERT INTO bgp_peers (router_ip, peer_type, peer_rd, peer_ip, peer_asn, peer_bgp_id, "
    "state, first_seen, last_seen, last_down, last_down_reason, last_down_code) VALUES "
    "(%(router_ip)s, %(peer_type)s, %(peer_rd)s, %(peer_ip)s, %(peer_asn)s, %(peer_bgp_id)s, "
    "'down', to_timestamp(%(t)s), to_timestamp(%(t)s), to_timestamp(%(t)s), %(reason_text)s, "
    "%(reason_code)s) "
    "ON CONFLICT (router_ip, peer_type, peer_rd, peer_ip) DO UPDATE SET state = 'down', "
    "last_seen = greatest(bgp_peers.last_seen, EXCLUDED.last_seen), "
    "last_down = EXCLUDED.last_down, last_down_reason = EXCLUDED.last_down_reason, "
    "last_down_code = EXCLUDED.last_down_code"
)

PEER_EVENT = (
    "INSERT INTO peer_events (time, received_at, router_ip, peer_type, peer_rd, peer_ip, "
    "peer_asn, event, reason_code, details) VALUES (to_timestamp(%(t)s), "
    "to_timestamp(%(received)s), %(router_ip)s, %(peer_type)s, %(peer_rd)s, %(peer_ip)s, "
    "%(peer_asn)s, %(event)s, %(reason_code)s, %(details)s)"
)

STATS = (
    "INSERT INTO stats_reports (time, router_ip, peer_type, peer_rd, peer_ip, peer_asn, "
    "stat_type, stat_name, afi_safi, value, raw) VALUES %s"
)
STATS_TEMPLATE = "(to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"

INITIATION = (
    "INSERT INTO routers (router_ip, sys_name, sys_descr, info, first_seen, last_seen) "
    "VALUES (%(router_ip)s, %(sys_name)s, %(sys_descr)s, %(info)s, to_timestamp(%(t)s), "
    "to_timestamp(%(t)s)) ON CONFLICT (router_ip) DO UPDATE SET "
    "sys_name = coalesce(EXCLUDED.sys_name, routers.sys_name), "
    "sys_descr = coalesce(EXCLUDED.sys_descr, routers.sys_descr), "
    "info = coalesce(EXCLUDED.info, routers.info), "
    "last_seen = greatest(routers.last_seen, EXCLUDED.last_seen)"
)

TERMINATION = (
    "UPDATE routers SET termination_reason = %(reason)s, termination_info = %(text)s, "
    "last_seen = greatest(last_seen, to_timestamp(%(t)s)) WHERE router_ip = %(router_ip)s"
)

DECODE_FAILURE = (
    "INSERT INTO decode_failures (time, router_ip, peer_ip, peer_asn, error_type, error, "
    "error_offset, raw_length, raw) VALUES (to_timestamp(%(t)s), %(router_ip)s, %(peer_ip)s, "
    "%(peer_asn)s, %(error_type)s, %(error)s, %(error_offset)s, %(raw_length)s, %(raw)s)"
)

CLAIM_BATCH = "INSERT INTO writer_batches (batch_id) VALUES (%s) ON CONFLICT DO NOTHING"
PRUNE_BATCHES = "DELETE FROM writer_batches WHERE committed_at < now() - interval '1 day'"

# Native partitions of route_history (absent with TimescaleDB).
ROUTE_HISTORY_KIND = (
    "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('route_history')"
)
LIST_PARTITIONS = (
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "WHERE i.inhparent = to_regclass('route_history')"
)
PARTITION_LOCK = "SELECT pg_advisory_xact_lock(%s)"
